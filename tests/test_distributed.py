"""torchrun scale-out: two CPU processes (gloo) produce the same store as one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gmint.distributed import shard_bounds, shard_path
from gmint.errors import InputError
from gmint.models.io import AuditedModel
from gmint.store import FeatureStore, verify


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


def test_two_gloo_processes_equal_one(tmp_path: Path, audited_digits: tuple[AuditedModel, Path]) -> None:
    model = audited_digits[1]
    single, joined = tmp_path / "single.h5", tmp_path / "joined" / "features.h5"
    joined.parent.mkdir()
    args = ["--model", model, "--layers", "combined", "--batch-size", "100"]
    proc = gmint(*args, "--out", single)
    assert proc.returncode == 0, proc.stderr
    proc = gmint(*args, "--out", joined, nproc=2)
    assert proc.returncode == 0, proc.stderr
    assert "in 2 shards" in proc.stdout
    for rank in range(2):
        assert shard_path(joined, rank, 2).exists()
    moved = tmp_path / "moved"
    shutil.move(joined.parent, moved)  # the joined store finds its shards beside it, wherever it goes
    joined = moved / "features.h5"
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
