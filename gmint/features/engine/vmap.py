"""Reference engine: torch.func `functional_call` + `grad` + `vmap`, one chunk of samples at a time.

Only the selected parameters are differentiated (the rest are read from the module), so no gradient
is computed and thrown away. Exact for any differentiable model in eval mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from gmint.errors import Remedy, UnsupportedModelError
from gmint.features.engine.base import (
    LOSSES,
    EngineResult,
    checked_batch,
    model_unchanged,
    predictions,
    register_engine,
)
from gmint.features.reduce import Reduction


@register_engine("vmap", rank=1)
def vmap_engine(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                loss: str = "cross_entropy", chunk_size: int | None = 64) -> EngineResult:
    """Reduced per-sample Weight Modifiers of `layers` for the batch (x, y).

    Args:
        model: audited model in eval mode.
        layers: parameter names to differentiate.
        reduction: applied per chunk, so full Weight Modifiers never exist for more than one chunk.
        x: (B, ...) inputs.
        y: (B,) integer labels.
        loss: name in LOSSES.
        chunk_size: samples per vmap call (bounds memory); None for the whole batch at once.
    """
    y = checked_batch(model, layers, y, chunk_size)
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedModelError("torch.func cannot run TorchScript models", Remedy.NAIVE_ENGINE)
    loss_fn = LOSSES.get(loss)
    params = {n: p.detach() for n, p in model.named_parameters() if n in set(layers)}

    def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out = functional_call(model, p, (xi.unsqueeze(0),), strict=False)
        value = loss_fn(out, yi.unsqueeze(0))
        return value, (value.detach(), out.squeeze(0).detach())

    per_sample = vmap(grad(sample_loss, has_aux=True), in_dims=(None, 0, 0), randomness="error")
    step = chunk_size or len(x)
    features: dict[str, list[Tensor]] = {n: [] for n in layers}
    losses, preds = [], []
    # Outer no_grad: frozen parameters read from the module must not build an autograd graph;
    # torch.func.grad tracks the selected ones regardless.
    with torch.no_grad(), model_unchanged(model):
        for start in range(0, len(x), step):
            grads, (sample_losses, outputs) = per_sample(params, x[start:start + step], y[start:start + step])
            for name in layers:
                features[name].append(reduction(grads[name], name))
            losses.append(sample_losses)
            preds.append(predictions(outputs))
    return EngineResult({n: torch.cat(f) for n, f in features.items()}, torch.cat(losses), torch.cat(preds))

