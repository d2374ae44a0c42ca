"""Results per slice: slices cover the evaluated rows exactly once, metrics match hand computations, small
slices are flagged, and `gmint eval --slices` reports them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gmint.assess.evaluate import evaluate_store
from gmint.assess.slices import SLICERS, SliceRows, evaluate_slices, parse_slicers, slice_rows
from gmint.errors import UnknownNameError
from gmint.features.store import FeatureStore
from gmint.mint import train_mint
from tests.cli_runner import invoke


def rows(n: int = 20, seed: int = 0) -> SliceRows:
    rng = np.random.default_rng(seed)
    return SliceRows(sample_id=np.arange(100, 100 + n), membership=np.tile([1, 0], n // 2),
                     score=rng.random(n), label=np.arange(n) % 3, correct=np.arange(n) % 4 != 0,
                     loss=rng.permutation(n).astype(np.float64) / 10)


@pytest.mark.parametrize("slicer", ["class", "correct", "loss-decile"])
def test_slices_cover_every_row_once(slicer: str) -> None:
    r = rows()
    masks = [mask for _, mask in SLICERS.get(slicer)(r)]
    np.testing.assert_array_equal(np.sum(masks, axis=0), np.ones(20))
    results = evaluate_slices(r, [slicer], n_boot=0)
    assert sum(s.members for s in results) == 10 and sum(s.external for s in results) == 10


def test_loss_deciles_of_distinct_losses_hold_two_rows_each() -> None:
    r = rows()
    slices = SLICERS.get("loss-decile")(r)
    assert [int(mask.sum()) for _, mask in slices] == [2] * 10
    first = slices[0][1]
    np.testing.assert_array_equal(np.sort(r.loss[first]), [0.0, 0.1])
    assert slices[0][0] == "loss decile 1 [0, 0.19]"


def test_slice_metrics_match_a_hand_computation_and_small_slices_are_flagged() -> None:
    # class 0: members score 0.9, 0.8; externals 0.85, 0.1 → AUC (1 + 1 + 0 + 1) / 4 = 0.75
    r = SliceRows(sample_id=np.arange(6), membership=np.array([1, 1, 0, 0, 1, 1]),
                  score=np.array([0.9, 0.8, 0.85, 0.1, 0.3, 0.2]), label=np.array([0, 0, 0, 0, 1, 1]),
                  correct=np.ones(6, bool), loss=np.zeros(6))
    results = {s.name: s for s in evaluate_slices(r, ["class"], n_boot=50)}
    zero, one = results["class 0"], results["class 1"]
    assert zero.metrics["auc"].value == pytest.approx(0.75)
    assert zero.metrics["accuracy"].value == pytest.approx(0.75)  # 0.9, 0.8, 0.85 ≥ 0.5; 0.1 below
    assert zero.metrics["tpr_at_1pct_fpr"].value is None and zero.too_small
    assert zero.note == "2 externals cannot resolve 1% FPR (needs ≥ 100)"
    assert (one.members, one.external) == (2, 0) and one.metrics["auc"].value is None
    assert one.note == "only members: no membership metric"


def test_unknown_slicer_lists_the_known_ones() -> None:
    assert parse_slicers("class, correct,class") == ["class", "correct"]
    with pytest.raises(UnknownNameError, match=r"unknown slicer 'decile'; choose from \['class', 'correct', "):
        parse_slicers("class,decile")


def test_slices_of_a_real_evaluation(digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="combined")
    result = evaluate_store(mint, digits_store, n_boot=0)
    r = slice_rows(result, digits_store)
    with FeatureStore.open(digits_store) as store:
        at = {int(i): p for p, i in enumerate(store.column("sample_id"))}
        first = at[int(r.sample_id[0])]
        assert r.label[0] == store.column("label")[first] and r.loss[0] == store.column("loss")[first]
    by_class = evaluate_slices(r, ["class"], n_boot=0)
    assert sum(s.members for s in by_class) == result.rows.members
    assert sum(s.external for s in by_class) == result.rows.external
    correct = {s.name: s for s in evaluate_slices(r, ["correct"], n_boot=0)}
    right = correct["correctly classified"].members
    assert right == round(result.audited_model.members_accuracy * result.rows.members)


def test_eval_slices_on_the_command_line(tmp_path: Path, digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="combined")
    mint.save(tmp_path / "m.pt")
    code, out = invoke("eval", tmp_path / "m.pt", digits_store, "--slices", "class,correct,loss-decile",
                       "--n-boot", "20", "--report", tmp_path / "report", "--json")
    assert code == 0, out
    payload = json.loads(out)
    assert {s["slicer"] for s in payload["slices"]} == {"class", "correct", "loss-decile"}
    deciles = [s for s in payload["slices"] if s["slicer"] == "loss-decile"]
    total = payload["rows"]["members"] + payload["rows"]["external"]
    assert sum(s["members"] + s["external"] for s in deciles) == total
    assert all(s["too_small"] for s in deciles)  # digits' held-out rows are too few for 1% FPR per decile
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["slices"] == payload["slices"]
    assert "## Per slice" in (tmp_path / "report" / "report.md").read_text()
    code, out = invoke("eval", tmp_path / "m.pt", digits_store, "--slices", "colour")
    assert code == 1 and "unknown slicer 'colour'" in out
    code, out = invoke("eval", tmp_path / "m.pt", digits_store, "--slices", "correct", "--n-boot", "5")
    assert code == 0 and "membership inference test per slice" in out and "misclassified" in out
