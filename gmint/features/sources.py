"""Feature sources: what a store's features are. All write the same store format, so every MINT
classifier, metric and report works on each of them and results compare like with like.

- `gradient` (gMINT): reduced per-sample Weight Modifiers of the selected layers, from an engine.
- `activation` (the original MINT): the selected layers' output activations, reduced per channel
  by the same reductions (`mean` = one number per output filter), stored as `<module>.output`.
- `output` (classic membership signals): per-sample `loss`, `confidence` (max softmax), `entropy`
  of the softmax, and `grad_norm` (L2 norm of the Weight Modifier over the selected layers); one
  column each, for threshold baselines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gmint.errors import UnsupportedModelError
from gmint.features.engine import Engine, EngineResult, auto_engine, check_auditable
from gmint.features.engine.base import per_sample_losses, predictions, sample_mixing_modules
from gmint.features.reduce import Reduction, parse_reduction
from gmint.registry import Registry

# A source: (model, parameters, reduction, x, y, *, engine, loss, chunk_size) → EngineResult.
SourceFn = Callable[..., EngineResult]
# Selected parameters → the store's feature names for them.
FeatureNames = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class Source:
    """A feature source and the names it gives its features in a store."""

    run: SourceFn
    names: FeatureNames

    def __call__(self, *args: Any, **kwargs: Any) -> EngineResult:
        """Compute the features of one batch."""
        return self.run(*args, **kwargs)


SOURCES: Registry[Source] = Registry("feature source")
OUTPUT_SIGNALS = ("loss", "confidence", "entropy", "grad_norm")


def register_source(name: str, names: FeatureNames) -> Callable[[SourceFn], SourceFn]:
    """Decorator declaring a feature source in SOURCES with its feature names."""
    def add(run: SourceFn) -> SourceFn:
        SOURCES.register(name)(Source(run, names))
        return run

    return add


def activation_name(parameter: str) -> str:
    """Store name of the activation of the module owning `parameter` (`features.0.weight` → `features.0.output`)."""
    return parameter.rpartition(".")[0] + ".output"


@register_source("gradient", names=list)
def gradient_source(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                    engine: Engine = auto_engine, loss: str = "cross_entropy",
                    chunk_size: int | None = 64) -> EngineResult:
    """Reduced Weight Modifiers (gMINT)."""
    return engine(model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size)


@register_source("activation", names=lambda parameters: list(dict.fromkeys(map(activation_name, parameters))))
def activation_source(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                      engine: Engine = auto_engine, loss: str = "cross_entropy",
                      chunk_size: int | None = 64) -> EngineResult:
    """Reduced output activations of the modules owning `layers` (activation-MINT)."""
    check_auditable(model, layers)
    _refuse_sample_mixing(model)
    modules = dict(model.named_modules())
    captured: dict[str, Tensor] = {}
    handles = []
    for name in layers:
        owner = name.rpartition(".")[0]
        handles.append(modules[owner].register_forward_hook(
            lambda _m, _i, out, key=activation_name(name): captured.__setitem__(key, out.detach())))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    features = {key: reduction(act, key) for key, act in captured.items()}
    return EngineResult(features, per_sample_losses(out, y, loss), predictions(out))


@register_source("output", names=lambda parameters: list(OUTPUT_SIGNALS))
def output_source(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                  engine: Engine = auto_engine, loss: str = "cross_entropy",
                  chunk_size: int | None = 64) -> EngineResult:
    """Loss, confidence, entropy and Weight-Modifier norm, one column each (threshold baselines)."""
    _refuse_sample_mixing(model)
    grads = engine(model, layers, parse_reduction("l2"), x, y, loss=loss, chunk_size=chunk_size)
    with torch.no_grad():
        out = model(x)
    probs = torch.softmax(out, dim=-1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(dim=-1)
    grad_norm = torch.stack([g.pow(2).sum(dim=1) for g in grads.features.values()]).sum(dim=0).sqrt()
    columns = {"loss": grads.loss, "confidence": probs.amax(dim=-1), "entropy": entropy, "grad_norm": grad_norm}
    return EngineResult({k: v.reshape(-1, 1) for k, v in columns.items()}, grads.loss, grads.pred)


def _refuse_sample_mixing(model: nn.Module) -> None:
    """Sources that read a whole batch's forward pass cannot serve a model whose samples mix in it."""
    if mixing := sample_mixing_modules(model):
        raise UnsupportedModelError(f"{', '.join(mixing[:3])} mix samples in eval mode (BatchNorm without running "
                                    "statistics): this source reads a batched forward pass; use the gradient source")


