"""Active MINT: tap presets and shapes, the joint loss, resume, the two readings, the CLI, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gmint.amint.train as amint_train
from gmint.amint import (
    AmintConfig,
    HeadSpec,
    MintHead,
    TapCollector,
    TrainedHead,
    audit_with_head,
    evaluate_amint,
    resolve_taps,
    tap_shapes,
    train_amint,
)
from gmint.amint.evaluate import AmintReport
from gmint.amint.train import AmintModel
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit, make_split
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy, StoreMismatchError
from gmint.features.store import FeatureStore
from gmint.models.architectures import CPU_SCALE
from gmint.models.io import load_audited
from gmint.models.train import TrainConfig
from gmint.models.zoo import ARCHITECTURES, build
from tests.cli_runner import invoke

# Per-sample tap shapes of every zoo architecture at CPU_SCALE options on 32×32 RGB inputs, worked out by hand
# from the strides and widths (width 0.25: ResNet planes 16/32/64/128 ×4 for bottlenecks; DenseNet growth 8;
# MobileNet stride-1 stem below 64 px; the ViT has (32/4)² + 1 = 65 tokens of 64).
EXPECTED_TAPS: dict[str, tuple[tuple[str, ...], list[tuple[int, ...]]]] = {
    "small_cnn": (("2", "5"), [(16, 32, 32), (32, 32, 32)]),
    "mlp": (("2", "4"), [(256,), (128,)]),
    "mobilenet": (("features.5", "features.11"), [(64, 8, 8), (128, 4, 4)]),
    "mobilenet_v2": (("features.6", "features.13"), [(16, 8, 8), (48, 4, 4)]),
    "resnet18": (("layer2", "layer3"), [(32, 16, 16), (64, 8, 8)]),
    "resnet50": (("layer2", "layer3"), [(128, 16, 16), (256, 8, 8)]),
    "resnet101": (("layer2", "layer3"), [(128, 16, 16), (256, 8, 8)]),
    "resnet100": (("layer2", "layer3"), [(128, 16, 16), (256, 8, 8)]),
    "densenet121": (("features.transition2", "features.transition3"), [(64, 8, 8), (128, 4, 4)]),
    "xception": (("middle",), [(182, 4, 4)]),
    "vit": (("blocks.2", "blocks.3"), [(65, 64), (65, 64)]),
}


def test_every_zoo_architecture_has_a_tap_preset() -> None:
    assert sorted(EXPECTED_TAPS) == ARCHITECTURES.names()


@pytest.mark.parametrize("arch", sorted(EXPECTED_TAPS))
def test_tap_shapes_and_the_head_loss_reaches_the_model(arch: str) -> None:
    torch.manual_seed(0)
    model = build(arch, 3, 10, 32, **CPU_SCALE.get("resnet101" if arch == "resnet100" else arch, {}))
    taps = resolve_taps(model, arch)
    names, shapes = EXPECTED_TAPS[arch]
    assert taps == names
    assert tap_shapes(model, taps, (3, 32, 32)) == shapes
    head = MintHead(HeadSpec(taps, tuple(shapes), channels=8, hidden=16))
    model.train()
    collector = TapCollector(model, taps)
    with collector.attached():
        logits, acts = collector(model, torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10)
    out = head(acts)
    assert out.shape == (4,)
    out.sum().backward()
    first = next(p for p in model.parameters() if p.dim() > 1)  # the stem's weight: before every tap
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert not any(h for m in model.modules() for h in m._forward_hooks.values())  # hooks removed


def test_tap_refusals() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(InputError, match="no module named 'conv9' to tap"):
        resolve_taps(model, None, "conv9")
    with pytest.raises(InputError, match="no tap preset for this model"):
        resolve_taps(model, None)
    with pytest.raises(InputError, match="a tap is named twice"):
        resolve_taps(model, None, "0,0")
    collector = TapCollector(model, ["0"])
    with collector.attached(), pytest.raises(InputError, match="modified in place"):
        collector(model, torch.randn(2, 1, 8, 8))

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.block(x))

    twice = Twice()
    collector = TapCollector(twice, ["block"])
    with collector.attached(), pytest.raises(InputError, match="ran 2 times in one forward"):
        collector(twice, torch.randn(2, 3))
    with pytest.raises(InputError, match="per-sample shape"):
        HeadSpec(("a",), ((1, 2, 3, 4),))


@pytest.fixture(scope="module")
def small_split(digits: ImageSet) -> MembershipSplit:
    return make_split(digits, members=300, external=300, holdout=0.5, seed=1)


def _config(epochs: int, lr: float = 1e-3, **kwargs: float) -> AmintConfig:
    return AmintConfig(train=TrainConfig(epochs=epochs, batch_size=32, seed=2, lr=lr), head_channels=16,
                       head_hidden=32, **kwargs)  # type: ignore[arg-type]


def test_joint_loss_falls_and_the_first_batch_normalises(tmp_path: Path, digits: ImageSet,
                                                        small_split: MembershipSplit) -> None:
    result = train_amint(digits, small_split, arch="small_cnn", transform=Transform(), config=_config(8, lr=3e-3),
                         out=tmp_path / "am", arch_options={"width": 0.5})
    history = result.audited.meta["history"]
    assert [h["epoch"] for h in history] == list(range(1, 9))
    # Measured: CE 2.17 → 0.08, head BCE 1.39 → 0.86, head accuracy on its training batches 0.57 → 0.80.
    assert history[-1]["task_loss"] < 0.1 * history[0]["task_loss"]
    assert history[-1]["mint_loss"] < 0.7 * history[0]["mint_loss"]
    assert history[-1]["mint_accuracy"] > history[0]["mint_accuracy"] + 0.15
    norms = result.audited.meta["amint"]["normalisers"]
    # A fresh 10-class model starts near CE = ln 10 and a fresh head near BCE = 2 ln 2 (two terms of ln 2).
    assert norms["task_loss_0"] == pytest.approx(np.log(10), abs=0.3)
    assert norms["mint_loss_0"] == pytest.approx(2 * np.log(2), abs=0.15)
    # The head's fitted rows are the pool, its calibration the held-out externals, none of them shared.
    head = TrainedHead.load(tmp_path / "am" / "head.pt")
    assert sorted(head.fitted_ids) == sorted(digits.sample_ids[small_split.pool])
    assert sorted(head.calibration_ids) == sorted(np.intersect1d(small_split.holdout, small_split.external))
    assert not np.isin(head.calibration_ids, head.fitted_ids).any()
    assert head.model_fingerprint == load_audited(tmp_path / "am" / "audited.pt").fingerprint


def test_without_the_mint_term_the_head_keeps_its_initial_weights(tmp_path: Path, digits: ImageSet,
                                                                  small_split: MembershipSplit) -> None:
    result = train_amint(digits, small_split, arch="small_cnn", transform=Transform(),
                         config=_config(1, mint_weight=0.0), out=tmp_path / "am", arch_options={"width": 0.25})
    torch.manual_seed(2)  # the recipe's seed: the model is built first, then the head, from one stream
    build("small_cnn", 1, 10, 8, width=0.25)
    fresh = MintHead(result.head.spec)
    for a, b in zip(fresh.state_dict().values(), result.head.module.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_continues_to_the_same_weights(tmp_path: Path, digits: ImageSet, small_split: MembershipSplit,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    common = {"arch": "small_cnn", "transform": Transform(), "config": _config(4), "arch_options": {"width": 0.25}}
    straight = train_amint(digits, small_split, out=tmp_path / "full", **common)  # type: ignore[arg-type]
    real_epoch, calls = amint_train._epoch, {"n": 0}

    def dying_epoch(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(amint_train, "_epoch", dying_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_amint(digits, small_split, out=tmp_path / "cut", **common)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"unfinished training run \(it stopped after epoch 2 of"):
        load_audited(tmp_path / "cut" / "audited.pt")
    assert not (tmp_path / "cut" / "head.pt").exists()
    monkeypatch.setattr(amint_train, "_epoch", real_epoch)
    with pytest.raises(InputError, match=re.escape(f"exists; {Remedy.RESUME_OR_OVERWRITE.value}")):
        train_amint(digits, small_split, out=tmp_path / "cut", **common)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="different amint_config"):
        train_amint(digits, small_split, out=tmp_path / "cut", resume=True,
                    **{**common, "config": _config(4, mint_weight=0.5)})  # type: ignore[arg-type]
    resumed = train_amint(digits, small_split, out=tmp_path / "cut", resume=True, **common)  # type: ignore[arg-type]
    assert [h["epoch"] for h in resumed.audited.meta["history"]] == [1, 2, 3, 4]
    for a, b in zip([*straight.audited.module.state_dict().values(), *straight.head.module.state_dict().values()],
                    [*resumed.audited.module.state_dict().values(), *resumed.head.module.state_dict().values()],
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.fixture(scope="module")
def digits_amint(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet) -> tuple[AmintModel, AmintReport,
                                                                                       MembershipSplit]:
    """A small member set (200) so the model has a generalisation gap, trained jointly for 30 epochs."""
    split = make_split(digits, members=200, external=700, holdout=0.5, seed=0)
    folder = tmp_path_factory.mktemp("amint")
    model = train_amint(digits, split, arch="small_cnn", transform=Transform(), out=folder,
                        config=AmintConfig(train=TrainConfig(epochs=30, batch_size=32)), arch_options={"width": 0.5})
    return model, evaluate_amint(model, digits, split, transform=Transform(), n_boot=200), split


def test_on_digits_the_head_recognises_its_members_against_never_seen_rows(
        digits_amint: tuple[AmintModel, AmintReport, MembershipSplit]) -> None:
    _, report, split = digits_amint
    saw, held = report.reading("members the head saw"), report.reading("held-out members")
    n_held = len(np.intersect1d(split.holdout, split.members))
    assert (held.members, held.external) == (n_held, n_held)  # balanced, every held-out member
    assert (saw.members, saw.external) == (n_held, n_held)
    # The negatives are never-seen rows in both readings: the head beats chance on them by a wide margin when
    # asked about members it was trained on (AUC 0.98 measured; required: ≥ 0.9, accuracy ≥ 0.75) ...
    assert saw.amint["auc"].value >= 0.9
    assert saw.amint["auc"].low >= 0.85
    assert saw.amint["accuracy"].value >= 0.75
    # ... and much less on members it never saw (AUC 0.51 measured, at chance: the head learnt its members,
    # not membership), which is why both readings are reported.
    assert saw.amint["auc"].value - held.amint["auc"].value >= 0.3


def test_passive_gmint_and_the_loss_threshold_read_the_same_held_out_rows(
        digits_amint: tuple[AmintModel, AmintReport, MembershipSplit], digits: ImageSet) -> None:
    model, report, split = digits_amint
    held = report.reading("held-out members")
    assert report.passive is not None
    assert sorted(report.passive.scores.sample_id) == sorted(digits.sample_ids[split.holdout])
    assert (report.passive.rows.members, report.passive.rows.external) == (held.members, held.external)
    # Both fit the loss threshold on the pool and score the same rows: the same AUC up to float32 storage.
    assert report.passive.loss_threshold["auc"].value == pytest.approx(held.loss_threshold["auc"].value, abs=1e-3)
    payload = report.to_dict()
    assert [r["name"] for r in payload["readings"]] == ["held-out members", "members the head saw"]
    assert set(payload["passive_gmint"]) >= {"mint", "loss_threshold", "rows"}
    assert list(report.columns()) == ["aMINT, held-out members", "aMINT, members the head saw",
                                      "passive gMINT, held-out", "loss threshold, held-out"]
    assert "| AUC |" in report.markdown()


def test_cli_train_extract_and_score(tmp_path: Path, digits: ImageSet) -> None:
    out = tmp_path / "am"
    code, text = invoke("amint", "train", "--data", "digits", "--epochs", "2", "--batch-size", "64", "--width", "0.25",
                        "--head-channels", "8", "--no-passive", "--n-boot", "20", "--out", out)
    assert code == 0, text
    assert "aMINT, held-out members" in text and "members the head saw" in text
    assert {p.name for p in out.iterdir()} == {"audited.pt", "head.pt", "report.json", "report.md"}
    code, text = invoke("amint", "train", "--data", "digits", "--epochs", "2", "--out", out)
    assert code == 1 and "exists and is not empty" in text
    # The aMINT model is a normal gmint checkpoint: passive gMINT extracts from it.
    code, text = invoke("extract", "--model", out / "audited.pt", "--data", "digits", "--out", tmp_path / "f.h5")
    assert code == 0, text
    head = TrainedHead.load(out / "head.pt")
    with FeatureStore.open(tmp_path / "f.h5") as store:
        assert store.provenance["model_fingerprint"] == head.model_fingerprint
    code, text = invoke("amint", "score", "--model", out / "audited.pt", "--head", out / "head.pt", "--data", "digits",
                        "--rows", "holdout-members", "--sample", "40", "--out", tmp_path / "s.json", "--json")
    assert code == 0, text
    result = json.loads(text)
    assert result["verdict"]["n_candidates"] == 40
    assert result["verdict"]["n_calibration"] == len(head.calibration_ids)
    scores = json.loads((tmp_path / "s.json").read_text())["scores"]
    ids, got = np.array([s["sample_id"] for s in scores]), np.array([s["score"] for s in scores])
    split = load_audited(out / "audited.pt").meta["split"]
    holdout_members = np.intersect1d(split["holdout"], split["members"])  # digits: row ids are sample ids
    assert len(ids) == 40 and np.isin(ids, holdout_members).all() and not np.isin(ids, head.fitted_ids).any()
    # each score is the head's P(member) of that very row, as the library computes it
    audit = audit_with_head(load_audited(out / "audited.pt"), head, digits, ids, head_path=out / "head.pt")
    np.testing.assert_allclose(got, audit.scores.score, rtol=1e-6)
    # the verdict's U counts the (candidate, calibration) pairs the candidate wins, ties half
    calibration = head.calibration_scores[~np.isin(head.calibration_ids, ids)]
    wins = (got[:, None] > calibration[None, :]).sum() + 0.5 * (got[:, None] == calibration[None, :]).sum()
    assert result["verdict"]["statistic"] == pytest.approx(wins)
    (tmp_path / "rows.json").write_text(json.dumps([int(head.fitted_ids[0])]))
    code, text = invoke("amint", "score", "--model", out / "audited.pt", "--head", out / "head.pt", "--data", "digits",
                        "--rows", tmp_path / "rows.json", "--out", tmp_path / "t.csv")
    assert code == 1 and "1 candidate rows were used to train the aMINT head" in text


def test_a_head_refuses_another_model(tmp_path: Path, digits: ImageSet, small_split: MembershipSplit,
                                      audited_digits: tuple[object, Path]) -> None:
    from gmint.amint import audit_with_head

    result = train_amint(digits, small_split, arch="small_cnn", transform=Transform(), config=_config(1),
                         out=tmp_path / "am", arch_options={"width": 0.25})
    other = load_audited(audited_digits[1])
    with pytest.raises(StoreMismatchError, match="trained with another model"):
        audit_with_head(other, result.head, digits, np.arange(5), head_path=tmp_path / "am" / "head.pt")
    with pytest.raises(InputError, match="is not a gmint aMINT head"):
        TrainedHead.load(tmp_path / "am" / "audited.pt")
    with pytest.raises(InputError, match="leave target_accuracy unset"):
        AmintConfig(train=TrainConfig(target_accuracy=0.9))


def test_the_committed_benchmark_report_is_regenerated_from_its_rows() -> None:
    from benchmarks.amint import markdown, paper_rows, read_rows

    root = Path(__file__).resolve().parents[1]
    results, paper = root / "benchmarks" / "results" / "amint-cpu.jsonl", root.parent / "shared" / "paper"
    if not (paper / "amint-table1.csv").is_file():
        pytest.skip(f"{paper / 'amint-table1.csv'} is absent")
    rows = read_rows(results)
    assert [r["cell"] for r in rows] == ["mnist-resnet18", "cifar10-resnet18", "gtsrb-resnet18",
                                         "tiny_imagenet-resnet18"]
    for row in rows:  # both readings against the same never-seen rows, balanced
        held, saw = row["report"]["readings"]
        assert (held["name"], saw["name"]) == ("held-out members", "members the head saw")
        assert held["external"] == saw["external"] == held["members"] == saw["members"]
    assert markdown(rows, paper_rows(paper / "amint-table1.csv")) == (root / "benchmarks" / "results" /
                                                                      "amint-cpu.md").read_text()
