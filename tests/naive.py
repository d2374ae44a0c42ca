"""The naive loop (one sample at a time, plain autograd) as the tests' reference: every engine's result on a
batch, and every feature a store holds, is compared with it here."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gmint.data.base import ImageSet
from gmint.data.transforms import Transform
from gmint.features.engine import ENGINES
from gmint.features.engine.base import EngineResult
from gmint.features.reduce import Reduction, parse_reduction


def assert_engine_equals_naive(model: nn.Module, x: torch.Tensor, y: torch.Tensor, engine: str, layers: list[str],
                               reduce: Reduction, *, rtol: float = 1e-9, atol: float = 1e-12,
                               loss: str = "cross_entropy", **options: object) -> EngineResult:
    """Runs `engine` (with `options`, e.g. chunk_size) and the naive loop on one batch, and asserts the same
    layers in the same order with equal features, equal per-sample losses and equal predictions. Warnings are
    the caller's to filter. Returns the engine's result."""
    ref = ENGINES.get("naive")(model, layers, reduce, x, y, loss=loss)
    got = ENGINES.get(engine)(model, layers, reduce, x, y, loss=loss, **options)
    assert list(got.features) == list(ref.features) == layers
    for name in layers:
        torch.testing.assert_close(got.features[name], ref.features[name], rtol=rtol, atol=atol,
                                   msg=f"{engine} {name}")
    torch.testing.assert_close(got.loss, ref.loss, rtol=rtol, atol=atol)
    assert torch.equal(got.pred, ref.pred)
    return got


def naive_mean(module: nn.Module, data: ImageSet, rows: np.ndarray, transform: Transform,
               layers: list[str]) -> dict[str, np.ndarray]:
    """The naive loop's MEAN features (one per output filter) of the dataset rows `rows`: what an extraction
    of those rows must have stored."""
    x, y = transform(data.images[rows]), torch.from_numpy(data.labels[rows])
    ref = ENGINES.get("naive")(module, layers, parse_reduction("mean"), x, y)
    return {n: f.numpy() for n, f in ref.features.items()}
