"""Ground truth: one forward and one autograd backward per sample. Slow; used by tests, benchmarks and the
self-check every extraction runs on its first batch (gmint.features.engine.selfcheck)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from gmint.features.engine.base import (
    LOSSES,
    EngineResult,
    check_auditable,
    labels,
    model_unchanged,
    predictions,
    register_engine,
)
from gmint.features.reduce import Reduction


@contextmanager
def _differentiable(params: list[nn.Parameter]) -> Iterator[None]:
    """Selected parameters require grad for the duration (frozen layers are audited too), then are put
    back as they were. Flipping the flag works for TorchScript models, where functional_call does not."""
    frozen = [p for p in params if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def naive_gradients(model: nn.Module, layers: list[str], x: Tensor, y: Tensor, *,
                    loss: str = "cross_entropy") -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Unreduced per-sample Weight Modifiers by the definition: the model run on each sample alone.

    Returns:
        parameter name → (B, *param.shape) gradients, (B,) losses, (B,) predictions.
    """
    check_auditable(model, layers)
    loss_fn = LOSSES.get(loss)
    y = labels(y)
    named = dict(model.named_parameters())
    params = [named[n] for n in layers]
    grads: dict[str, list[Tensor]] = {n: [] for n in layers}
    losses, preds = [], []
    with model_unchanged(model), _differentiable(params), torch.enable_grad():
        for i in range(len(x)):
            out = model(x[i:i + 1])
            value = loss_fn(out, y[i:i + 1])
            for name, g in zip(layers, torch.autograd.grad(value, params, allow_unused=True), strict=True):
                grads[name].append(torch.zeros_like(named[name]) if g is None else g)
            losses.append(value.detach())
            preds.append(predictions(out.detach()))
    return {n: torch.stack(g) for n, g in grads.items()}, torch.stack(losses), torch.cat(preds)


@register_engine("naive", rank=2, torchscript=True)
def naive_engine(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                 loss: str = "cross_entropy", chunk_size: int | None = None) -> EngineResult:
    """Same contract as `vmap_engine`; `chunk_size` is accepted and ignored (one sample at a time)."""
    grads, losses, preds = naive_gradients(model, layers, x, y, loss=loss)
    return EngineResult({n: reduction(g, n) for n, g in grads.items()}, losses, preds)
