"""Every bad input is one line: exit code 1, one `error:` line on stderr, no traceback, nothing written.

Each case runs in a folder of real inputs (a split, an audited model, its store, a MINT classifier, image
folders, foreign files) whose every byte and modification time is compared before and after. The message
must name only options the verb has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.main import get_command

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.mint import train_mint
from gmint.models.io import AuditedModel, load_audited
from gmint_cli.app import app
from tests.cli_runner import Outcome, run, snapshot

SCORE = ["score", "--model", "audited.pt", "--mint", "mint.pt", "--store", "f.h5", "--data", "digits",
         "--rows", "holdout-members", "--sample", "5"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, audited_digits: tuple[AuditedModel, Path], digits_store: Path,
         digits_split: MembershipSplit) -> Path:
    """Inputs of every verb, and files that only look like them."""
    w = tmp_path_factory.mktemp("guards")
    digits_split.save(w / "split.json")
    shutil.copy(audited_digits[1], w / "audited.pt")
    shutil.copy(digits_store, w / "f.h5")
    train_mint(w / "f.h5", kind="logreg", setup="combined").save(w / "mint.pt")
    (w / "scores.csv").write_text("sample_id,file,score\n")
    (w / "report").mkdir()
    (w / "report" / "notes.txt").write_text("mine\n")
    (w / "blocker").write_text("a file where a folder would have to be\n")
    (w / "link.h5").symlink_to(w / "f.h5")
    (w / "random.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    (w / "empty.pt").write_bytes(b"")
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), w / "module.pt")
    (w / "module-cut.pt").write_bytes((w / "module.pt").read_bytes()[:400])
    with warnings.catch_warnings():  # TorchScript is deprecated, and still what some users hand in
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), w / "script.pt")
    (w / "script-cut.pt").write_bytes((w / "script.pt").read_bytes()[:400])
    torch.save(nn.Linear(64, 10).state_dict(), w / "state.pt")
    (w / "ids.json").write_text(json.dumps([0, 5, 99_999]))
    rng = np.random.default_rng(0)
    for folder, shape in (("colour", (16, 16, 3)), ("grey16", (16, 16)), ("mixed", None)):
        for label in range(3):
            (w / folder / str(label)).mkdir(parents=True)
            for i in range(4):
                side = 8 + 4 * (i % 2)
                pixels = rng.integers(0, 256, shape or (side, side), dtype=np.uint8)
                Image.fromarray(pixels).save(w / folder / str(label) / f"{i}.png")
    for folder in ("colour", "grey16"):
        code, _, err = run("split", "--data", "imagefolder", "--data-root", w / folder, "--members", "6",
                           "--external", "6", "--out", w / f"split-{folder}.json")
        assert code == 0, err
    return w


def options_of(args: list[str]) -> set[str]:
    """Every option the verb named by `args` has (e.g. ["audited", "train", ...] → audited train's)."""
    command = get_command(app)
    for word in args:
        commands = getattr(command, "commands", None)
        if not commands or word not in commands:
            break
        command = commands[word]
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def assert_one_line_error(outcome: Outcome, args: list[str], needle: str) -> None:
    code, out, err = outcome
    assert code == 1, (out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    assert needle in err and "Traceback" not in err, err
    # Echoing what was typed is fine, and so is another verb's command line quoted in `backticks`.
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", re.sub(r"`[^`]*`", "", err))) - set(args)
    assert named <= options_of(args), f"{sorted(named - options_of(args))} named in: {err}"


CASES = {
    # Outputs that exist: never replaced without --overwrite.
    "split-exists": (["split", "--out", "split.json"], "--out split.json exists; pass --overwrite to replace it"),
    "train-exists": (["train", "f.h5", "--kind", "logreg", "--out", "mint.pt"], "pass --overwrite"),
    "extract-exists": (["extract", "--model", "audited.pt", "--out", "f.h5"],
                       "pass --overwrite to replace it or --resume to continue it"),
    "audited-exists": (["audited", "train", "--split", "split.json", "--epochs", "1", "--out", "audited.pt"],
                       "pass --overwrite to replace it or --resume to continue it"),
    "eval-report-exists": (["eval", "mint.pt", "f.h5", "--report", "report"],
                           "--report report exists and is not empty; pass --overwrite to write into it"),
    "score-out-exists": ([*SCORE, "--out", "scores.csv"], "--out scores.csv exists"),
    "score-features-exists": ([*SCORE, "--out", "new.csv", "--features", "scores.csv", "--overwrite"],
                              "--features scores.csv exists; give a new file"),
    "demo-out-exists": (["demo", "--out", "report"], "--out report exists and is not empty"),
    "demo-out-is-a-file": (["demo", "--out", "f.h5", "--overwrite"], "--out f.h5 is a file; give a folder"),
    "extract-resume-and-overwrite": (["extract", "--model", "audited.pt", "--out", "f.h5", "--resume",
                                      "--overwrite"], "pass one of them"),
    # Own inputs: never written over, even with --overwrite.
    "train-over-its-store": (["train", "f.h5", "--kind", "logreg", "--out", "f.h5", "--overwrite"],
                             "--out f.h5 would write over the store"),
    "train-over-its-store-by-link": (["train", "link.h5", "--kind", "logreg", "--out", "f.h5", "--overwrite"],
                                     "would write over the store"),
    "extract-over-its-model": (["extract", "--model", "audited.pt", "--out", "audited.pt", "--overwrite"],
                               "would write over --model"),
    "extract-over-its-split": (["extract", "--model", "audited.pt", "--split", "split.json", "--out",
                                "split.json", "--overwrite"], "would write over --split"),
    "audited-over-its-split": (["audited", "train", "--split", "split.json", "--out", "split.json",
                                "--overwrite"], "would write over --split"),
    "eval-report-over-its-store": (["eval", "mint.pt", "f.h5", "--report", "f.h5", "--overwrite"],
                                   "would write over the store"),
    "eval-report-around-its-inputs": (["eval", "mint.pt", "f.h5", "--report", ".", "--overwrite"],
                                      "holds the classifier"),
    "score-over-its-classifier": ([*SCORE, "--out", "mint.pt", "--overwrite"], "would write over --mint"),
    "score-features-over-its-store": ([*SCORE, "--out", "new.csv", "--features", "f.h5"],
                                      "--features f.h5 would write over --store"),
    "score-out-is-features": ([*SCORE, "--out", "x.h5", "--features", "x.h5"], "give them different files"),
    # Nowhere to write.
    **{f"unwritable-{name}": ([*args, option, f"blocker/{target}"], "blocker is a file, not a folder")
       for name, args, option, target in (
        ("split", ["split"], "--out", "s.json"),
        ("audited", ["audited", "train", "--split", "split.json"], "--out", "m.pt"),
        ("extract", ["extract", "--model", "audited.pt"], "--out", "x.h5"),
        ("train", ["train", "f.h5"], "--out", "m.pt"),
        ("eval", ["eval", "mint.pt", "f.h5"], "--report", "r"),
        ("score", SCORE, "--out", "s.csv"),
        ("score-features", [*SCORE, "--out", "new.csv"], "--features", "x.h5"),
        ("demo", ["demo"], "--out", "d"))},
    # Numbers out of range, refused before anything is read.
    "extract-batch-0": (["extract", "--model", "audited.pt", "--out", "x.h5", "--batch-size", "0"],
                        "Invalid value for '--batch-size'"),
    "extract-batch-negative": (["extract", "--model", "audited.pt", "--out", "x.h5", "--batch-size", "-3"],
                               "greater than or equal to 1"),
    "extract-chunk-0": (["extract", "--model", "audited.pt", "--out", "x.h5", "--chunk-size", "0"],
                        "'--chunk-size'"),
    "extract-image-size-0": (["extract", "--model", "audited.pt", "--out", "x.h5", "--image-size", "0"],
                             "'--image-size'"),
    "extract-max-memory-0": (["extract", "--model", "audited.pt", "--out", "x.h5", "--max-memory", "0"],
                             "--max-memory must look like"),
    "audited-batch-0": (["audited", "train", "--batch-size", "0", "--out", "m.pt"], "'--batch-size'"),
    "audited-epochs-0": (["audited", "train", "--epochs", "0", "--out", "m.pt"], "'--epochs'"),
    "audited-lr-negative": (["audited", "train", "--lr", "-1", "--out", "m.pt"],
                            "'--lr': must be greater than 0, got -1.0"),
    "audited-lr-0": (["audited", "train", "--lr", "0", "--out", "m.pt"], "'--lr'"),
    "audited-width-0": (["audited", "train", "--width", "0", "--out", "m.pt"], "'--width'"),
    "audited-image-size-0": (["audited", "train", "--image-size", "0", "--out", "m.pt"], "'--image-size'"),
    "audited-weight-decay-negative": (["audited", "train", "--weight-decay", "-1", "--out", "m.pt"],
                                      "'--weight-decay'"),
    "eval-n-boot-0": (["eval", "mint.pt", "f.h5", "--n-boot", "0"], "'--n-boot'"),
    "score-batch-0": ([*SCORE, "--out", "new.csv", "--batch-size", "0"], "'--batch-size'"),
    "demo-epochs-0": (["demo", "--out", "d", "--epochs", "0"], "'--epochs'"),
    # Split sizes: a fraction in (0, 1) or a whole number of rows, nothing in between.
    **{f"split-members-{text}": (["split", "--members", text, "--out", "s.json"],
                                 f"--members must be a fraction in (0, 1) of the train part, e.g. 0.4, or a "
                                 f"whole number of rows, e.g. 900; got '{text}'")
       for text in ("abc", "2.0", "2.5", "1.0", "-3", "nan")},
    "split-control-1.5": (["split", "--control", "1.5", "--out", "s.json"], "--control must be a fraction"),
    # JSON options.
    "train-options-bad-json": (["train", "f.h5", "--options", "{bad", "--out", "m.pt"],
                               "--options is not valid JSON"),
    "train-options-not-object": (["train", "f.h5", "--options", "[1]", "--out", "m.pt"],
                                 "--options must be a JSON object"),
    "audited-arch-options-bad-json": (["audited", "train", "--arch-options", "{bad", "--out", "m.pt"],
                                      "--arch-options is not valid JSON"),
    "train-options-unknown-key": (["train", "f.h5", "--kind", "logreg", "--options", '{"bogus": 1}', "--out",
                                   "m.pt"], "logreg MINT classifier: "),
    "train-options-unknown-base-key": (["train", "f.h5", "--kind", "per_class", "--options",
                                        '{"base": "logreg", "base_options": {"bogus": 1}}', "--out", "m.pt"],
                                       "per_class MINT classifier: "),
    # Devices.
    "extract-device-bogus": (["extract", "--model", "audited.pt", "--out", "x.h5", "--device", "bogus"],
                             "'bogus' is not a device; use cpu, cuda, cuda:N or mps"),
    "audited-device-bogus": (["audited", "train", "--device", "bogus", "--out", "m.pt"], "is not a device"),
    "score-device-bogus": ([*SCORE, "--out", "new.csv", "--device", "bogus"], "is not a device"),
    "extract-device-missing-gpu": (["extract", "--model", "audited.pt", "--out", "x.h5", "--device", "cuda:99"],
                                   "'cuda:99'"),
    # Model files: say what the file is; never call a non-pickle a pickle (that pushes to --trust-pickle).
    "model-random-bytes": (["extract", "--model", "random.bin", "--out", "x.h5"], "of an unknown format"),
    "model-is-a-store": (["layers", "--model", "f.h5"], "is an HDF5 file (a gmint feature store?), not a model"),
    "model-empty": (["score", "--model", "empty.pt", "--mint", "mint.pt", "--store", "f.h5", "--images",
                     "grey16", "--out", "new.csv"], "empty.pt is not a gmint checkpoint or state dict: it is an "
                                                    "empty file"),
    "model-is-torchscript": (["layers", "--model", "script.pt"], "is a TorchScript archive, not a checkpoint; "
                                                                "pass --torchscript"),
    "model-pickled-module": (["layers", "--model", "module.pt"], "pass --trust-pickle only if you trust"),
    "score-pickled-module": ([*SCORE[:2], "module.pt", *SCORE[3:], "--out", "new.csv"], "--trust-pickle"),
    "torchscript-random": (["layers", "--model", "random.bin", "--torchscript"],
                           "random.bin is not a TorchScript archive: it is of an unknown format"),
    "torchscript-store": (["extract", "--model", "f.h5", "--torchscript", "--out", "x.h5"], "HDF5"),
    "torchscript-cut": (["layers", "--model", "script-cut.pt", "--torchscript"], "damaged or truncated"),
    "torchscript-missing": (["layers", "--model", "nothing.pt", "--torchscript"], "model file nothing.pt not found"),
    "trust-pickle-random": (["layers", "--model", "random.bin", "--trust-pickle"], "is not a pickled module"),
    "trust-pickle-store": (["extract", "--model", "f.h5", "--trust-pickle", "--out", "x.h5"], "HDF5"),
    "trust-pickle-cut": (["layers", "--model", "module-cut.pt", "--trust-pickle"], "damaged or truncated"),
    "trust-pickle-missing": (["layers", "--model", "nothing.pt", "--trust-pickle"], "not found"),
    "trust-pickle-checkpoint": (["layers", "--model", "audited.pt", "--trust-pickle"],
                                "load it without --trust-pickle"),
    "resume-a-pickled-module": (["audited", "train", "--resume", "--out", "module.pt"],
                                "gmint reads checkpoints of tensors only"),
    "negative-control-without-control-rows": (["audited", "train", "--split", "split.json", "--negative-control",
                                               "--out", "m.pt"], "the split has no control rows"),
    "resume-a-store": (["audited", "train", "--resume", "--out", "f.h5"], "HDF5"),
    "arch-needs-arguments": (["extract", "--model", "state.pt", "--arch", "torch.nn:Linear", "--data", "digits",
                              "--split", "split.json", "--out", "x.h5"], "cannot be called without arguments"),
    "arch-not-callable": (["layers", "--model", "state.pt", "--arch", "torch:__version__"], "not a function"),
    # What the model can take.
    "bce-on-ten-classes": (["extract", "--model", "audited.pt", "--loss", "bce", "--out", "x.h5"],
                           "--loss bce needs a model with a single output"),
    "extract-colour-folder": (["extract", "--model", "audited.pt", "--data", "imagefolder", "--data-root",
                               "colour", "--split", "split-colour.json", "--out", "x.h5"],
                              "have 3 channels, the audited model takes 1"),
    "extract-bigger-images": (["extract", "--model", "audited.pt", "--data", "imagefolder", "--data-root",
                               "grey16", "--split", "split-grey16.json", "--out", "x.h5"],
                              "would reach it as 16x16; pass --image-size 8"),
    "mixed-sizes-split": (["split", "--data", "imagefolder", "--data-root", "mixed", "--out", "s.json"],
                          "resize them to one size first"),
    "mixed-sizes-audited": (["audited", "train", "--data", "imagefolder", "--data-root", "mixed", "--out", "m.pt"],
                            "pass --image-size N to resize every image"),
    "score-rows-out-of-range": ([*SCORE[:-4], "--rows", "ids.json", "--out", "new.csv"],
                                "--rows ids.json: row 99999 is outside the 1797 rows of digits"),
    # Usage mistakes read like every other mistake.
    "unknown-option": (["extract", "--bogus"], "No such option: --bogus"),
    "not-a-number": (["extract", "--model", "audited.pt", "--batch-size", "x"], "'--batch-size'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(case: str, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args, needle = CASES[case]
    if case.endswith("missing-gpu") and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    monkeypatch.chdir(work)
    before = snapshot(work)
    assert_one_line_error(run(*args), args, needle)
    assert snapshot(work) == before


def test_cuda_without_a_gpu_is_one_line(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.chdir(work)
    for args in (["extract", "--model", "audited.pt", "--out", "x.h5", "--device", "cuda"],
                 ["audited", "train", "--device", "cuda", "--out", "m.pt"]):
        assert_one_line_error(run(*args), args, "sees no CUDA GPU here; use cpu")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_read_only_folder_is_one_line(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for args in (["split", "--out", "locked/s.json"], ["train", "f.h5", "--out", "locked/m.pt"],
                     ["eval", "mint.pt", "f.h5", "--report", "locked/r"], ["demo", "--out", "locked/d"]):
            assert_one_line_error(run(*args), args, "no permission to write in locked")
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o755)
        locked.rmdir()


def test_overwrite_replaces_outputs_but_keeps_a_model_when_training_fails(work: Path, tmp_path: Path) -> None:
    shutil.copy(work / "split.json", tmp_path / "split.json")
    code, out, err = run("split", "--members", "600", "--out", tmp_path / "split.json", "--overwrite")
    assert code == 0 and err == "" and "600 members" in out
    old = tmp_path / "audited.pt"
    shutil.copy(work / "audited.pt", old)
    before = snapshot(tmp_path)
    assert_one_line_error(run("audited", "train", "--arch", "no_such_net", "--split", tmp_path / "split.json",
                              "--out", old, "--overwrite"), ["audited", "train"], "unknown architecture")
    assert snapshot(tmp_path) == before
    report = tmp_path / "report"
    report.mkdir()
    (report / "notes.txt").write_text("mine\n")
    code, out, err = run("eval", work / "mint.pt", work / "f.h5", "--report", report, "--overwrite", "--n-boot", "5")
    assert code == 0 and (report / "report.json").is_file() and (report / "notes.txt").read_text() == "mine\n"


def test_json_prints_only_json(work: Path, tmp_path: Path) -> None:
    code, out, err = run("split", "--members", "0.4", "--out", tmp_path / "s.json", "--json")
    assert code == 0 and err == ""
    assert json.loads(out)["members"] == len(MembershipSplit.load(tmp_path / "s.json").members)
    code, out, err = run("train", work / "f.h5", "--kind", "logreg", "--setup", "combined",
                         "--out", tmp_path / "m.pt", "--json")
    assert code == 0 and err == "" and json.loads(out)["record"]["members"] > 0
    code, out, err = run("layers", "--model", work / "audited.pt", "--json")
    assert code == 0 and err == ""
    assert [layer["parameter"] for layer in json.loads(out)["layers"]][:1] == ["0.weight"]
    code, out, err = run("eval", tmp_path / "m.pt", work / "f.h5", "--json", "--n-boot", "5",
                         "--report", tmp_path / "report")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert "auc" in result["mint"] and len(result["report_files"]) == 4  # json, md, csv and one ROC of every signal
    assert all(Path(p).is_file() for p in result["report_files"])


def test_piped_output_is_neither_wrapped_nor_cut(work: Path, tmp_path: Path) -> None:
    """Through a real pipe: rich would size its output to a terminal on another stream, or to 80 columns."""
    deep = tmp_path / ("a-folder-with-a-long-name-" * 3) / "split.json"
    proc = subprocess.run([sys.executable, "-m", "gmint_cli", "split", "--out", str(deep)], capture_output=True,
                          text=True, env={**os.environ, "GMINT_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and len(proc.stdout) > 120 and "sha256" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "gmint_cli", "eval", str(work / "mint.pt"), str(work / "f.h5"),
                           "--n-boot", "5"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "40"})
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("audited model on them: ") and "mean loss members" in line
               for line in proc.stdout.splitlines())
    assert "…" not in proc.stdout


def test_help_shows_flags_as_flags_and_every_option_explained() -> None:
    def commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
        subs = getattr(command, "commands", None)
        return [c for name, sub in subs.items() for c in commands(sub, (*path, name))] if subs else [(path, command)]

    for path, command in commands(get_command(app)):
        for param in command.params:  # type: ignore[attr-defined]
            assert param.help, f"gmint {' '.join(path)}: {param.name} has no help"
            said = (param.required or param.default is not None or "default" in param.help
                    or getattr(param, "is_flag", False))
            assert said, f"gmint {' '.join(path)}: {param.name} does not say its default"
    code, out, _ = run("extract", "--help")
    assert code == 0 and "--resume" in out and "--no-resume" not in out and "--no-overwrite" not in out


def test_score_refuses_a_split_other_than_the_models(work: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rows under another seed: another manifest, whose labels gmint cannot vouch for."""
    monkeypatch.chdir(work)
    other = tmp_path / "other.json"
    replace(MembershipSplit.load(work / "split.json"), seed=7).save(other)
    args = [*SCORE, "--split", str(other), "--out", str(tmp_path / "s.csv")]
    before = snapshot(work)
    assert_one_line_error(run(*args), args, "is not the one the audited model was trained on")
    assert snapshot(work) == before and not (tmp_path / "s.csv").exists()
    code, out, err = run(*args, "--model-trained-outside-gmint")
    assert code == 0 and "candidates: 5" in out and (tmp_path / "s.csv").is_file(), err


def test_overwrite_keeps_the_old_model_when_training_fails_midway(work: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import gmint.models.train as train_module

    old = tmp_path / "audited.pt"
    shutil.copy(work / "audited.pt", old)
    args = ["audited", "train", "--split", work / "split.json", "--width", "0.25", "--epochs", "3", "--out", old,
            "--overwrite"]
    real_epoch, calls = train_module.train_epoch, {"n": 0}

    def failing_epoch(*a: object, **k: object) -> tuple[float, float]:
        calls["n"] += 1
        if calls["n"] == 2:  # after the first epoch was checkpointed
            raise OSError(28, "No space left on device", str(old))
        return real_epoch(*a, **k)

    before = snapshot(tmp_path)
    monkeypatch.setattr(train_module, "train_epoch", failing_epoch)
    assert_one_line_error(run(*args), ["audited", "train"], "No space left on device")
    assert calls["n"] == 2 and snapshot(tmp_path) == before  # the old model, and no leftover
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    code, out, err = run(*args[:-5], "--epochs", "1", "--out", old, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audited.pt"]
    assert load_audited(old).meta["epochs_done"] == 1 and "1 epochs" in out


def test_demo_prints_unresolved_tpr_as_na_and_every_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            digits: ImageSet) -> None:
    import gmint_cli.demo as demo_cli
    from gmint.assess.evaluate import Evaluation, ModelGap, RowCounts, RowScores
    from gmint.assess.metrics import Estimate
    from gmint.audit.run import AuditRun, probes
    from gmint.demo import demo_config
    from gmint.experiment import Cell, Measurement

    def est(value: float | None) -> Estimate:
        if value is None:
            return Estimate(None, None, None, "needs ≥ 100 externals, has 40")
        return Estimate(value, value - 0.05, value + 0.05)

    def result(tpr: float | None, warnings: tuple[str, ...]) -> Evaluation:
        metrics = {"accuracy": est(0.6), "auc": est(0.65), "tpr_at_1pct_fpr": est(tpr)}
        return Evaluation(tmp_path / "f.h5", RowCounts(40, 40), {}, metrics, metrics, ModelGap(1.0, 0.9, 0.01, 0.3),
                          RowScores(np.arange(80), np.repeat([1, 0], 40), np.full(80, 0.5)), warnings)

    record = {"members_accuracy": 1.0, "external_accuracy": 0.9, "members_loss": 0.01, "external_loss": 0.3}
    split = MembershipSplit("digits", "grouped", 0, members=list(range(160)), external=list(range(160, 320)),
                            pool=[*range(120), *range(160, 280)], holdout=[*range(120, 160), *range(280, 320)],
                            control=list(range(320, 400)))
    config = demo_config()
    labels = probes(config, control=True)
    measured = (Measurement(labels["gMINT combined"], result(None, ("MINT classifier: all 80 scores are 0.5: [sic]",)),
                            tmp_path / "m.pt", 240, 0.0),
                Measurement(labels["gMINT combined (the paper's MLP)"], result(0.03, ()), tmp_path / "p.pt", 240, 0.0),
                Measurement(labels["negative control (gMINT combined)"], result(0.02, ()), tmp_path / "c.pt", 240,
                            0.0))
    models = {role: AuditedModel(nn.Identity(), {"record": record}) for role in ("audited", "control")}
    shown = {name: labels[name] for name in ("gMINT combined", "gMINT combined (the paper's MLP)",
                                             "negative control (gMINT combined)")}
    audit = AuditRun(config, Cell(tmp_path, split, models, measured), shown, None, digits)
    monkeypatch.setattr(demo_cli, "run_demo", lambda *a, **k: audit)
    monkeypatch.setattr(demo_cli, "write_report", lambda *a, **k: (tmp_path / "report.json", tmp_path / "report.html"))
    code, out, err = run("demo", "--out", tmp_path / "d")
    assert code == 0 and err == "", err
    assert "n/a (needs ≥ 100 externals, has 40)" in out and "0.020 [-0.030, 0.070]" in out
    assert "warning: gMINT combined: MINT classifier: all 80 scores are 0.5: [sic]\n" in out
    assert out.count("warning:") == 1
