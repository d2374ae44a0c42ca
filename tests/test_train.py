"""Audited-model training: resumable to the same weights, records the gap, refuses mismatched resumes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, UnknownNameError
from gmint.models.io import load_audited
from gmint.models.train import TrainConfig, train_audited

CONFIG = TrainConfig(epochs=4, batch_size=64, optimizer="sgd", lr=0.05, schedule="cosine", augment="crop", seed=3)


def test_resume_with_other_settings_is_refused(tmp_path: Path, digits: ImageSet,
                                               digits_split: MembershipSplit) -> None:
    common = {"arch": "small_cnn", "transform": Transform(), "arch_options": {"width": 0.25}}
    train_audited(digits, digits_split, config=replace(CONFIG, epochs=1), out=tmp_path / "b.pt", **common)
    with pytest.raises(InputError, match="different train_config"):  # the schedule depends on the epochs
        train_audited(digits, digits_split, config=CONFIG, out=tmp_path / "b.pt", resume=True, **common)


def test_resume_continues_from_the_last_epoch(tmp_path: Path, digits: ImageSet,
                                              digits_split: MembershipSplit, monkeypatch: pytest.MonkeyPatch) -> None:
    import gmint.models.train as train_module

    common = {"arch": "small_cnn", "transform": Transform(), "arch_options": {"width": 0.25}}
    straight = train_audited(digits, digits_split, config=CONFIG, out=tmp_path / "full.pt", **common)
    calls = {"n": 0}
    real_epoch = train_module._epoch

    def dying_epoch(*args: object, **kwargs: object) -> tuple[float, float]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the run dies during its third epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_epoch", dying_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_audited(digits, digits_split, config=CONFIG, out=tmp_path / "cut.pt", **common)
    assert load_audited(tmp_path / "cut.pt").meta["epochs_done"] == 2
    monkeypatch.setattr(train_module, "_epoch", real_epoch)
    resumed = train_audited(digits, digits_split, config=CONFIG, out=tmp_path / "cut.pt", resume=True, **common)
    assert [h["epoch"] for h in resumed.meta["history"]] == [1, 2, 3, 4]
    for a, b in zip(straight.module.state_dict().values(), resumed.module.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    record = resumed.meta["record"]
    assert record["members_accuracy"] >= record["external_accuracy"] - 0.05
    assert {"members_loss", "external_loss"} <= set(record)


def test_existing_checkpoint_needs_resume(tmp_path: Path, digits: ImageSet, digits_split: MembershipSplit) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="--resume"):
        train_audited(digits, digits_split, arch="small_cnn", transform=Transform(), config=CONFIG, out=path)
    with pytest.raises(UnknownNameError, match="augmentation"):
        train_audited(digits, digits_split, arch="small_cnn", transform=Transform(),
                      config=replace(CONFIG, augment="mixup"), out=tmp_path / "n.pt")
