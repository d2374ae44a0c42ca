"""Feature sources: what a store's features are. All write the same store format, so every MINT
classifier, metric and report works on each of them and results compare like with like.

- `gradient` (gMINT): reduced per-sample Weight Modifiers of the selected layers, from an engine.
- `activation` (the original MINT): the selected layers' output activations, reduced per channel
  by the same reductions (`mean` = one number per output filter), stored as `<module>.output`.
- `activation-maps` (the original MINT as published): the outputs of any selected modules (blocks,
  named modules, not only weight layers) as they are — activation maps (C × H × W) or embeddings —
  flattened, or average-pooled to a stated spatial size with the `pool:<h>x<w>` reduction to bound
  storage (any other reduction applies as for `activation`). Each feature's shape ((C, h, w), (T, D)
  or (D,)) is recorded in the store's `layer_shapes` under its module's name, so the CNN MINT can
  fold a row back into maps.
- `output` (classic membership signals): per-sample `loss`, `confidence` (max softmax), `entropy`
  of the softmax, and `grad_norm` (L2 norm of the Weight Modifier over the selected layers); one
  column each, for threshold baselines.

A source also says how a layer setup selects what it reads (`select`: parameters for the weight-layer
sources, modules for `activation-maps`), which presets a store records (`presets`) and the shape each
feature has before it is flattened (`shapes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gmint.errors import InputError, UnsupportedModelError
from gmint.features.engine import Engine, EngineResult, auto_engine, check_auditable
from gmint.features.engine.base import per_sample_losses, predictions, sample_mixing_modules
from gmint.features.layers import module_presets, preset_parameters, resolve_modules, resolve_parameters
from gmint.features.reduce import REDUCTIONS, NamedReduction, Reduction, parse_reduction
from gmint.registry import Registry

# A source: (model, parameters, reduction, x, y, *, engine, loss, chunk_size) → EngineResult.
SourceFn = Callable[..., EngineResult]
# Parameters (what a layer setup selected) → the store's feature names for them.
FeatureNames = Callable[[list[str]], list[str]]
# (model, layer setup, example input) → the parameters the source reads (parameter or module names).
Select = Callable[[nn.Module, str | Sequence[str], Tensor], list[str]]
# (model, example input) → preset → selected names, recorded in a store so a classifier can pick a preset.
Presets = Callable[[nn.Module, Tensor], dict[str, list[str]]]
# (model, parameters, reduction, example input) → parameter → shape of its feature before flattening.
Shapes = Callable[[nn.Module, list[str], NamedReduction, Tensor], dict[str, list[int]]]


def parameter_shapes(model: nn.Module, parameters: list[str], reduction: NamedReduction, example: Tensor
                     ) -> dict[str, list[int]]:
    """The selected parameters' shapes (what a Weight Modifier's filter structure is read from)."""
    return {n: list(p.shape) for n, p in model.named_parameters() if n in parameters}


@dataclass(frozen=True)
class Source:
    """A feature source, the names it gives its features in a store, and how a layer setup selects what it
    reads (weight parameters unless the source says otherwise)."""

    run: SourceFn
    names: FeatureNames
    select: Select = resolve_parameters
    presets: Presets = preset_parameters
    shapes: Shapes = parameter_shapes

    def __call__(self, *args: Any, **kwargs: Any) -> EngineResult:
        """Compute the features of one batch."""
        return self.run(*args, **kwargs)


SOURCES: Registry[Source] = Registry("feature source")
OUTPUT_SIGNALS = ("loss", "confidence", "entropy", "grad_norm")


def register_source(name: str, names: FeatureNames, **selection: Any) -> Callable[[SourceFn], SourceFn]:
    """Decorator declaring a feature source in SOURCES with its feature names (and, in `selection`, its own
    `select`, `presets` and `shapes` where it reads something other than weight parameters)."""
    def add(run: SourceFn) -> SourceFn:
        SOURCES.register(name)(Source(run, names, **selection))
        return run

    return add


def activation_name(parameter: str) -> str:
    """Store name of the activation of the module owning `parameter` (`features.0.weight` → `features.0.output`)."""
    return parameter.rpartition(".")[0] + ".output"


@register_source("gradient", names=list)
def gradient_source(model: nn.Module, parameters: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                    engine: Engine = auto_engine, loss: str = "cross_entropy",
                    chunk_size: int | None = 64) -> EngineResult:
    """Reduced Weight Modifiers (gMINT)."""
    return engine(model, parameters, reduction, x, y, loss=loss, chunk_size=chunk_size)


@register_source("activation", names=lambda parameters: list(dict.fromkeys(map(activation_name, parameters))))
def activation_source(model: nn.Module, parameters: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                      engine: Engine = auto_engine, loss: str = "cross_entropy",
                      chunk_size: int | None = 64) -> EngineResult:
    """Reduced output activations of the modules owning `parameters` (activation-MINT)."""
    check_auditable(model, parameters)
    _refuse_sample_mixing(model)
    modules = dict(model.named_modules())
    captured: dict[str, Tensor] = {}
    handles = []
    for name in parameters:
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


def module_output_name(module: str) -> str:
    """Store name of a module's output (`layer3.1` → `layer3.1.output`)."""
    return f"{module}.output"


def _capture(model: nn.Module, modules: list[str], x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """The outputs of `modules` (each module's first tensor output, taken before any forward hook of the
    user's changes it) and the model's output, in one forward pass without gradients."""
    named = dict(model.named_modules())
    captured: dict[str, Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, Tensor) and name not in captured:
                captured[name] = out.detach()
        return hook

    handles = [named[m].register_forward_hook(keep(m), prepend=True) for m in modules]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [m for m in modules if m not in captured]
    if missing:
        raise UnsupportedModelError(f"module {missing[0]} returned no tensor in the forward pass")
    return captured, out


def map_shapes(model: nn.Module, modules: list[str], reduction: NamedReduction, example: Tensor
               ) -> dict[str, list[int]]:
    """Each module's feature shape before flattening, from one forward pass on `example`: the map itself for
    `flat`, (C, h, w) for `pool:<h>x<w>`, the reduced width for any other reduction."""
    captured, _ = _capture(model, modules, example[:1])
    shapes = {}
    for name, act in captured.items():
        width = int(reduction(act, module_output_name(name)).shape[1])
        shape = list(act.shape[1:]) if reduction.name == "flat" else [width]
        if reduction.name == "pool" and act.dim() == 4:
            shape = [int(act.shape[1]), *_pool_size(reduction.spec.partition(":")[2], act)]
        elif reduction.name == "pool" and act.dim() == 3:
            shape = [width // int(act.shape[2]), int(act.shape[2])]
        shapes[name] = shape if math.prod(shape) == width else [width]
    return shapes


@register_source("activation-maps", names=lambda modules: [module_output_name(m) for m in modules],
                 select=resolve_modules, presets=module_presets, shapes=map_shapes)
def activation_map_source(model: nn.Module, modules: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                          engine: Engine = auto_engine, loss: str = "cross_entropy",
                          chunk_size: int | None = 64) -> EngineResult:
    """The outputs of `modules` (activation maps or embeddings), reduced (`flat`, `pool:<h>x<w>`, or per channel),
    from one forward pass in eval mode."""
    if model.training:
        raise UnsupportedModelError("activation maps need model.eval(): BatchNorm/dropout would mix samples")
    _refuse_sample_mixing(model)
    captured, out = _capture(model, modules, x)
    features = {module_output_name(m): reduction(captured[m], module_output_name(m)) for m in modules}
    return EngineResult(features, per_sample_losses(out, y, loss), predictions(out))


def _pool_size(arg: str, act: Tensor) -> tuple[int, int]:
    """`<h>x<w>` (or one number for a square), never larger than the map itself."""
    parts = arg.lower().split("x")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"reduction 'pool' needs a spatial size such as 'pool:4x4' or 'pool:2', got 'pool:{arg}'")
    h, w = int(parts[0]), int(parts[-1])
    return min(h, int(act.shape[2])), min(w, int(act.shape[3]))


@REDUCTIONS.register("pool")
def _pool_factory(arg: str | None, seed: int) -> Reduction:
    """(B, C·h·w): activation maps (B, C, H, W) average-pooled to at most h × w (`pool:<h>x<w>`), flattened;
    tokens (B, T, D) averaged along T to at most h·w tokens; a (B, D) embedding kept as it is. For activation
    sources only: a Weight Modifier has no map to pool."""
    if arg is None:
        raise InputError("reduction 'pool' needs a spatial size such as 'pool:4x4'")
    _pool_size(arg, torch.zeros(1, 1, 1, 1))  # a malformed size fails before any store exists

    def pool(act: Tensor, layer: str) -> Tensor:
        if act.dim() == 2:
            return act
        if act.dim() == 3:  # (B, T, D) tokens: T averaged down to at most h·w tokens
            h, w = _pool_size(arg, act.new_zeros(1, 1, act.shape[1], act.shape[1]))
            return F.adaptive_avg_pool1d(act.transpose(1, 2), min(h * w, int(act.shape[1]))).transpose(1, 2).flatten(1)
        if act.dim() != 4:
            raise InputError(f"pool:{arg} averages (B, C, H, W) activation maps; {layer} gives "
                             f"{tuple(act.shape[1:])} per sample (use flat or mean there, and the activation-maps "
                             "source for maps)")
        return F.adaptive_avg_pool2d(act, _pool_size(arg, act)).flatten(1)

    return pool


@register_source("output", names=lambda parameters: list(OUTPUT_SIGNALS))
def output_source(model: nn.Module, parameters: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                  engine: Engine = auto_engine, loss: str = "cross_entropy",
                  chunk_size: int | None = 64) -> EngineResult:
    """Loss, confidence, entropy and Weight-Modifier norm, one column each (threshold baselines)."""
    _refuse_sample_mixing(model)
    grads = engine(model, parameters, parse_reduction("l2"), x, y, loss=loss, chunk_size=chunk_size)
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


