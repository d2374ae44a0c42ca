"""The engine is proven through the whole run: a model that mixes its batch only from a later batch on is caught,
and the extraction is redone on the next engine, exactly."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gmint.data.base import ImageSet
from gmint.data.transforms import Transform
from gmint.features.engine.selfcheck import EngineCheckWarning
from gmint.features.extract import Rows, extract
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel
from tests.naive import naive_mean

PLAIN = {"size": None, "mean": [0.0], "std": [1.0]}
LAYERS = ["fc.weight", "head.weight"]


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
    assert provenance["engine_used"] == "vmap" and provenance["engine_restarts"] == said
    recheck = provenance["engine_recheck"]
    assert isinstance(recheck, dict) and max(recheck["rows"]) >= 40  # the last batch is always re-checked
    expected = naive_mean(module, digits, rows, Transform.from_dict(PLAIN), LAYERS)
    for name in LAYERS:  # every row exact, the bright ones of the last batch included
        np.testing.assert_allclose(features[name], expected[name], rtol=1e-4, atol=1e-7)


def test_an_engine_that_stays_right_is_rechecked_at_a_bounded_share_of_its_time(tmp_path: Path,
                                                                               digits: ImageSet) -> None:
    torch.manual_seed(0)
    rows = np.arange(160, dtype=np.int64)
    module = MixesBrightBatches(threshold=float("inf"))  # never mixes
    provenance, _, said = _extract(tmp_path, digits, module, rows)
    assert said == [] and provenance["engine_used"] == "hooks" and "engine_restarts" not in provenance
    recheck = provenance["engine_recheck"]
    assert isinstance(recheck, dict) and recheck["max_error"] is not None
    assert recheck["max_error"] <= provenance["engine_check"]["tolerance"]  # type: ignore[index]
    assert 144 <= max(recheck["rows"]) < 160  # the last batch
    # checks stop once they reach the share of the engine's time: at most one more, and the last batch's
    per_check = recheck["check_seconds"] / len(recheck["rows"])
    assert recheck["check_seconds"] - 2 * per_check <= 0.02 * recheck["engine_seconds"]


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
