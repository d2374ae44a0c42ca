"""torchrun scale-out: two CPU processes (gloo) produce the same store as one process; a resumed finished
run is left alone, and one failing process stops the others with one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from gmint.errors import InputError, StoreBusyError
from gmint.features.integrity import verify
from gmint.features.lock import WriterLock
from gmint.features.shards import merge_shards, shard_bounds, shard_path
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel

pytestmark = pytest.mark.slow


def gmint(*args: object, nproc: int = 1, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GMINT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                 "--standalone"] if nproc > 1 else [sys.executable])
    return subprocess.run([*launcher, "-m", "gmint_cli", "extract", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_shards_are_whole_batches_covering_every_row() -> None:
    bounds = [shard_bounds(1000, 64, r, 3) for r in range(3)]
    assert bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(lo % 64 == 0 for lo, _ in bounds)
    with pytest.raises(InputError, match="only 2 batches"):
        shard_bounds(100, 64, 0, 3)


def test_joining_takes_the_writer_lock(tmp_path: Path) -> None:
    out = tmp_path / "features.h5"
    with WriterLock(out), pytest.raises(StoreBusyError, match=f"PID {os.getpid()}"):
        merge_shards(out, 2, rows_sha256="", overwrite=True)


ARGS = ["--layers", "combined", "--batch-size", "100"]


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory, audited_digits: tuple[AuditedModel, Path]) -> Path:
    """A store joined from two gloo processes' shards (with the shards beside it)."""
    out = tmp_path_factory.mktemp("joined") / "features.h5"
    proc = gmint("--model", audited_digits[1], *ARGS, "--out", out, nproc=2)
    assert proc.returncode == 0, proc.stderr
    assert "in 2 shards" in proc.stdout
    for rank in range(2):
        assert shard_path(out, rank, 2).exists()
    return out


def test_two_gloo_processes_equal_one(tmp_path: Path, audited_digits: tuple[AuditedModel, Path],
                                      joined: Path) -> None:
    single = tmp_path / "single.h5"
    proc = gmint("--model", audited_digits[1], *ARGS, "--out", single)
    assert proc.returncode == 0, proc.stderr
    moved = tmp_path / "moved"
    shutil.copytree(joined.parent, moved)  # the joined store finds its shards beside it, wherever it goes
    joined = moved / joined.name
    assert verify(joined) == []
    with FeatureStore.open(single) as a, FeatureStore.open(joined) as b:
        b.require_complete()
        assert len(a) == len(b) and a.layers == b.layers
        for column in ("membership", "role", "label", "sample_id", "loss", "pred", "done", "finite"):
            np.testing.assert_array_equal(a.column(column), b.column(column))
        np.testing.assert_array_equal(a.features(), b.features())
        pa, pb = a.provenance, b.provenance
        for key in ("model_fingerprint", "layers", "reduction", "rows_sha256", "n_rows", "split_sha256"):
            assert pa[key] == pb[key]
    with h5py.File(joined) as h5:
        assert h5["membership"].attrs["codes"] == "1 member, 0 external, -1 unknown"


def files(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_resume_of_a_finished_join_leaves_it_as_it_is(audited_digits: tuple[AuditedModel, Path],
                                                      joined: Path) -> None:
    before = files(joined.parent)
    proc = gmint("--model", audited_digits[1], *ARGS, "--out", joined, "--resume", nproc=2)
    assert proc.returncode == 0, proc.stderr
    assert "in 2 shards" in proc.stdout
    assert files(joined.parent) == before  # not rewritten, not even reopened for writing


def test_a_failing_process_stops_every_process_with_one_line(tmp_path: Path, audited_digits: tuple[AuditedModel, Path],
                                                            joined: Path) -> None:
    """Rank 0 cannot join (--out is another file): rank 1 stops with one line too, not a gloo traceback."""
    shutil.copytree(joined.parent, tmp_path / "copy")
    out = tmp_path / "copy" / joined.name
    out.write_bytes(b"someone else's file")
    proc = gmint("--model", audited_digits[1], *ARGS, "--out", out, "--resume", nproc=2)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, proc.stderr
    assert any("exists; pass --overwrite" in e for e in errors)
    assert any("stopped: process 0 of this torchrun failed" in e for e in errors)
    assert "gloo" not in proc.stderr.lower(), proc.stderr
    assert out.read_bytes() == b"someone else's file"
