"""The engine is proven through the whole run: a model that mixes its batch only from a later batch on is caught,
and the extraction is redone on the next engine, exactly; the re-checked rows do not depend on timing, and a
later row's float32 rounding is judged as the first batch's is."""

from __future__ import annotations

import copy
import itertools
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gmint.data.base import ImageSet
from gmint.data.transforms import Transform
from gmint.features.engine import agreement
from gmint.features.engine.agreement import ROUNDING_LIMIT
from gmint.features.engine.formulas import GRAD_FORMULAS, layer_key
from gmint.features.engine.selfcheck import EngineCheckWarning, rechecked
from gmint.features.extract import Rows, extract
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel
from tests.naive import naive_mean

PLAIN = {"size": None, "mean": [0.0], "std": [1.0]}
LAYERS = ["fc.weight", "head.weight"]
LINEAR_REDUCERS = GRAD_FORMULAS.get(layer_key(nn.Linear)).reducers


class MixesBrightBatches(nn.Module):
    """A digits classifier that mixes its samples (adds the batch mean of its hidden layer) only when a batch holds
    a bright image: alone, each sample sees only itself, so the naive loop and `vmap` are exact while a batched
    engine is not; dark first batches pass the first check."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.fc = nn.Linear(64, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(x.flatten(1)))
        bright = (x.flatten(1).sum(1).max() > self.threshold).to(h.dtype)  # no Python branch: vmap runs it too
        return self.head(h + 0.5 * bright * h.mean(0, keepdim=True))


def _rows_dark_first(digits: ImageSet, n: int) -> tuple[np.ndarray, float]:
    brightness = digits.images.reshape(len(digits), -1).astype(np.float64).sum(1) / 255
    order = np.argsort(brightness, kind="stable")
    picked = np.concatenate([order[:n - 8], order[-8:]])  # the brightest rows make up the last batch
    return picked, float((brightness[order[n - 9]] + brightness[order[-8]]) / 2)


def _extract(tmp_path: Path, digits: ImageSet, module: nn.Module, rows: np.ndarray, engine: str = "auto"
             ) -> tuple[dict[str, object], dict[str, np.ndarray], list[str]]:
    audited = AuditedModel(module.eval(), {"arch": "custom", "num_classes": 10, "transform": PLAIN})
    codes = np.zeros(len(rows), np.int8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extract(audited, digits, Rows(rows, codes, codes),
                ExtractSettings(layer_setup=",".join(LAYERS), engine=engine, batch_size=16), out=tmp_path / "f.h5")
    with FeatureStore.open(tmp_path / "f.h5") as store:
        features = {n: store.features([n]) for n in store.layers}
        return store.provenance, features, [str(w.message) for w in caught if w.category is EngineCheckWarning]


def test_a_model_that_mixes_only_later_batches_is_caught_and_extracted_again(tmp_path: Path,
                                                                              digits: ImageSet) -> None:
    torch.manual_seed(0)
    rows, threshold = _rows_dark_first(digits, 48)
    module = MixesBrightBatches(threshold)
    provenance, features, said = _extract(tmp_path, digits, module, rows)
    assert said == [m for m in said if "disagreed with the naive loop on row" in m] and len(said) == 1
    assert "hooks engine disagreed" in said[0] and "again with the vmap engine" in said[0]
    assert "in float64 by" in said[0]  # one row alone does not mix: its float32 result is far from float64's
    assert provenance["engine_used"] == "vmap" and provenance["engine_restarts"] == said
    recheck = provenance["engine_recheck"]
    assert isinstance(recheck, dict) and [row // 16 for row in recheck["rows"]] == [1, 2]  # 2: the last batch
    expected = naive_mean(module, digits, rows, Transform.from_dict(PLAIN), LAYERS)
    for name in LAYERS:  # every row exact, the bright ones of the last batch included
        np.testing.assert_allclose(features[name], expected[name], rtol=1e-4, atol=1e-7)


def test_the_rechecked_batches_follow_the_schedule_whatever_the_timing(tmp_path: Path, digits: ImageSet,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one extraction re-check the same rows, whether the engine looks free or the checks look
    free: batches 1, 2, 4, 8 and the last (batch 0 is the one the engine was chosen on)."""
    rows = np.arange(160, dtype=np.int64)  # 10 batches of 16
    module = MixesBrightBatches(threshold=float("inf"))  # never mixes
    records = []
    for name, clock in {"tiny steps": (1e-9 * n for n in itertools.count()),
                        "wild steps": (float(n) ** 6 for n in itertools.count())}.items():
        torch.manual_seed(0)
        monkeypatch.setattr(time, "perf_counter", clock.__next__)
        provenance, _, said = _extract(tmp_path / name, digits, module, rows)
        monkeypatch.undo()
        assert said == [] and provenance["engine_used"] == "hooks" and "engine_restarts" not in provenance
        recheck = provenance["engine_recheck"]
        assert isinstance(recheck, dict) and recheck["float64_trials"] == []
        assert recheck["max_error"] is not None
        assert recheck["max_error"] <= provenance["engine_check"]["tolerance"]  # type: ignore[index]
        records.append(recheck)
    assert records[0]["rows"] == records[1]["rows"]
    assert [row // 16 for row in records[0]["rows"]] == [1, 2, 4, 8, 9]  # 9: the last batch, always
    assert [b for b in range(20) if rechecked(b)] == [0, 1, 2, 4, 8, 16]


def _linear_mean_scaled_after_the_first_batch(monkeypatch: pytest.MonkeyPatch, factor: float, *,
                                              in_float64: bool) -> None:
    """The hooks formula for Linear MEAN, right on the first batch (one call per layer) and off by `factor` on
    every later one in float32 (what rounding in another summation order gives, where the formula is right)
    and, with `in_float64`, in float64 too (a wrong formula)."""
    right, calls = LINEAR_REDUCERS["mean"], itertools.count()

    def scaled(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        later = a.dtype == torch.float64 or next(calls) >= len(LAYERS)
        wrong = later and (a.dtype == torch.float32 or in_float64)
        return right(layer, a, g) * (factor if wrong else 1.0)

    monkeypatch.setitem(LINEAR_REDUCERS, "mean", scaled)


def test_float32_rounding_past_the_tolerance_on_a_later_batch_passes_the_float64_trial(
        tmp_path: Path, digits: ImageSet, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    rows = np.arange(80, dtype=np.int64)  # 5 batches: 1, 2 and 4 (the last) re-checked
    module = MixesBrightBatches(threshold=float("inf"))
    _linear_mean_scaled_after_the_first_batch(monkeypatch, 1.02, in_float64=False)
    deepcopy, copies = copy.deepcopy, []
    monkeypatch.setattr(copy, "deepcopy", lambda obj, *args: copies.append(obj) or deepcopy(obj, *args))
    provenance, _, said = _extract(tmp_path, digits, module, rows)
    assert [c for c in copies if c is module] == [module]  # one float64 copy for the three trials
    assert said == [] and provenance["engine_used"] == "hooks" and "engine_restarts" not in provenance
    check = provenance["engine_check"]
    assert isinstance(check, dict) and check["trials"][0]["passed"] and check["trials"][0]["float64_error"] is None
    recheck = provenance["engine_recheck"]
    assert isinstance(recheck, dict) and [row // 16 for row in recheck["rows"]] == [1, 2, 4]
    trials = recheck["float64_trials"]
    assert [t["row"] for t in trials] == recheck["rows"]  # every re-checked row went through the float64 trial
    for t in trials:
        assert check["tolerance"] < t["error"] <= ROUNDING_LIMIT
        assert t["float64_error"] < 1e-12 and check["tolerance"] < t["rounding_error"] <= ROUNDING_LIMIT
    assert recheck["max_error"] == max(t["error"] for t in trials)


@pytest.mark.parametrize(("factor", "in_float64", "why"), [
    (1.02, True, r"in float64 by 0\.00\d+,"),  # a formula wrong by 2% from the second batch on: float64 sees it
    (1.2, False, r"in float64 by \d(\.\d+)?e-1\d, and its own result is 0\.01"),  # past rounding; float64 agrees
])
def test_a_later_error_the_float64_trial_refuses_restarts_on_the_next_engine(
        tmp_path: Path, digits: ImageSet, monkeypatch: pytest.MonkeyPatch, factor: float, in_float64: bool,
        why: str) -> None:
    torch.manual_seed(0)
    rows = np.arange(80, dtype=np.int64)
    module = MixesBrightBatches(threshold=float("inf"))
    _linear_mean_scaled_after_the_first_batch(monkeypatch, factor, in_float64=in_float64)
    provenance, features, said = _extract(tmp_path, digits, module, rows)
    assert len(said) == 1 and "hooks engine disagreed with the naive loop on row 1" in said[0]  # batch 1
    assert re.search(why, said[0]) and "again with the vmap engine" in said[0]
    assert provenance["engine_used"] == "vmap" and provenance["engine_restarts"] == said
    expected = naive_mean(module, digits, rows, Transform.from_dict(PLAIN), LAYERS)
    for name in LAYERS:
        np.testing.assert_allclose(features[name], expected[name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("engine", ["vmap", "naive"])
def test_a_per_sample_engine_is_exact_on_the_mixing_model_from_the_start(tmp_path: Path, digits: ImageSet,
                                                                         engine: str) -> None:
    torch.manual_seed(0)
    rows, threshold = _rows_dark_first(digits, 48)
    module = MixesBrightBatches(threshold)
    provenance, features, said = _extract(tmp_path, digits, module, rows, engine=engine)
    assert said == [] and provenance["engine_used"] == engine
    expected = naive_mean(module, digits, rows, Transform.from_dict(PLAIN), LAYERS)
    for name in LAYERS:
        np.testing.assert_allclose(features[name], expected[name], rtol=1e-4, atol=1e-7)


def test_an_engine_may_round_as_far_as_twice_the_naive_loop_itself_does(
        tmp_path: Path, digits: ImageSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float32-only error the float64 trial refuses above (its result 0.01 from the float64 value) passes where
    the definition computed in float32 is itself 0.008 from it: the engine is no worse than the naive loop."""
    torch.manual_seed(0)
    rows = np.arange(80, dtype=np.int64)
    module = MixesBrightBatches(threshold=float("inf"))
    _linear_mean_scaled_after_the_first_batch(monkeypatch, 1.2, in_float64=False)
    monkeypatch.setattr(agreement.Reference, "distance", lambda self, other: 0.008)
    assert agreement.rounding_limit(0.008) == 0.016 and agreement.rounding_limit(1e-4) == ROUNDING_LIMIT
    provenance, _, said = _extract(tmp_path, digits, module, rows)
    assert said == [] and provenance["engine_used"] == "hooks" and "engine_restarts" not in provenance
    trials = provenance["engine_recheck"]["float64_trials"]  # type: ignore[index]
    assert trials and all(ROUNDING_LIMIT < t["rounding_error"] <= 0.016 for t in trials)
