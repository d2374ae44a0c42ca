"""Non-finite settings and weights: refused up front, never trained into a model that is then audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.models.io import AuditedModel, load_audited, save_checkpoint
from gmint.models.train import TrainConfig, train_audited
from tests.cli_runner import run, snapshot


@pytest.mark.parametrize("args", [
    ["audited", "train", "--lr", "inf"],
    ["audited", "train", "--lr", "nan"],
    ["audited", "train", "--weight-decay", "inf"],
    ["amint", "train", "--lr", "inf"],
    ["amint", "train", "--mint-weight", "inf"],
    ["amint", "train", "--task-weight", "nan"],
], ids=lambda a: " ".join(a))
def test_non_finite_training_settings_are_refused_before_anything_is_written(tmp_path: Path,
                                                                              args: list[str]) -> None:
    before = snapshot(tmp_path)
    done = run(*args, "--epochs", "1", "--out", tmp_path / "out")
    assert done.code == 1 and done.stderr.count("\n") == 1 and "error:" in done.stderr, done.stderr
    assert snapshot(tmp_path) == before


def test_a_run_that_diverges_stops_and_leaves_no_finished_model(tmp_path: Path, digits: ImageSet,
                                                                 digits_split: MembershipSplit) -> None:
    with pytest.raises(InputError, match="training diverged at epoch 1"):
        train_audited(digits, digits_split, arch="mlp", transform=Transform(),
                      config=TrainConfig(epochs=2, lr=1e30, optimizer="sgd"), out=tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()  # the diverged epoch was never saved; nothing finished to audit


def test_a_model_with_non_finite_weights_is_refused_by_every_verb(tmp_path: Path,
                                                                  audited_digits: tuple[AuditedModel, Path]) -> None:
    model = audited_digits[0]
    broken = load_audited(audited_digits[1]).module
    with torch.no_grad():
        next(broken.parameters())[0].fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", broken, model.meta)
    for verb in (["layers", "--model", tmp_path / "nan.pt"],
                 ["extract", "--model", tmp_path / "nan.pt", "--out", tmp_path / "f.h5"]):
        done = run(*verb)
        assert done.code == 1 and "holds non-finite weights" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "f.h5").exists()


def test_a_mint_classifier_given_as_a_model_is_named_for_what_it_is(tmp_path: Path, digits_store: Path) -> None:
    assert run("train", digits_store, "--out", tmp_path / "mint.pt").code == 0
    done = run("layers", "--model", tmp_path / "mint.pt")
    assert done.code == 1 and "is a MINT classifier, not an audited model" in done.stderr
    assert json.loads(torch.load(tmp_path / "mint.pt", weights_only=True)["meta"])["format"] == "gmint-mint/1"
