"""Audited-model training: resumable to the same weights, records the gap, refuses mismatched resumes."""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy, UnknownNameError
from gmint.models.io import load_audited, read_checkpoint
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
    real_epoch = train_module.train_epoch

    def dying_epoch(*args: object, **kwargs: object) -> tuple[float, float]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the run dies during its third epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", dying_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_audited(digits, digits_split, config=CONFIG, out=tmp_path / "cut.pt", **common)
    with pytest.raises(InputError, match=r"unfinished training run \(it stopped after epoch 2 of 4\)"):
        load_audited(tmp_path / "cut.pt")  # its weights are an accident of when it died: nothing audits them
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
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
    with pytest.raises(InputError, match="m.pt exists") as caught:
        train_audited(digits, digits_split, arch="small_cnn", transform=Transform(), config=CONFIG, out=path)
    assert caught.value.remedy is Remedy.RESUME_OR_OVERWRITE
    with pytest.raises(UnknownNameError, match="augmentation"):
        train_audited(digits, digits_split, arch="small_cnn", transform=Transform(),
                      config=replace(CONFIG, augment="mixup"), out=tmp_path / "n.pt")


COMMON = {"arch": "small_cnn", "transform": Transform(), "arch_options": {"width": 0.25}}


def test_resuming_a_finished_run_changes_nothing(tmp_path: Path, digits: ImageSet,
                                                 digits_split: MembershipSplit) -> None:
    """The demo resumes every run: a finished checkpoint must come back as it is, however often."""
    path, config = tmp_path / "m.pt", replace(CONFIG, epochs=2)
    first = train_audited(digits, digits_split, config=config, out=path, **COMMON)
    written = path.read_bytes()
    for _ in range(2):
        again = train_audited(digits, digits_split, config=config, out=path, resume=True, **COMMON)
        assert path.read_bytes() == written
        assert again.meta["epochs_done"] == 2 and [h["epoch"] for h in again.meta["history"]] == [1, 2]
        assert again.meta["record"] == first.meta["record"] and not again.module.training
        for a, b in zip(first.module.state_dict().values(), again.module.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cli_resume_of_a_finished_checkpoint_is_a_no_op(tmp_path: Path) -> None:
    from tests.cli_runner import invoke

    path = tmp_path / "m.pt"

    def train(epochs: int, *extra: str) -> tuple[int, str]:
        return invoke("audited", "train", "--data", "digits", "--epochs", epochs, "--width", "0.25", "--out", path,
                      *extra)

    assert train(1)[0] == 0
    written = path.read_bytes()
    for _ in range(2):
        code, out = train(1, "--resume")
        assert code == 0 and "1 epochs" in out
        assert path.read_bytes() == written
    code, out = train(2, "--resume")
    assert code == 1 and "different train_config (epochs 1 → 2)" in out
    assert path.read_bytes() == written


@pytest.mark.parametrize("epochs", [0, -3])
def test_no_epochs_is_refused_before_any_file_is_written(tmp_path: Path, digits: ImageSet,
                                                         digits_split: MembershipSplit, epochs: int) -> None:
    with pytest.raises(InputError, match=f"epochs must be at least 1, got {epochs}"):
        train_audited(digits, digits_split, config=replace(CONFIG, epochs=epochs), out=tmp_path / "m.pt", **COMMON)
    assert not list(tmp_path.iterdir())


def test_resume_on_another_split_or_a_corrupt_history_is_refused(tmp_path: Path, digits: ImageSet,
                                                                 digits_split: MembershipSplit) -> None:
    from gmint.data.split import make_split

    path, config = tmp_path / "m.pt", replace(CONFIG, epochs=1)
    train_audited(digits, digits_split, config=config, out=path, **COMMON)
    other = make_split(digits, members=0.5, external=0.5, holdout=0.5, seed=1)
    with pytest.raises(InputError, match="different split_sha256"):
        train_audited(digits, other, config=config, out=path, resume=True, **COMMON)
    # What the old resume left behind: a finished run trained once more on top ([1, 1] for one epoch).
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta"])
    meta["history"] = meta["history"] * 2
    payload["meta"] = json.dumps(meta)
    torch.save(payload, path)
    written = path.read_bytes()
    with pytest.raises(InputError, match="training progress"):
        train_audited(digits, digits_split, config=config, out=path, resume=True, **COMMON)
    assert path.read_bytes() == written


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path: Path, digits: ImageSet,
                                                           digits_split: MembershipSplit,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while the second epoch's checkpoint is written (here: the disk fills up half-way) must leave
    the first epoch's checkpoint byte for byte, and nothing else; resuming then finishes the run."""
    path, config = tmp_path / "m.pt", replace(CONFIG, epochs=2)
    real_save, saved = torch.save, {"n": 0, "before": b""}

    def save_dying_halfway(obj: object, f: object, *args: object, **kwargs: object) -> None:
        saved["n"] += 1
        if saved["n"] < 2:
            return real_save(obj, f, *args, **kwargs)
        saved["before"] = path.read_bytes()
        buffer = io.BytesIO()
        real_save(obj, buffer)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(half)
        else:
            f.write(half)  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_dying_halfway)
    with pytest.raises(OSError, match="No space"):
        train_audited(digits, digits_split, config=config, out=path, **COMMON)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == saved["before"] and sorted(tmp_path.iterdir()) == [path]
    assert json.loads(read_checkpoint(path)["meta"])["epochs_done"] == 1
    resumed = train_audited(digits, digits_split, config=config, out=path, resume=True, **COMMON)
    assert [h["epoch"] for h in resumed.meta["history"]] == [1, 2]


def test_a_checkpoint_reaches_the_disk_before_it_replaces_the_old_one(
        tmp_path: Path, digits: ImageSet, digits_split: MembershipSplit, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"), real_replace(a, b))[1])
    train_audited(digits, digits_split, config=replace(CONFIG, epochs=1), out=tmp_path / "m.pt", **COMMON)
    # Per checkpoint (after the epoch, then with the record): the file's data, the rename, the folder entry.
    assert events == ["fsync", "replace m.pt", "fsync"] * 2


def test_overwrite_replaces_a_model_only_with_a_finished_one(tmp_path: Path, digits: ImageSet,
                                                             digits_split: MembershipSplit,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """While the new model trains, the old one stays at `out` (its epochs go to `out.new`), so a run killed at
    any moment leaves the old model whole; a finished run replaces it."""
    import gmint.models.train as train_module

    path, config = tmp_path / "m.pt", replace(CONFIG, epochs=2)
    train_audited(digits, digits_split, config=replace(config, epochs=1), out=path, **COMMON)
    old = path.read_bytes()
    with pytest.raises(InputError, match=rf"m.pt exists; {re.escape(Remedy.RESUME_OR_OVERWRITE.value)}$"):
        train_audited(digits, digits_split, config=config, out=path, **COMMON)
    with pytest.raises(InputError, match="pass one of them"):
        train_audited(digits, digits_split, config=config, out=path, resume=True, overwrite=True, **COMMON)
    real_epoch, seen = train_module.train_epoch, []

    def killed_in_second_epoch(*args: object, **kwargs: object) -> tuple[float, float]:
        if seen:
            seen.append((path.read_bytes() == old, (tmp_path / "m.pt.new").is_file()))
            raise KeyboardInterrupt
        seen.append(None)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_audited(digits, digits_split, config=config, out=path, overwrite=True, **COMMON)
    assert seen == [None, (True, True)]  # mid-run: the old model in place, the first new epoch beside it
    assert path.read_bytes() == old and sorted(tmp_path.iterdir()) == [path]  # the unfinished one dropped
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    new = train_audited(digits, digits_split, config=config, out=path, overwrite=True, **COMMON)
    assert sorted(tmp_path.iterdir()) == [path] and load_audited(path).meta["epochs_done"] == 2
    assert load_audited(path).meta["record"] == new.meta["record"]


def test_cli_records_the_thread_count(tmp_path: Path) -> None:
    from tests.cli_runner import invoke

    code, out = invoke("audited", "train", "--epochs", "1", "--width", "0.25", "--threads", "2",
                       "--out", tmp_path / "m.pt")
    assert code == 0, out
    assert load_audited(tmp_path / "m.pt").meta["train_config"]["threads"] == 2
    code, out = invoke("audited", "train", "--threads", "0", "--out", tmp_path / "n.pt")
    assert code == 1 and "'--threads'" in out and not (tmp_path / "n.pt").exists()


def test_target_accuracy_stops_at_the_first_epoch_that_reaches_it(tmp_path: Path, digits: ImageSet,
                                                                   digits_split: MembershipSplit) -> None:
    from gmint.models.train import evaluate

    common = {"arch": "small_cnn", "transform": Transform(), "arch_options": {"width": 0.5}}
    config = TrainConfig(epochs=40, optimizer="adam", lr=3e-3, seed=0, target_accuracy=0.97)
    model = train_audited(digits, digits_split, config=config, out=tmp_path / "t.pt", **common)
    done = model.meta["epochs_done"]
    assert 1 < done < 40  # digits are learnt well before the cap
    record = model.meta["record"]
    assert record["reached_target"] == 1.0 and record["members_accuracy"] >= 0.97
    # one epoch fewer, on the same path, had not reached it: the stop is the first epoch that does
    shorter = train_audited(digits, digits_split, config=replace(config, epochs=done - 1, target_accuracy=None),
                            out=tmp_path / "s.pt", **common)
    import numpy as np
    _, accuracy = evaluate(shorter.module.eval(), digits, np.asarray(digits_split.members), Transform())
    assert accuracy < 0.97
    # resuming the finished run changes nothing
    again = train_audited(digits, digits_split, config=config, out=tmp_path / "t.pt", resume=True, **common)
    assert again.meta["epochs_done"] == done


def test_a_target_not_reached_within_the_cap_is_recorded(tmp_path: Path, digits: ImageSet,
                                                        digits_split: MembershipSplit) -> None:
    config = TrainConfig(epochs=1, optimizer="adam", lr=1e-4, seed=0, target_accuracy=0.99)
    model = train_audited(digits, digits_split, arch="small_cnn", transform=Transform(), config=config,
                          out=tmp_path / "t.pt", arch_options={"width": 0.25})
    assert model.meta["epochs_done"] == 1 and model.meta["record"]["reached_target"] == 0.0


def test_record_holds_loss_quantiles_in_order(tmp_path: Path, digits: ImageSet,
                                              digits_split: MembershipSplit) -> None:
    model = train_audited(digits, digits_split, arch="small_cnn", transform=Transform(),
                          config=replace(CONFIG, epochs=2), out=tmp_path / "q.pt", arch_options={"width": 0.25})
    import numpy as np
    import torch.nn.functional as F

    record = model.meta["record"]
    for side in ("members", "external"):
        rows = np.asarray(getattr(digits_split, side))
        with torch.no_grad():  # each row alone: the record's batched losses must equal them
            losses = np.array([F.cross_entropy(model.module(Transform()(digits.images[[i]])).double(),
                                               torch.tensor([int(digits.labels[i])])).item() for i in rows])
        for q in (10, 50, 90):
            assert record[f"{side}_loss_q{q}"] == pytest.approx(np.percentile(losses, q), rel=1e-5)
        assert record[f"{side}_loss"] == pytest.approx(losses.mean(), rel=1e-5)


def test_target_accuracy_out_of_range_is_refused() -> None:
    with pytest.raises(InputError, match="target_accuracy"):
        TrainConfig(target_accuracy=1.5)


def test_the_target_is_checked_in_eval_mode_whatever_the_running_accuracy(
        tmp_path: Path, digits: ImageSet, digits_split: MembershipSplit, monkeypatch: pytest.MonkeyPatch) -> None:
    """An epoch's running accuracy is taken in train mode while the weights move; a BatchNorm net can report far
    less than its eval-mode accuracy, which is what the target is about."""
    import gmint.models.train as train_module

    real_epoch = train_module.train_epoch
    monkeypatch.setattr(train_module, "train_epoch", lambda *a, **k: (real_epoch(*a, **k)[0], 0.0))
    config = TrainConfig(epochs=40, optimizer="adam", lr=3e-3, seed=0, target_accuracy=0.97)
    model = train_audited(digits, digits_split, arch="small_cnn", transform=Transform(), config=config,
                          out=tmp_path / "t.pt", arch_options={"width": 0.5})
    assert model.meta["epochs_done"] < 40 and model.meta["record"]["reached_target"] == 1.0
    assert model.meta["record"]["members_accuracy"] >= 0.97
