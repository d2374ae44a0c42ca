"""Ground truth: one forward and one autograd backward per sample. Slow; used by tests and benchmarks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gmint.engine.base import LOSSES, EngineResult, check_auditable, predictions
from gmint.reduce import Reduction


def naive_engine(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                 loss: str = "cross_entropy", chunk_size: int | None = None) -> EngineResult:
    """Same contract as `vmap_engine`; `chunk_size` is accepted and ignored (one sample at a time)."""
    check_auditable(model, layers)
    loss_fn = LOSSES.get(loss)
    named = dict(model.named_parameters())
    params = [named[n] for n in layers]
    grads: dict[str, list[Tensor]] = {n: [] for n in layers}
    losses, preds = [], []
    for i in range(len(x)):
        out = model(x[i:i + 1])
        value = loss_fn(out, y[i:i + 1])
        for name, g in zip(layers, torch.autograd.grad(value, params), strict=True):
            grads[name].append(g)
        losses.append(value.detach())
        preds.append(predictions(out.detach()))
    features = {n: reduction(torch.stack(g), n) for n, g in grads.items()}
    return EngineResult(features, torch.stack(losses), torch.cat(preds))
