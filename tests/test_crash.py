"""Crash safety: an extraction killed with SIGKILL at random points resumes to the identical store,
and a store can be read while it is being written, by any number of readers, without disturbing it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pytest

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.errors import IncompleteStoreError, InputError
from gmint.features.extract import extract, split_rows
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel, load_audited

pytestmark = pytest.mark.slow

EXTRACT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from gmint.data.base import DATASETS
    from gmint.data.split import MembershipSplit
    from gmint.features.extract import extract, split_rows
    from gmint.features.settings import ExtractSettings
    from gmint.models.io import load_audited
    model, split, out, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    split = MembershipSplit.load(split)
    print("ready", flush=True)
    extract(load_audited(model), DATASETS.get("digits")(), split_rows(split),
            ExtractSettings(layer_setup="combined", reduction="mean", batch_size=8), out=out, split=split,
            resume=resume)
""")


def run_extract(args: list[str], **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "GMINT_NO_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, "-c", EXTRACT, *args], stdout=subprocess.PIPE, text=True,
                            env=env, **kw)  # type: ignore[call-overload]


def same_store(a: Path, b: Path) -> None:
    with FeatureStore.open(a) as x, FeatureStore.open(b) as y:
        x.require_complete()
        y.require_complete()
        assert x.layers == y.layers
        np.testing.assert_array_equal(x.features(), y.features())
        for column in ("membership", "role", "label", "sample_id", "loss", "pred", "done"):
            np.testing.assert_array_equal(x.column(column), y.column(column))


class CrashSetup(NamedTuple):
    model: Path
    split: Path
    reference: Path
    write_seconds: float  # how long the reference run wrote its store: kills are drawn inside this span


def wait_for_store(out: Path, proc: subprocess.Popen[str]) -> None:
    while not out.exists() and proc.poll() is None:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits_split: MembershipSplit,
          audited_digits: tuple[AuditedModel, Path]) -> CrashSetup:
    work = tmp_path_factory.mktemp("crash")
    split = work / "split.json"
    digits_split.save(split)
    reference = work / "reference.h5"
    proc = run_extract([str(audited_digits[1]), str(split), str(reference), "0"])
    wait_for_store(reference, proc)
    started = time.monotonic()
    assert proc.wait(timeout=300) == 0
    return CrashSetup(audited_digits[1], split, reference, time.monotonic() - started)


def test_sigkill_at_random_points_then_resume_gives_the_same_store(
        tmp_path: Path, setup: CrashSetup, digits: ImageSet) -> None:
    model, split_path, reference, write_seconds = setup
    split = MembershipSplit.load(split_path)
    rng = random.Random(1234)
    interrupted, trial = 0, 0
    while interrupted < 3 and trial < 8:  # several kills landing mid-extraction
        trial += 1
        out = tmp_path / f"killed-{trial}.h5"
        proc = run_extract([str(model), str(split_path), str(out), "0"])
        wait_for_store(out, proc)  # start the clock once the store exists
        time.sleep(rng.uniform(0.0, 0.8 * write_seconds))  # scaled to this machine's speed
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not out.exists():
            continue  # killed before the store was created: nothing to resume
        with FeatureStore.open(out) as store:
            if not store.complete:
                interrupted += 1
                with pytest.raises(IncompleteStoreError, match="finish its extraction"):
                    store.require_complete()
                written = store.rows_written
                assert 0 <= written < len(store)
        if not FeatureStore.open(out).complete:
            extract(load_audited(model), digits, split_rows(split),
                    ExtractSettings(layer_setup="combined", reduction="mean", batch_size=8), out=out, split=split,
                    resume=True)
        same_store(out, reference)
    assert interrupted >= 3, "the kills should mostly land mid-extraction"


def test_store_can_be_read_while_it_is_written(tmp_path: Path, setup: CrashSetup) -> None:
    model, split_path, reference, _ = setup
    out = tmp_path / "live.h5"
    proc = run_extract([str(model), str(split_path), str(out), "0"])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    seen = []
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if out.exists():
            try:
                with FeatureStore.open(out) as store:
                    seen.append((store.rows_written, store.complete))
            except Exception as exc:  # noqa: BLE001 - any failure to read concurrently is the bug under test
                if "unable to open" in str(exc) or "not a readable" in str(exc):
                    time.sleep(0.05)  # the file exists but its superblock is not written yet
                    continue
                raise
        time.sleep(0.05)
    assert proc.wait(timeout=120) == 0
    partial = [rows for rows, complete in seen if not complete]
    assert partial and max(partial) > 0, "a reader saw rows while the writer was still writing"
    assert [r for r, _ in seen] == sorted(r for r, _ in seen)  # progress only grows
    same_store(out, reference)


def test_readers_never_disturb_the_writer(tmp_path: Path, setup: CrashSetup) -> None:
    """gmint's readers and plain h5py ones (SWMR or not, with HDF5's file locking) open and read the store
    in a tight loop; the extraction still finishes, complete and equal to an undisturbed one."""
    model, split_path, reference, _ = setup
    out = tmp_path / "hammered.h5"
    proc = run_extract([str(model), str(split_path), str(out), "0"], stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def gmint_reader() -> None:
        try:
            with FeatureStore.open(out) as store:
                store.features(rows=store.done_mask())
        except InputError:
            pass  # not there yet; gmint's readers fail with one line at worst, never with a traceback

    def h5py_reader(swmr: bool) -> Callable[[], None]:
        def read() -> None:
            try:
                with h5py.File(out, "r", swmr=swmr) as h5:
                    h5["done"][:]
                    dict(h5.attrs)
            except Exception:  # noqa: BLE001 - plain HDF5 readers may be turned away; the writer may not
                pass
        return read

    readers, reads = [gmint_reader, h5py_reader(True), h5py_reader(False)], 0
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        readers[reads % len(readers)]()
        reads += 1
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert reads > 100
    same_store(out, reference)
