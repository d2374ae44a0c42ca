"""`gmint info` into a pipe: --json prints JSON and nothing else; the table keeps every value whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gmint.features.store import FeatureStore


def gmint_info(*args: object) -> subprocess.CompletedProcess[str]:
    """`gmint info ARGS` as a program reading its output would run it: stdout is a pipe, COLUMNS unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "gmint_cli", "info", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_json_is_the_whole_output(digits_store: Path) -> None:
    proc = gmint_info("--json", digits_store)
    assert proc.returncode == 0, proc.stderr
    about = json.loads(proc.stdout)
    with FeatureStore.open(digits_store) as store:
        assert about["complete"] is True and about["writer_pid"] is None
        assert about["rows"] == about["rows_written"] == len(store)
        assert about["members"] + about["external"] + about["unknown"] == len(store)
        assert about["layers"] == store.dims
        assert about["provenance"]["model_fingerprint"] == store.provenance["model_fingerprint"]
    proc = gmint_info("--json", "--verify", digits_store)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"store": str(digits_store), "problems": []}


def test_a_pipe_gets_whole_lines(digits_store: Path) -> None:
    proc = gmint_info(digits_store)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    with FeatureStore.open(digits_store) as store:
        prov = store.provenance
    for key in ("model_fingerprint", "rows_sha256", "transform", "layer_shapes"):
        line = next(line for line in proc.stdout.splitlines() if f" {key} " in line)
        assert str(prov[key]) in line, f"{key} is wrapped or cut:\n{proc.stdout}"
