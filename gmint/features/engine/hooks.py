"""Fast engine: one batched forward and backward; reductions computed from activations and output gradients.

What each layer type's parameters and reductions are computed from (its input and output gradient) is
registered per layer type on `GRAD_FORMULAS` (`gmint.features.engine.formulas`, with the maths); this
module captures those inputs and gradients, checks that the formulas apply, and falls back where not.

The formulas hold under conditions `plan_hooks` checks on the model at hand, with two small probe
batches: each selected parameter is a Linear/Conv2d weight or bias used exactly once, by its own module
(a weight also used functionally elsewhere is not); the module runs once per forward with the batch on
dimension 0 of its input and output (found by running two batch sizes, so a sequence-first layout whose
length happens to equal the batch is not mistaken for it); no module mixes samples in eval mode
(BatchNorm without running statistics) and no global forward hook may rewrite outputs. Parameters that
fail are computed by the `vmap` engine (one warning each); a model that mixes samples is handed to it
whole. Per batch, output gradients are taken at each layer's gradient edge recorded before any user
forward hook ran (our capture hook is prepended), so hooks that replace the output and in-place ops on it
afterwards (ReLU(inplace=True)) cannot change them; captured inputs are checked with version counters.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.func import functional_call

from gmint.features.engine.base import (
    LOSSES,
    EngineResult,
    checked_batch,
    model_unchanged,
    per_sample_losses,
    predictions,
    register_engine,
    sample_mixing_modules,
)
from gmint.features.engine.formulas import formulas_for
from gmint.features.engine.vmap import vmap_engine
from gmint.features.reduce import NamedReduction, Reduction
from gmint.features.tracing import ParameterUses


class HooksFallbackWarning(UserWarning):
    """A selected parameter is computed by the slower `vmap` engine instead."""


class DegenerateReductionWarning(UserWarning):
    """A reduction is numerically meaningless for a layer (e.g. MEAN of a Linear fed by a LayerNorm)."""




def unsupported_parameters(model: nn.Module, layers: list[str]) -> dict[str, str]:
    """Selected parameters the hooks engine cannot compute exactly, with the reason (known before running)."""
    owners = _owners(model)
    # A parameter held by several modules (a tied weight) is used by each: its gradient sums every use,
    # while the formulas see its own module's call only. Like a weight also used functionally elsewhere
    # (found by `plan_hooks`' probe), it is left to `vmap`, which differentiates the parameter itself.
    holders: dict[int, list[tuple[str, nn.Module]]] = {}
    for module_name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            holders.setdefault(id(p), []).append((module_name or type(model).__name__, module))
    reasons = {}
    for name in layers:
        _, module, kind = owners[name]
        others = [other for other, holder in holders[id(getattr(module, kind))] if holder is not module]
        formulas = formulas_for(module)
        if formulas is None or kind not in formulas.gradients:
            reasons[name] = f"{type(module).__name__}.{kind} has no hook formula"
        elif others:
            reasons[name] = (f"the parameter is shared with {', '.join(others)} (tied), so its gradient sums "
                             f"the uses of {len(others) + 1} modules")
    return reasons


def _owners(model: nn.Module) -> dict[str, tuple[str, nn.Module, str]]:
    """Parameter name → (module name, module holding it directly, its attribute name)."""
    return {f"{module_name}.{attr}" if module_name else attr: (module_name, module, attr)
            for module_name, module in model.named_modules()
            for attr, _ in module.named_parameters(recurse=False)}


def _layer_input(args: tuple, kwargs: dict) -> Tensor:
    """A Linear/Conv2d's input, passed positionally or as `input=`."""
    return args[0] if args else kwargs["input"]


@dataclass
class Capture:
    """What one selected layer saw in the forward pass."""

    calls: int = 0
    a: Tensor | None = None
    a_version: int = 0
    edge: GradientEdge | None = None
    zero_grad: Tensor | None = None       # (0-stride) zeros shaped like the output, for unused outputs
    view_out: Tensor | None = None        # the output when it is a view: in-place ops on it re-route grads
    out_version: int = 0

    def problem(self, layer: nn.Module, batch: int) -> str | None:
        """Why the hook formulas would be wrong for this layer in this batch, or None."""
        if self.calls != 1:
            return f"it ran {self.calls} times in one forward pass"
        assert self.a is not None
        if self.edge is None:
            return "its output does not require grad (computed under no_grad?)"
        formulas = formulas_for(layer)
        if formulas is None or not formulas.batched(self.a) or self.a.shape[0] != batch:
            return f"its input {tuple(self.a.shape)} does not carry the batch of {batch} on dim 0"
        if self.a._version != self.a_version:
            return "its input was modified in place after the layer ran"
        # An in-place op on a plain output keeps the recorded gradient edge exact; on a view it rebases
        # the view's history onto its base and the edge receives no gradient.
        if self.view_out is not None and self.view_out._version != self.out_version:
            return "its output (a view) was modified in place"
        return None

    def record(self, a: Tensor, out: Tensor) -> None:
        """Keep the layer's input `a` and the gradient edge of its own output `out` (hook callback)."""
        self.calls += 1
        self.a, self.a_version = a, a._version
        self.edge = get_gradient_edge(out) if out.requires_grad else None
        self.zero_grad = out.new_zeros(()).expand(out.shape)
        self.view_out, self.out_version = (out if out._is_view() else None), out._version


def _requires_grad_input(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Forward pre-hook: give a selected layer an input that requires grad, so its output has a gradient
    edge while every parameter stays detached (no graph upstream, no parameter gradients)."""
    a = _layer_input(args, kwargs)
    if not (torch.is_grad_enabled() and a.is_floating_point() and not a.requires_grad):
        return None
    a = a.detach().requires_grad_()
    return ((a, *args[1:]), kwargs) if args else (args, {**kwargs, "input": a})


def traced_forward(model: nn.Module, modules: dict[str, nn.Module], captures: dict[str, Capture],
                   x: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
    """The model's output, every parameter detached, recording each of `modules` into `captures`.

    Autograd records from the first of `modules` on only: the graph of a plain backward to those
    layers, without parameter gradients. The capture hook runs before any forward hook of the user's
    (which may replace the output), so it records the layer's own output.

    Args:
        model: the audited model.
        modules: module name → selected layer to record.
        captures: module name → where its input and output edge are recorded.
        x: (B, ...) inputs.
        params: the detached parameters to run with (default: the model's own, detached).
    """
    handles = []
    for module_name, module in modules.items():
        handles.append(module.register_forward_pre_hook(_requires_grad_input, with_kwargs=True))
        handles.append(module.register_forward_hook(
            lambda m, args, kwargs, out, capture=captures[module_name]: capture.record(
                _layer_input(args, kwargs), out), with_kwargs=True, prepend=True))
    if params is None:
        params = {n: p.detach() for n, p in model.named_parameters()}
    try:
        with model_unchanged(model):
            return functional_call(model, params, (x,), strict=False)
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class HooksPlan:
    """What the hook formulas may compute on one model: the selected parameters that must come from the
    `vmap` engine instead (with why), or, when the whole model breaks a condition, why hooks cannot run."""

    layers: tuple[str, ...]
    fallback: dict[str, str]
    unusable: str | None = None

    @property
    def complete(self) -> bool:
        """Every selected parameter takes the hook formulas."""
        return self.unusable is None and not self.fallback

    @property
    def notes(self) -> dict[str, str]:
        """Parameter → why it is computed by `vmap` instead."""
        return dict.fromkeys(self.layers, self.unusable) if self.unusable else dict(self.fallback)


def _probe(model: nn.Module, modules: dict[str, nn.Module], layers: list[str], x: Tensor
           ) -> tuple[dict[str, Capture], ParameterUses]:
    """One traced forward of `x` watching the selected parameters' uses."""
    owners = _owners(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    running: set[int] = set()
    handles = []
    for module in modules.values():
        handles.append(module.register_forward_pre_hook(lambda m, args: running.add(id(m))))
        handles.append(module.register_forward_hook(lambda m, args, out: running.discard(id(m)), always_call=True))
    uses = ParameterUses({n: params[n] for n in layers}, lambda n: id(owners[n][1]) in running)
    captures = {name: Capture() for name in modules}
    try:
        with torch.enable_grad(), uses:
            traced_forward(model, modules, captures, x, params)
    finally:
        for h in handles:
            h.remove()
    return captures, uses


def _batch_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """Two batches of different sizes (2 and 3 samples) from `x`, repeating samples if it has fewer."""
    index = torch.arange(3, device=x.device) % len(x)
    return x[index[:2]], x[index]


def plan_hooks(model: nn.Module, layers: list[str], x: Tensor) -> HooksPlan:
    """Check the conditions the hook formulas need on this model, with two probe batches drawn from `x`.

    Returns:
        The parameters to compute with `vmap` and why; `unusable` when no parameter may use the formulas
        (samples mix, or global forward hooks may rewrite any output).
    """
    mixing = sample_mixing_modules(model)
    if mixing:
        return HooksPlan(tuple(layers), {}, f"{', '.join(mixing[:3])} mix samples in eval mode (BatchNorm without "
                                            "running statistics), so a batch's Weight Modifiers differ from each "
                                            "sample's own")
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return HooksPlan(tuple(layers), {},
                         "global module forward hooks are registered and may rewrite any layer's output")
    owners = _owners(model)
    fallback = unsupported_parameters(model, layers)
    hooked = {owners[n][0]: owners[n][1] for n in layers if n not in fallback}
    if not hooked:
        return HooksPlan(tuple(layers), fallback)
    small, large = _batch_pair(x)
    (shapes_small, _), (shapes_large, uses) = _probe(model, hooked, layers, small), \
        _probe(model, hooked, layers, large)
    for name in layers:
        if name in fallback:
            continue
        module_name, module, _ = owners[name]
        a, b = shapes_small[module_name], shapes_large[module_name]
        if a.calls != 1 or b.calls != 1:
            fallback[name] = f"it ran {b.calls} times in one forward pass"
        elif not _batch_first(a, b, 2, 3):
            assert a.a is not None and b.a is not None
            fallback[name] = (f"its input {tuple(a.a.shape)} / {tuple(b.a.shape)} at batch 2 / 3 does not carry "
                              "the batch on dimension 0 alone")
        elif uses.foreign[name]:
            outside = ", ".join(dict.fromkeys(uses.foreign[name]))
            fallback[name] = (f"the parameter is used {uses.own[name]} time(s) by {module_name} and also outside "
                              f"it ({outside})")
        elif uses.own[name] != 1:
            fallback[name] = (f"its module {module_name} uses it {uses.own[name]} times in one call (the formulas "
                              "need one)")
    return HooksPlan(tuple(layers), fallback)


def _batch_first(small: Capture, large: Capture, n_small: int, n_large: int) -> bool:
    """The layer's input and output have the batch on dimension 0 and nowhere else: shapes (n, *rest)
    with the same rest at both batch sizes."""
    if small.a is None or large.a is None or small.zero_grad is None or large.zero_grad is None:
        return False
    pairs = [(small.a.shape, large.a.shape), (small.zero_grad.shape, large.zero_grad.shape)]
    return all(len(s) >= 1 and s[0] == n_small and b[0] == n_large and s[1:] == b[1:] for s, b in pairs)


def _fallback_notice(name: str, reason: str) -> None:
    warnings.warn(f"hooks engine: {name} computed with the vmap engine: {reason}", HooksFallbackWarning,
                  stacklevel=3)


@register_engine("hooks", rank=0, prepare=plan_hooks)
def hooks_engine(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                 loss: str = "cross_entropy", chunk_size: int | None = 64,
                 plan: HooksPlan | None = None) -> EngineResult:
    """Same contract as `vmap_engine`: reduced per-sample Weight Modifiers of `layers` for (x, y).

    Args:
        model: audited model in eval mode.
        layers: parameter names; Linear/Conv2d weights and biases take the fast path where `plan_hooks`
            allows it, others `vmap`.
        reduction: a `NamedReduction` (from `parse_reduction`) enables the exact shortcuts for its name;
            any other callable is applied to materialised Weight Modifiers.
        x: (B, ...) inputs.
        y: (B,) integer labels.
        loss: name in LOSSES (summed over the batch; samples do not interact in eval mode).
        chunk_size: samples per materialised Weight Modifier block (and per vmap chunk in fallbacks).
        plan: the result of `plan_hooks` for this model and layers (an extraction plans once); planned
            here when not given.
    """
    y = checked_batch(model, layers, y, chunk_size)
    plan = plan or plan_hooks(model, layers, x)
    if plan.unusable:
        _fallback_notice(", ".join(layers), plan.unusable)
        return vmap_engine(model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size)
    loss_fn = LOSSES.get(loss)
    owners = _owners(model)
    fallback = dict(plan.fallback)
    hooked = {owners[n][0]: owners[n][1] for n in layers if n not in fallback}
    captures = {module_name: Capture() for module_name in hooked}
    with torch.enable_grad():
        out = traced_forward(model, hooked, captures, x)
        total = loss_fn(out, y)

    problems = {m: captures[m].problem(module, len(x)) for m, module in hooked.items()}
    for name in layers:
        if name not in fallback and (reason := problems[owners[name][0]]):
            fallback[name] = reason
    ready = [m for m in hooked if problems[m] is None]
    edges = [edge for m in ready if (edge := captures[m].edge) is not None]  # every ready layer has one
    grads = torch.autograd.grad(total, edges, allow_unused=True) if edges and total.requires_grad \
        else (None,) * len(ready)

    features = {}
    with torch.no_grad():
        for m, g in zip(ready, grads, strict=True):
            capture = captures[m]
            assert capture.a is not None and capture.zero_grad is not None
            for name in layers:
                if owners[name][0] == m and name not in fallback:
                    features[name] = _reduce(name, hooked[m], owners[name][2], capture.a.detach(),
                                             capture.zero_grad if g is None else g, reduction, chunk_size)
        sample_losses = per_sample_losses(out.detach(), y, loss)
    if fallback:
        for name, reason in fallback.items():
            _fallback_notice(name, reason)
        features.update(vmap_engine(model, list(fallback), reduction, x, y, loss=loss,
                                    chunk_size=chunk_size).features)
    return EngineResult({n: features[n] for n in layers}, sample_losses, predictions(out.detach()))


def _reduce(name: str, layer: nn.Module, kind: str, a: Tensor, g: Tensor, reduction: Reduction,
            chunk_size: int | None) -> Tensor:
    """One parameter's (B, d) features: an exact shortcut where registered, else materialise and reduce."""
    formulas = formulas_for(layer)
    assert formulas is not None  # `unsupported_parameters` sent every other layer to vmap
    if kind == "weight" and isinstance(reduction, NamedReduction):
        degenerate = formulas.degenerate.get(reduction.name)
        if degenerate is not None and (why := degenerate(a)):
            warnings.warn(f"reduction '{reduction.name}' is degenerate for {name}: {why}",
                          DegenerateReductionWarning, stacklevel=3)
        reducer = formulas.reducers.get(reduction.name)
        if reducer is not None and (reduced := reducer(layer, a, g)) is not None:
            return reduced
    gradient = formulas.gradients[kind]
    step = chunk_size or len(a)
    return torch.cat([reduction(gradient(layer, a[i:i + step], g[i:i + step]), name)
                      for i in range(0, len(a), step)])
