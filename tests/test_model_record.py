"""Checkpoint records: every meta form gmint has written reads into the same typed record."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from gmint.assess.evaluate import ModelGap
from gmint.data.base import ImageSet
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.models.check import Fit, ModelCheck
from gmint.models.io import AuditedModel, load_audited, save_checkpoint
from gmint.models.record import CheckpointRecord, SideRecord, TrainingRecord
from gmint.models.zoo import build
from gmint.serve.app import AuditInfo

ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8}


def _first_meta(digits: ImageSet) -> dict[str, object]:
    """A checkpoint's meta as the first gmint versions wrote it: no output selector, input shape, code hash or
    loss quantiles, and the split as `asdict` of the manifest."""
    split = make_split(digits, seed=0)
    return json.loads(json.dumps({
        "arch": "small_cnn", "arch_args": ARGS, "dataset": "digits", "transform": Transform(size=8).to_dict(),
        "split": asdict(split), "split_sha256": split.sha256, "train_config": {"epochs": 2, "lr": 0.01},
        "num_classes": 10, "classes": list(digits.classes), "trained_on": "members",
        "history": [{"epoch": 1, "loss": 2.0, "accuracy": 0.3}, {"epoch": 2, "loss": 1.0, "accuracy": 0.6}],
        "epochs_done": 2, "train_seconds": 1.5, "seed": 0,
        "record": {"members_accuracy": 0.9, "members_loss": 0.2, "external_accuracy": 0.7, "external_loss": 0.8}}))


def test_a_first_version_checkpoint_reads_into_the_record_and_loads(tmp_path: Path, digits: ImageSet) -> None:
    meta = _first_meta(digits)
    record = CheckpointRecord.read(meta)
    assert record.format is None and record.arch == "small_cnn" and record.arch_args == ARGS
    assert record.output == "tensor" and record.arch_sha256 is None and record.num_classes == 10
    assert record.split is not None and record.split.sha256 == meta["split_sha256"]
    assert record.dataset == "digits" and record.trained_on == "members" and record.rows is None
    assert record.epochs_done == 2 and len(record.history) == 2 and record.train_seconds == 1.5 and record.seed == 0
    assert record.train_config == {"epochs": 2, "lr": 0.01} and not record.unfinished
    assert record.training == TrainingRecord(SideRecord(0.9, 0.2), SideRecord(0.7, 0.8))
    description = record.description
    assert description is not None  # the input shape of an older meta is read from the zoo arguments
    assert (description.input_channels, description.input_size, description.num_classes) == (1, 8, 10)
    save_checkpoint(tmp_path / "old.pt", build("small_cnn", **ARGS), meta)  # type: ignore[arg-type]
    loaded = load_audited(tmp_path / "old.pt")
    assert loaded.record == record and loaded.description == description


def test_an_unfinished_run_is_refused_and_a_finished_one_is_not(tmp_path: Path, digits: ImageSet) -> None:
    meta = _first_meta(digits)
    del meta["record"]
    save_checkpoint(tmp_path / "half.pt", build("small_cnn", **ARGS), meta)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unfinished training run .*after epoch 2 of 2"):
        load_audited(tmp_path / "half.pt")


def test_the_training_record_keeps_every_number_in_the_order_written() -> None:
    written = {"members_accuracy": 1.0, "members_loss": 0.01, "members_loss_q10": 0.0, "members_loss_q50": 0.005,
               "members_loss_q90": 0.02, "external_accuracy": 0.9, "external_loss": 0.3, "external_loss_q10": 0.01,
               "external_loss_q50": 0.1, "external_loss_q90": 0.8, "test_accuracy": 0.88, "test_loss": 0.35,
               "test_loss_q10": 0.02, "test_loss_q50": 0.12, "test_loss_q90": 0.9, "reached_target": 1.0}
    record = TrainingRecord.read(written)
    assert record is not None and record.reached_target is True
    assert record.members.loss_quantiles == {10: 0.0, 50: 0.005, 90: 0.02}
    assert list(record.to_dict().items()) == list(written.items())
    assert TrainingRecord.read({"members_accuracy": 1.0, "members_loss": 0.1}) is None  # one side only
    assert TrainingRecord.read(None) is None


@pytest.mark.parametrize(("meta", "arch", "arch_args"), [
    ({"format": "state-dict", "arch": "small_cnn"}, "small_cnn", {}),  # before arch_args were recorded
    ({"format": "state-dict", "arch": "small_cnn", "arch_args": ARGS}, "small_cnn", ARGS),
    ({"format": "torchscript"}, None, {}),
    ({"format": "pickled-module"}, None, {}),
], ids=["state-dict-v1", "state-dict", "torchscript", "pickled-module"])
def test_models_loaded_as_they_are_record_no_description(meta: dict[str, object], arch: str | None,
                                                         arch_args: dict[str, object]) -> None:
    record = CheckpointRecord.read(meta)
    assert (record.format, record.arch, record.arch_args) == (meta["format"], arch, arch_args)
    assert record.description is None and record.training is None and record.split is None
    assert not record.unfinished


def test_an_imported_model_records_its_source_and_what_its_owner_states() -> None:
    meta = {"format": "imported", "arch": "/code/net.py:build", "arch_args": {"k": 3}, "arch_sha256": "ab" * 32,
            "transform": Transform(size=8).to_dict(), "output": "key:logits", "input": {"channels": 3, "size": 8},
            "num_classes": 2, "classes": ["cat", "dog"],
            "source": {"file": "/w/net.pt", "kind": "state-dict", "sha256": "cd" * 32},
            "stated": {"train_accuracy": 0.97}}
    record = CheckpointRecord.read(meta)
    assert record.output == "key:logits" and record.arch_sha256 == "ab" * 32
    assert record.source is not None and record.source.to_dict() == meta["source"]
    assert record.stated_train_accuracy == 0.97 and record.train_config is None
    assert record.description is not None and record.description.classes == ("cat", "dog")
    assert AuditedModel(torch.nn.Identity(), meta).description == record.description


def test_one_gap_from_the_training_record_or_the_model_check_and_on_the_page() -> None:
    training = TrainingRecord(SideRecord(1.0, 0.01), SideRecord(0.8, 0.5))
    check = ModelCheck(Fit(10, 1.0, 0.01), Fit(10, 0.8, 0.5), ())
    assert ModelGap.of(training) == ModelGap.of(check) == ModelGap(1.0, 0.8, 0.01, 0.5)
    info = {"name": "a", "title": "a", "description": "", "alpha": 0.05, "classes": ["0"],
            "input": {"channels": 1, "side": 8}, "dataset": "digits",
            "classifier": {"kind": "mlp", "setup": "combined", "reduction": "mean"},
            "gap": ModelGap.of(training).to_dict(), "n_calibration": 10}
    assert AuditInfo.model_validate(info).model_dump()["gap"] == ModelGap.of(training).to_dict()
