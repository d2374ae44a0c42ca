"""Layer setups: which weights' Weight Modifiers are extracted.

A *weight layer* is a module whose `weight` parameter has two or more dimensions (Conv, Linear): the
layers whose per-sample update gMINT reads. Presets pick them by depth, in the order the forward pass
first uses each weight when an example input is given (registration order can differ, e.g. a ViT head
defined first); a weight the forward never uses is never picked by a preset.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from gmint.errors import UnknownNameError
from gmint.features.tracing import ParameterUses
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
    """Names of the `weight` parameters of all weight layers, in forward order when possible (weights the
    forward never uses come last)."""
    used, unused = _split_by_use(model, example_input)
    return used + unused


def _weights(model: nn.Module) -> list[str]:
    """Weight-layer weights in registration order."""
    return [f"{name}.weight" if name else "weight" for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2]


def _split_by_use(model: nn.Module, example_input: torch.Tensor | None) -> tuple[list[str], list[str]]:
    """(weights the forward uses, ordered by first use; weights it never uses). A weight is ordered by its
    own first use, not its module's first call: `nn.MultiheadAttention` uses `out_proj.weight` without ever
    calling `out_proj`. Without an example input (or for TorchScript, which runs outside Python) every
    weight counts as used, in registration order."""
    weights = _weights(model)
    if example_input is None or isinstance(model, torch.jit.ScriptModule):
        return weights, []
    params = dict(model.named_parameters())
    uses = ParameterUses({n: params[n] for n in weights})
    with torch.no_grad(), uses:
        model(example_input[:1])
    used = sorted(uses.first_use, key=uses.first_use.__getitem__)
    return used, [n for n in weights if n not in uses.first_use]


def match_setup(setup: str | Sequence[str], names: Sequence[str],
                presets: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """What each item of a layer setup selects: the one reading of the setup grammar, shared by extraction
    (over a model's parameter names) and MINT training (over a store's feature names).

    An item is a preset (the names `presets` gives it), one of `names` itself, or a glob over `names`.

    Args:
        setup: one comma-separated string (`"entry,fc.*"`) or its items as a list.
        names: what an item may name or match.
        presets: preset → the names it stands for.

    Returns:
        Each item → the names it selects, in the order selected; [] for an item that selects nothing (the
        caller says where it looked).
    """
    items = [s.strip() for s in setup.split(",")] if isinstance(setup, str) else list(setup)
    return {item: list(presets[item]) if item in presets else [item] if item in names
            else [n for n in names if fnmatch.fnmatchcase(n, item)] for item in items}


def resolve_layers(model: nn.Module, setup: str | Sequence[str],
                   example_input: torch.Tensor | None = None) -> list[str]:
    """Turn a preset name, a comma list, or parameter names / globs into parameter names.

    Args:
        model: the audited model.
        setup: `entry` | `middle` | `output` | `combined`, or names/globs such as `features.0.weight`,
            `layer4.*.conv2.weight`, given as a list or one comma-separated string (see `match_setup`).
        example_input: one batch, used to order layers by forward execution.

    Returns:
        Parameter names in forward order, without duplicates.

    Raises:
        UnknownNameError: a name or glob that matches no parameter, or a model without weight layers.
    """
    weights, unused = _split_by_use(model, example_input)
    if not weights:
        raise UnknownNameError("the model has no weight layers (Conv/Linear) to audit")
    presets = {name: LAYER_PRESETS.get(name)(weights) for name in LAYER_PRESETS}
    matches = match_setup(setup, [name for name, _ in model.named_parameters()], presets)
    for item, found in matches.items():
        if not found:
            raise UnknownNameError(
                f"layer '{item}' matches no parameter; use a preset {LAYER_PRESETS.names()} or a "
                f"parameter name such as {weights[0]!r} (see `gmint layers`)")
    order = {n: i for i, n in enumerate(weights + unused)}
    names = list(dict.fromkeys(n for found in matches.values() for n in found))
    return sorted(names, key=lambda n: order.get(n, len(order)))


def preset_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, list[str]]:
    """Every preset's parameter names for this model; stores record it so a MINT classifier can pick
    `entry`, `middle`, ... out of a store extracted with more layers."""
    weights, _ = _split_by_use(model, example_input)
    return {name: LAYER_PRESETS.get(name)(weights) for name in LAYER_PRESETS.names()} if weights else {}
