"""The command line as a user runs it: extract → train → eval on digits, and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.cli_runner import invoke


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model(workdir: Path) -> Path:
    code, out = invoke("split", "--data", "digits", "--seed", "1", "--out", workdir / "split.json")
    assert code == 0, out
    code, out = invoke("audited", "train", "--arch", "small_cnn", "--data", "digits", "--split",
                       workdir / "split.json", "--epochs", "3", "--width", "0.5", "--out", workdir / "model.pt")
    assert code == 0, out
    assert "members_accuracy" in out
    return workdir / "model.pt"


@pytest.fixture(scope="module")
def store(workdir: Path, model: Path) -> Path:
    code, out = invoke("extract", "--model", model, "--layers", "combined", "--reduction", "mean",
                       "--out", workdir / "f.h5")
    assert code == 0, out
    return workdir / "f.h5"


def test_extract_train_eval_produces_metrics(workdir: Path, store: Path) -> None:
    code, out = invoke("train", store, "--setup", "combined", "--kind", "mlp", "--out", workdir / "mint.pt")
    assert code == 0, out
    code, out = invoke("eval", workdir / "mint.pt", store, "--json", "--n-boot", "50")
    assert code == 0, out
    result = json.loads(out)
    assert set(result["mint"]) >= {"accuracy", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"}
    assert "members_accuracy" in result["audited_model"]
    code, out = invoke("eval", workdir / "mint.pt", store, "--report", workdir / "report", "--n-boot", "20")
    assert code == 0, out
    assert "loss threshold" in out and "gap" in out
    for name in ("report.json", "report.md", "scores.csv", "roc.png"):
        assert (workdir / "report" / name).stat().st_size > 0
    # Both runs report the AUC of the rows in scores.csv (the bootstrap only changes the interval).
    rows = np.loadtxt(workdir / "report" / "scores.csv", delimiter=",", skiprows=1)
    auc = roc_auc_score(rows[:, 1], rows[:, 2])
    report = json.loads((workdir / "report" / "report.json").read_text())
    assert result["mint"]["auc"]["value"] == pytest.approx(auc) == report["mint"]["auc"]["value"]


def test_train_says_what_the_default_chose_and_by_which_rule(workdir: Path, store: Path) -> None:
    code, out = invoke("train", store, "--setup", "output", "--out", workdir / "default.pt")
    assert code == 0, out
    assert "chosen by 4-fold cross-validation on the pool" in out and "rule: the loss alone unless" in out


def test_info_describes_the_store(store: Path) -> None:
    code, out = invoke("info", store)
    assert code == 0, out
    assert "complete" in out and "model_fingerprint" in out and "mean" in out
    assert re.search(r"groups\s*│\s*none", out)  # digits rows come in no groups


def test_layers_lists_presets(model: Path) -> None:
    code, out = invoke("layers", "--model", model)
    assert code == 0, out
    assert "entry" in out and "output" in out


@pytest.mark.parametrize("args, message", [
    (["extract", "--model", "missing.pt"], "not found"),
    (["extract", "--model", "{model}", "--layers", "no.weight", "--out", "{tmp}/x.h5"], "matches no parameter"),
    (["extract", "--model", "{model}", "--reduction", "maen", "--out", "{tmp}/x.h5"], "unknown reduction"),
    (["extract", "--model", "{model}", "--engine", "fast", "--out", "{tmp}/x.h5"], "unknown engine"),
    (["eval", "{tmp}/nothing.pt", "{store}"], "not found"),
    (["train", "{tmp}/nothing.h5"], "not found"),
    (["info", "{model}"], "not a readable HDF5"),
])
def test_user_mistakes_give_one_line_and_nonzero_exit(tmp_path: Path, model: Path, store: Path,
                                                      args: list[str], message: str) -> None:
    filled = [a.format(model=model, store=store, tmp=tmp_path) for a in args]
    code, out = invoke(*filled)
    assert code != 0
    assert message in out
    assert "Traceback" not in out
    assert not (tmp_path / "x.h5").exists()  # no half-written store left behind


def test_incompatible_store_is_refused(workdir: Path, model: Path, store: Path) -> None:
    code, out = invoke("extract", "--model", model, "--layers", "entry", "--reduction", "l2",
                       "--out", workdir / "l2.h5")
    assert code == 0, out
    code, out = invoke("train", store, "--setup", "entry", "--kind", "logreg", "--out", workdir / "m2.pt")
    assert code == 0, out
    code, out = invoke("eval", workdir / "m2.pt", workdir / "l2.h5")
    assert code == 1
    assert "reduction" in out


def test_existing_store_needs_resume_or_overwrite(model: Path, store: Path) -> None:
    before = store.stat().st_mtime_ns
    code, out = invoke("extract", "--model", model, "--out", store)
    assert code == 1 and "--resume" in out
    assert store.stat().st_mtime_ns == before


def test_console_script_runs_as_a_subprocess() -> None:
    proc = subprocess.run([sys.executable, "-m", "gmint_cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("gmint ")
    proc = subprocess.run([sys.executable, "-m", "gmint_cli", "info", "/nonexistent.h5"], capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr


def test_verify_passes_a_sound_store_and_fails_an_incomplete_one(tmp_path: Path, store: Path) -> None:
    code, out = invoke("info", "--verify", store)
    assert code == 0 and "check out" in out
    import h5py

    partial = tmp_path / "partial.h5"
    partial.write_bytes(store.read_bytes())
    with h5py.File(partial, "r+") as h5:
        h5.attrs["complete"] = False
        h5["done"][5:] = False
    code, out = invoke("info", "--verify", partial)
    assert code == 1 and "incomplete: 5 of" in out and "--resume" in out


def test_auto_engine_and_memory_budget_are_recorded(tmp_path: Path, model: Path) -> None:
    code, out = invoke("extract", "--model", model, "--max-memory", "2MiB", "--out", tmp_path / "m.h5")
    assert code == 0, out
    from gmint.features.store import FeatureStore

    with FeatureStore.open(tmp_path / "m.h5") as fs:
        prov = fs.provenance
    assert prov["engine"] == "auto" and prov["engine_used"] == "hooks"
    assert prov["max_memory"] == 2 * 2**20 and prov["batch_size"] < 128
    code, out = invoke("extract", "--model", model, "--max-memory", "lots", "--out", tmp_path / "n.h5")
    assert code == 1 and "--max-memory must look like" in out


def test_eval_reports_the_negative_control_beside_the_result(tmp_path: Path) -> None:
    steps = [
        ("split", "--data", "digits", "--members", "0.4", "--external", "0.4", "--control", "0.2",
         "--out", tmp_path / "split.json"),
        ("audited", "train", "--data", "digits", "--split", tmp_path / "split.json", "--epochs", "2",
         "--width", "0.25", "--out", tmp_path / "audited.pt"),
        ("audited", "train", "--data", "digits", "--split", tmp_path / "split.json", "--epochs", "2",
         "--width", "0.25", "--negative-control", "--out", tmp_path / "control.pt"),
        ("extract", "--model", tmp_path / "audited.pt", "--out", tmp_path / "a.h5"),
        ("extract", "--model", tmp_path / "control.pt", "--out", tmp_path / "c.h5"),
        ("train", tmp_path / "a.h5", "--kind", "logreg", "--out", tmp_path / "m.pt"),
    ]
    for args in steps:
        code, out = invoke(*args)
        assert code == 0, out
    code, out = invoke("eval", tmp_path / "m.pt", tmp_path / "a.h5", "--negative-control", tmp_path / "c.h5",
                       "--json", "--n-boot", "20")
    assert code == 0, out
    result = json.loads(out)
    # The control model saw neither side: no gap of its own, and the same test on it sits near chance.
    assert abs(result["negative_control_model"]["accuracy_gap"]) < 0.06
    assert abs(result["negative_control"]["auc"]["value"] - 0.5) < 0.1
    assert result["negative_control_store"] == str(tmp_path / "c.h5")
    code, out = invoke("eval", tmp_path / "m.pt", tmp_path / "a.h5", "--negative-control", tmp_path / "a.h5")
    assert code == 1 and "not from a control model" in out
