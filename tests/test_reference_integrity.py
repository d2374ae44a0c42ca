"""A reference set's files are checked one by one, its options and manifest read strictly, its workers die with
their parent, and every refusal is one line that changes nothing on disk.

A store or checkpoint copied over another model's used to be read as a second, independent reference model (the
attacks ran on one model counted twice and moved LiRA's σ_out); options outside an attack's range ran to a
chance-level AUC; a manifest holding a JSON list was a traceback; killed parents left their training workers on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.models.io import load_audited
from gmint.models.train import TrainConfig, train_audited
from gmint.reference import ReferenceSet
from gmint.reference.manifest import AT_TRAINING, FROM_CHECKPOINT, rows_sha256
from tests.cli_runner import run, snapshot


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet,
            digits_control_split: MembershipSplit) -> Path:
    folder = tmp_path_factory.mktemp("integrity")
    train_audited(digits, digits_control_split, arch="small_cnn", transform=Transform(),
                  config=TrainConfig(epochs=1, batch_size=64), out=folder / "audited.pt", arch_options={"width": 0.25})
    return folder / "audited.pt"


@pytest.fixture(scope="module")
def clean(audited: Path) -> Path:
    """Two offline reference models and their stores, as `reference train` and `reference extract` wrote them."""
    refs = audited.parent / "refs"
    for step in (("train", "--model", audited, "--k", 2, "--out", refs), ("extract", refs)):
        done = run("reference", *step)
        assert done.code == 0, done.stderr
    return refs


@pytest.fixture()
def refs(clean: Path, tmp_path: Path) -> Path:
    """A copy of the clean set to tamper with (the manifest still names the audited model where it is)."""
    return Path(shutil.copytree(clean, tmp_path / "refs"))


def refused(folder: Path, *args: object) -> str:
    """The one error line of a refused `gmint ARGS`, after checking it wrote nothing under `folder`."""
    before = snapshot(folder)
    done = run(*args)
    lines = done.stderr.strip().splitlines()
    assert done.code == 1 and done.stdout == "" and len(lines) == 1 and lines[0].startswith("error: "), done
    assert snapshot(folder) == before
    return lines[0]


def sigma_out(folder: Path) -> float:
    """Global offline LiRA's σ_out over the set: what a model counted twice moves."""
    done = run("reference", "attack", folder, "--attacks", "lira-offline-global", "--n-boot", 5, "--json")
    assert done.code == 0, done.stderr
    return float(json.loads(done.stdout)["results"][0]["params"]["sigma_out"])


# 1. Every model recorded when trained and checked before use


def test_each_model_is_recorded_as_it_finishes_training(clean: Path) -> None:
    manifest = ReferenceSet.load(clean)
    assert sorted(manifest.models) == ["ref-00.pt", "ref-01.pt"]
    for i in range(2):
        record = manifest.models[manifest.model_file(i)]
        model = load_audited(clean / manifest.model_file(i))
        assert record.fingerprint == model.fingerprint and record.recorded == AT_TRAINING
        assert record.rows_sha256 == rows_sha256(manifest.rows_of(i)) == rows_sha256(model.meta["rows"])
    first, second = (manifest.models[f"ref-0{i}.pt"].fingerprint for i in range(2))
    assert first != second


def test_a_store_copied_over_another_models_is_refused(refs: Path) -> None:
    manifest = ReferenceSet.load(refs)
    shutil.copy(refs / "ref-00-output.h5", refs / "ref-01-output.h5")
    expected = manifest.models["ref-01.pt"].fingerprint[:12]
    for args in (("reference", "attack", refs, "--attacks", "lira-offline-global"), ("reference", "extract", refs)):
        line = refused(refs, *args)
        assert f"{refs / 'ref-01-output.h5'} does not come from reference model ref-01.pt" in line, line
        assert manifest.models["ref-00.pt"].fingerprint[:12] in line and f"the set's {expected}" in line


def test_a_checkpoint_copied_over_another_models_is_refused(refs: Path, audited: Path) -> None:
    manifest = ReferenceSet.load(refs)
    shutil.copy(refs / "ref-00.pt", refs / "ref-01.pt")
    for name in ("ref-01-output.h5", "ref-01-gradient.h5"):  # so that extract has the copy to read
        (refs / name).unlink()
    wanted = (f"{refs / 'ref-01.pt'} is not reference model 1 of the set: its weights' fingerprint is "
              f"{manifest.models['ref-00.pt'].fingerprint[:12]}, references.json records "
              f"{manifest.models['ref-01.pt'].fingerprint[:12]}")
    assert wanted in refused(refs, "reference", "extract", refs)
    assert wanted in refused(refs, "reference", "train", "--model", audited, "--k", 2, "--out", refs, "--resume")


def test_a_set_trained_before_models_were_recorded_records_them_on_its_first_extract(refs: Path,
                                                                                      clean: Path) -> None:
    recorded = ReferenceSet.load(refs)
    replace(recorded, models={}).save(refs)  # as gmint wrote manifests before it recorded models
    assert "models" not in json.loads((refs / "references.json").read_text())
    line = refused(refs, "reference", "attack", refs, "--attacks", "lira-offline-global")
    assert "records no fingerprint of ref-00.pt, ref-01.pt" in line and "`gmint reference extract`" in line
    done = run("reference", "extract", refs)
    assert done.code == 0, done.stderr
    warning = done.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: ") and "recorded now" in warning[0], done.stderr
    now = ReferenceSet.load(refs)
    assert {name: r.fingerprint for name, r in now.models.items()} == \
        {name: r.fingerprint for name, r in recorded.models.items()}
    assert {r.recorded for r in now.models.values()} == {FROM_CHECKPOINT}
    assert sigma_out(refs) == sigma_out(clean)
    assert run("reference", "extract", refs).stderr == ""  # recorded once


def test_a_resumed_training_records_them_too(refs: Path, audited: Path) -> None:
    recorded = ReferenceSet.load(refs)
    replace(recorded, models={}).save(refs)
    done = run("reference", "train", "--model", audited, "--k", 2, "--out", refs, "--resume")
    assert done.code == 0 and done.stderr.count("warning: ") == 1 and "recorded now" in done.stderr, done.stderr
    now = ReferenceSet.load(refs)
    assert now == replace(recorded, models={name: replace(r, recorded=FROM_CHECKPOINT)
                                            for name, r in recorded.models.items()})


def test_an_unrecorded_checkpoint_copied_over_another_is_not_recorded(refs: Path) -> None:
    manifest = ReferenceSet.load(refs)
    replace(manifest, models={}).save(refs)
    shutil.copy(refs / "ref-00.pt", refs / "ref-01.pt")
    line = refused(refs, "reference", "extract", refs)
    assert f"{refs / 'ref-01.pt'} is not reference model 1 of the set: it trained on" in line
    assert f"others (hash {rows_sha256(manifest.rows_of(1))[:12]})" in line


# 2. Attack options typed, with ranges


@pytest.mark.parametrize(("options", "wanted"), [
    ({"rmia": {"gamma": -1}}, "attack 'rmia': gamma = -1 is not a number > 0; it takes gamma (a number > 0), "
                              "population (a whole number ≥ 1, or null for every population row), a (a number in "
                              "[0, 1], or \"auto\")"),
    ({"rmia": {"gama": 2}}, "attack 'rmia' has no option 'gama'; it takes gamma"),
    ({"rmia": {"a": 1.5}}, "a = 1.5 is not a number in [0, 1], or \"auto\""),
    ({"rmia": {"a": True}}, "a = true is not a number in [0, 1]"),
    ({"rmia": {"population": 0}}, "population = 0 is not a whole number ≥ 1"),
    ({"rmia": 3}, "the options of attack 'rmia' must be an object"),
    ({"lira-offline": {"x": 1}}, "attack 'lira-offline' has no option 'x'; it takes no options"),
    ({"rmiaa": {}}, "unknown attack 'rmiaa'; choose from"),
    ({"gmint": {}}, "options are given for gmint, which is not among the attacks run (rmia, lira-offline)"),
])
def test_attack_options_outside_their_ranges_are_refused(clean: Path, options: dict[str, object],
                                                         wanted: str) -> None:
    line = refused(clean, "reference", "attack", clean, "--attacks", "rmia,lira-offline", "--options",
                   json.dumps(options))
    assert line.startswith("error: --options: ") and wanted in line, line


@pytest.mark.parametrize(("options", "wanted"), [
    ({"gmint": {"kind": "cnn"}}, "kind = \"cnn\" is not one of mlp, logreg, per_class"),
    ({"gmint": {"mint_options": {"foo": 1}}}, "the mlp MINT classifier does not take mint_options ['foo']"),
    ({"gmint-calibrated": {"per_sample_min": 1}}, "per_sample_min = 1 is not a whole number ≥ 2"),
])
def test_mint_attack_options_are_checked_before_anything_runs(clean: Path, options: dict[str, object],
                                                              wanted: str) -> None:
    line = refused(clean, "reference", "attack", clean, "--attacks", "gmint,gmint-calibrated", "--options",
                   json.dumps(options))
    assert wanted in line, line


def test_attack_options_given_are_the_ones_used(clean: Path) -> None:
    done = run("reference", "attack", clean, "--attacks", "rmia", "--n-boot", 5, "--json", "--options",
               json.dumps({"rmia": {"a": 0.3, "gamma": 2, "population": 100}}))
    assert done.code == 0, done.stderr
    params = json.loads(done.stdout)["results"][0]["params"]
    assert (params["a"], params["gamma"], params["population"], params["a_fitted_on"]) == (0.3, 2.0, 100, "given")


def test_an_a_that_cannot_be_fitted_names_the_option_as_the_cli_takes_it(clean: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An auditor's pool with one side only (and no reference model of a pair can stand in for the audited
    model in RMIA's fit either)."""
    from gmint.reference import compare

    real = compare.evaluation_rows

    def members_only(signals: compare.ReferenceSignals, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fit, ids, membership = real(signals, seed)
        o = signals.output
        return fit[np.isin(fit, o.sample_id[o.membership == 1])], ids, membership

    monkeypatch.setattr(compare, "evaluation_rows", members_only)
    done = run("reference", "attack", clean, "--attacks", "rmia", "--n-boot", 5)
    assert done.code == 0, done.stderr
    assert "cannot fit RMIA's a" in done.stdout and "give its option a (a number in [0, 1])" in done.stdout
    assert "rmia: give its option a with --options '{\"rmia\": {\"a\": VALUE}}'" in done.stdout
    assert "--option " not in done.stdout
    done = run("reference", "attack", clean, "--attacks", "rmia", "--n-boot", 5, "--json")
    assert json.loads(done.stdout)["results"][0]["needs_option"] == "a"


# 3. A manifest that is not one


@pytest.mark.parametrize("content", ["[1, 2]", '"references"', "3", "null", '{"format": "gmint-ref', "",
                                     '{"format": "gmint-references/1", "k": "two"}'])
def test_a_manifest_that_is_not_a_json_object_is_refused_in_one_line(refs: Path, audited: Path,
                                                                     content: str) -> None:
    (refs / "references.json").write_text(content)
    for args in (("reference", "attack", refs), ("reference", "extract", refs),
                 ("reference", "train", "--model", audited, "--k", 2, "--out", refs, "--resume")):
        line = refused(refs, *args)
        assert f"error: {refs / 'references.json'} is not a gmint reference manifest" in line, line


# 4. Workers end with their parent


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat, command = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
            except OSError:
                continue
            state, parent = stat[stat.rindex(")") + 2:].split()[:2]
            if int(parent) == pid and state != "Z":
                found.append((int(entry.name), command.replace(b"\0", b" ").decode(errors="replace")))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"  # a zombie has ended; only its reaping is left


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")
def test_training_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of `reference train --workers 2` once both workers train: they end within seconds (they would
    otherwise train their 20,000 epochs on, writing checkpoints no one waits for)."""
    (tmp_path / "net.py").write_text("from torch import nn\n\n\ndef build() -> nn.Module:\n"
                                     "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict(), tmp_path / "w.pt")
    for name, rows in (("members", range(0, 100)), ("external", range(100, 200)), ("control", range(200, 400))):
        (tmp_path / f"{name}.json").write_text(json.dumps(list(rows)))
    for args in (("model", "import", tmp_path / "w.pt", "--arch", f"{tmp_path / 'net.py'}:build", "--image-size", 8,
                  "--channels", 1, "--mean", 0.5, "--std", 0.5, "--out", tmp_path / "model.pt"),
                 ("split", "--data", "digits", "--members-list", tmp_path / "members.json", "--external-list",
                  tmp_path / "external.json", "--control-list", tmp_path / "control.json", "--out",
                  tmp_path / "split.json")):
        assert run(*args).code == 0
    out = tmp_path / "refs"
    parent = subprocess.Popen([sys.executable, "-m", "gmint_cli", "reference", "train", "--model",
                               str(tmp_path / "model.pt"), "--split", str(tmp_path / "split.json"), "--data", "digits",
                               "--k", "2", "--epochs", "20000", "--workers", "2", "--out", str(out)],
                              env={**os.environ, "GMINT_NO_PROGRESS": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and parent.poll() is None:
            workers = [pid for pid, command in _children(parent.pid) if "spawn_main" in command]
            if len(workers) == 2 and all((out / f"ref-0{i}.pt").exists() for i in range(2)):  # both training
                break
            time.sleep(0.1)
        assert len(workers) == 2 and parent.poll() is None, "the workers never started training"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(_alive, workers)):
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "training workers outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# 5. Messages that said something wrong


@pytest.mark.parametrize(("k", "wanted"), [
    ("0", "--k takes a number of reference models from 1 to 2 ({refs} holds 2), got 0"),
    ("-1", "--k takes a number of reference models from 1 to 2 ({refs} holds 2), got -1"),
    ("1,3", "got 3; train more with `gmint reference train --k 3 --resume`"),
    ("1,x", "--k takes comma-separated whole numbers, got '1,x'"),
])
def test_a_k_the_set_cannot_give_is_one_correct_line(clean: Path, k: str, wanted: str) -> None:
    line = refused(clean, "reference", "attack", clean, "--attacks", "loss", "--k", k)
    assert wanted.format(refs=clean) in line, line


@pytest.mark.parametrize("attacks", ["", " , "])
def test_no_attack_is_refused(clean: Path, attacks: str) -> None:
    assert "--attacks names no attack; choose from gmint, " in refused(clean, "reference", "attack", clean,
                                                                       "--attacks", attacks)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit's, writing the TorchScript file
def test_train_names_the_import_not_options_it_does_not_have(audited: Path, tmp_path: Path) -> None:
    module = load_audited(audited).module
    torch.save(module, tmp_path / "pickled.pt")
    torch.save(module.state_dict(), tmp_path / "state.pt")
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 1, 8, 8)), tmp_path / "script.pt")
    for name, what in (("pickled.pt", "holds pickled Python objects"), ("state.pt", "is a plain state dict"),
                       ("script.pt", "is a TorchScript archive")):
        line = refused(tmp_path, "reference", "train", "--model", tmp_path / name, "--data", "digits", "--split",
                       tmp_path / "split.json", "--epochs", 1, "--out", tmp_path / "refs")
        assert what in line and "import the model once with `gmint model import`" in line, line
        assert "pass --trust-pickle" not in line and "pass --torchscript" not in line and "pass --arch" not in line
