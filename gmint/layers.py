"""Layer setups: which weights' Weight Modifiers are extracted.

A *weight layer* is a module whose `weight` parameter has two or more dimensions (Conv, Linear): the
layers whose per-sample update gMINT reads. Presets pick them by depth, in forward-execution order
when an example input is given (registration order can differ, e.g. a ViT head defined first).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gmint.errors import UnknownNameError
from gmint.registry import Registry

# A preset chooses parameter names from the ordered list of weight-layer weights.
Preset = Callable[[list[str]], list[str]]
LAYER_PRESETS: Registry[Preset] = Registry("layer setup")


@LAYER_PRESETS.register("entry")
def _entry(weights: list[str]) -> list[str]:
    """The first weight layer."""
    return weights[:1]


@LAYER_PRESETS.register("middle")
def _middle(weights: list[str]) -> list[str]:
    """The weight layer at half depth (index ⌊n/2⌋ of n)."""
    return [weights[len(weights) // 2]]


@LAYER_PRESETS.register("output")
def _output(weights: list[str]) -> list[str]:
    """The last weight layer (the classifier)."""
    return weights[-1:]


@LAYER_PRESETS.register("combined")
def _combined(weights: list[str]) -> list[str]:
    """Entry, middle and output together (duplicates dropped for very shallow models)."""
    return list(dict.fromkeys(_entry(weights) + _middle(weights) + _output(weights)))


def weight_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """Names of the `weight` parameters of all weight layers, in forward order when possible."""
    modules = [(name, m) for name, m in model.named_modules()
               if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2]
    if example_input is not None and not isinstance(model, torch.jit.ScriptModule):  # no hooks on TorchScript
        modules = _forward_order(model, modules, example_input)
    return [f"{name}.weight" if name else "weight" for name, _ in modules]


def _forward_order(model: nn.Module, modules: list[tuple[str, nn.Module]],
                   example_input: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Sort modules by first call in one forward pass; modules never called keep their place at the end."""
    first_call: dict[str, int] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:  # returns None: a forward hook's return value replaces the output
            first_call.setdefault(name, len(first_call))
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in modules]
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
    never = len(modules)
    return sorted(modules, key=lambda item: first_call.get(item[0], never))


def resolve_layers(model: nn.Module, setup: str | Sequence[str],
                   example_input: torch.Tensor | None = None) -> list[str]:
    """Turn a preset name, a comma list, or parameter names / globs into parameter names.

    Args:
        model: the audited model.
        setup: `entry` | `middle` | `output` | `combined`, or names/globs such as `features.0.weight`,
            `layer4.*.conv2.weight`, given as a list or one comma-separated string.
        example_input: one batch, used to order layers by forward execution.

    Returns:
        Parameter names in forward order, without duplicates.

    Raises:
        UnknownNameError: a name or glob that matches no parameter, or a model without weight layers.
    """
    items = [s.strip() for s in setup.split(",")] if isinstance(setup, str) else list(setup)
    weights = weight_layers(model, example_input)
    if not weights:
        raise UnknownNameError("the model has no weight layers (Conv/Linear) to audit")
    params = dict(model.named_parameters())
    chosen: list[str] = []
    for item in items:
        if item in LAYER_PRESETS:
            chosen += LAYER_PRESETS.get(item)(weights)
        elif item in params:
            chosen.append(item)
        else:
            matches = [n for n in params if fnmatch.fnmatchcase(n, item)]
            if not matches:
                raise UnknownNameError(
                    f"layer '{item}' matches no parameter; use a preset {LAYER_PRESETS.names()} or a "
                    f"parameter name such as {weights[0]!r} (see `gmint layers`)")
            chosen += matches
    order = {n: i for i, n in enumerate(weights)}
    names = list(dict.fromkeys(chosen))
    return sorted(names, key=lambda n: order.get(n, len(order)))


def preset_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, list[str]]:
    """Every preset's parameter names for this model; stores record it so a MINT classifier can pick
    `entry`, `middle`, ... out of a store extracted with more layers."""
    weights = weight_layers(model, example_input)
    return {name: LAYER_PRESETS.get(name)(weights) for name in LAYER_PRESETS.names()} if weights else {}
