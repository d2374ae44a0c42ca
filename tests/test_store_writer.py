"""One writer per store: a second writer is refused naming the first one's PID, readers are told who is
writing, and a dead writer's lock is gone with it."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gmint.errors import IncompleteStoreError, StoreBusyError
from gmint.features.integrity import REQUIRED_PROVENANCE, verify
from gmint.features.lock import lock_path, writer_pid
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel
from tests.cli_runner import invoke

N = 10
COLUMNS = {"membership": np.zeros(N), "role": np.zeros(N), "label": np.zeros(N), "sample_id": np.arange(N)}
PROVENANCE = {**{key: "x" for key in REQUIRED_PROVENANCE}, "layers": ["a.weight"], "n_rows": N}
FEATURES = np.arange(N * 4, dtype=np.float32).reshape(N, 4)

# A writer in another process: half the rows, then the rest once told to go on (a line on stdin).
WRITER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from gmint.features.store import FeatureStore
    n = 10
    columns = {"membership": np.zeros(n), "role": np.zeros(n), "label": np.zeros(n), "sample_id": np.arange(n)}
    features = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    with FeatureStore.create(sys.argv[1], columns=columns, dims={"a.weight": 4},
                             provenance=json.loads(sys.argv[2])) as store:
        for start in (0, 5):
            store.write(start, {"a.weight": features[start:start + 5]}, loss=np.zeros(5, np.float32),
                        pred=np.zeros(5, np.int64))
            print("written", flush=True)
            sys.stdin.readline()
        store.mark_complete(extract_seconds=0.0)
""")


def write_rest(store: FeatureStore) -> None:
    store.write(5, {"a.weight": FEATURES[5:]}, loss=np.zeros(5, np.float32), pred=np.zeros(5, np.int64))
    store.mark_complete()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A store half written by another process that is still at work."""
    path = tmp_path / "live.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), json.dumps(PROVENANCE)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    yield path, proc
    proc.kill()
    proc.wait()


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go on\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "written"
    proc.stdin.write("go on\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0


def test_a_second_writer_is_refused_naming_the_first(live: tuple[Path, subprocess.Popen[str]],
                                                      audited_digits: tuple[AuditedModel, Path]) -> None:
    path, proc = live
    refused = f"being written by PID {proc.pid}"
    with pytest.raises(StoreBusyError, match=refused):
        FeatureStore.create(path, columns=COLUMNS, dims={"a.weight": 4}, provenance=PROVENANCE, overwrite=True)
    with pytest.raises(StoreBusyError, match=refused):  # a live SWMR writer's file would be salvaged
        FeatureStore.resume(path, PROVENANCE)
    for flag in ("--resume", "--overwrite"):
        code, out = invoke("extract", "--model", audited_digits[1], "--out", path, flag)
        assert code == 1 and out.strip().count("\n") == 0 and refused in out, out
    finish(proc)  # the first writer never noticed
    with FeatureStore.open(path) as store:
        store.require_complete()
        np.testing.assert_array_equal(store.features(), FEATURES)
    assert writer_pid(path) is None and not lock_path(path).exists()


def test_readers_are_told_who_is_writing(live: tuple[Path, subprocess.Popen[str]]) -> None:
    path, proc = live
    assert writer_pid(path) == proc.pid
    with FeatureStore.open(path) as store:
        assert store.writer == proc.pid and store.rows_written == 5
        with pytest.raises(IncompleteStoreError, match=f"being written by PID {proc.pid}; wait") as refused:
            store.require_complete()
        assert "--resume" not in str(refused.value)
    assert verify(path) == [f"incomplete: 5 of {N} rows written (being written by PID {proc.pid})"]
    code, out = invoke("info", path)
    assert code == 0, out
    assert f"being written by PID {proc.pid}" in out and "--resume" not in out
    code, out = invoke("info", "--json", path)
    assert code == 0 and json.loads(out)["writer_pid"] == proc.pid


def test_a_dead_writer_leaves_no_lock(live: tuple[Path, subprocess.Popen[str]]) -> None:
    path, proc = live
    proc.kill()
    proc.wait()
    assert writer_pid(path) is None
    with FeatureStore.resume(path, PROVENANCE) as store:  # salvages the killed SWMR writer's file
        assert store.writer == os.getpid() and store.rows_written == 5
        write_rest(store)
    with FeatureStore.open(path) as store:
        np.testing.assert_array_equal(store.features(), FEATURES)


def test_one_writer_within_a_process_too(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with FeatureStore.create(path, columns=COLUMNS, dims={"a.weight": 4}, provenance=PROVENANCE) as store:
        with pytest.raises(StoreBusyError, match=f"PID {store.writer}"):
            FeatureStore.resume(path, PROVENANCE)
    with FeatureStore.resume(path, PROVENANCE) as store:  # closing released it
        store.write(0, {"a.weight": FEATURES[:5]}, loss=np.zeros(5, np.float32), pred=np.zeros(5, np.int64))
        write_rest(store)


def test_a_reader_asking_who_writes_does_not_keep_a_writer_out(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    FeatureStore.create(path, columns=COLUMNS, dims={"a.weight": 4}, provenance=PROVENANCE).close()
    with open(lock_path(path), "w") as probe:  # what writer_pid does, for longer
        fcntl.flock(probe, fcntl.LOCK_SH)
        threading.Timer(0.1, fcntl.flock, (probe, fcntl.LOCK_UN)).start()
        FeatureStore.resume(path, PROVENANCE).close()
