"""Layer setups: which weights' Weight Modifiers are extracted.

A *weight layer* is a module whose `weight` parameter has two or more dimensions (Conv, Linear): the
layers whose per-sample update gMINT reads. Presets pick them by depth, in the order the forward pass
first uses each weight when an example input is given (registration order can differ, e.g. a ViT head
defined first); a weight the forward never uses is never picked by a preset.

A weight shared by several modules (tied: `model.head.weight = model.embed.weight`) is one parameter with one
gradient, the sum over its uses. It is named by its canonical name, the one `model.named_parameters()` lists
(where it was first registered, `embed.weight`): layer lists and presets count it once, at its first use,
any of its names selects it (`head.weight` too), and engines and stores know it by the canonical name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from gmint.errors import Remedy, UnknownNameError
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
    """Canonical names of the `weight` parameters of all weight layers, in forward order when possible
    (weights the forward never uses come last); a weight tied between layers is listed once, by the name
    `named_parameters()` gives it (see `parameter_aliases` for its other names)."""
    used, unused = _split_by_use(model, example_input)
    return used + unused


def parameter_aliases(model: nn.Module) -> dict[str, str]:
    """Every other name of a shared parameter → its canonical name.

    `named_parameters()` lists a parameter held in several places (a tied weight, a module registered under
    two names) once, under its first registration; the rest are the aliases, which a user may still type.
    `head.weight = embed.weight` gives `{"head.weight": "embed.weight"}`.
    """
    return {name: first for name, first in _canonical_names(model) if first != name}


def _canonical_names(model: nn.Module) -> list[tuple[str, str]]:
    """(name, canonical name) of every parameter name, in registration order, from one pass: each tensor is
    kept alive while its id is compared (a TorchScript module hands out a new wrapper per access, whose id a
    freed one could otherwise reuse)."""
    seen: dict[int, tuple[str, torch.Tensor]] = {}
    return [(name, seen.setdefault(id(p), (name, p))[0]) for name, p in model.named_parameters(remove_duplicate=False)]


def _weights(model: nn.Module) -> list[str]:
    """Weight-layer weights (a `weight` of two or more dimensions) in registration order, by canonical name,
    each once: a tied weight is one parameter, however many modules hold it."""
    shapes = {name: p.dim() for name, p in model.named_parameters(remove_duplicate=False)}
    return list(dict.fromkeys(first for name, first in _canonical_names(model)
                              if name.rpartition(".")[2] == "weight" and shapes[name] >= 2))


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


def resolve_parameters(model: nn.Module, setup: str | Sequence[str],
                       example_input: torch.Tensor | None = None) -> list[str]:
    """Turn a preset name, a comma list, or parameter names / globs into parameter names.

    Args:
        model: the audited model.
        setup: `entry` | `middle` | `output` | `combined`, or names/globs such as `features.0.weight`,
            `layer4.*.conv2.weight`, given as a list or one comma-separated string (see `match_setup`). Names
            and globs match every name of a tied parameter, its aliases included.
        example_input: one batch, used to order layers by forward execution.

    Returns:
        Canonical parameter names (a tied weight selected as `head.weight` comes back as the
        `embed.weight` that `named_parameters()` lists), in forward order, without duplicates.

    Raises:
        UnknownNameError: a name or glob that matches no parameter, or a model without weight layers.
    """
    weights, unused = _split_by_use(model, example_input)
    if not weights:
        raise UnknownNameError("the model has no weight layers (Conv/Linear) to audit")
    presets = {name: LAYER_PRESETS.get(name)(weights) for name in LAYER_PRESETS}
    aliases = parameter_aliases(model)
    matches = match_setup(setup, [name for name, _ in model.named_parameters(remove_duplicate=False)], presets)
    for item, found in matches.items():
        if not found:
            raise UnknownNameError(
                f"layer '{item}' matches no parameter; use a preset {LAYER_PRESETS.names()} or a "
                f"parameter name such as {weights[0]!r}", Remedy.LIST_LAYERS)
    order = {n: i for i, n in enumerate(weights + unused)}
    names = list(dict.fromkeys(aliases.get(n, n) for found in matches.values() for n in found))
    return sorted(names, key=lambda n: order.get(n, len(order)))


def preset_parameters(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, list[str]]:
    """Every preset's parameter names for this model; stores record it so a MINT classifier can pick
    `entry`, `middle`, ... out of a store extracted with more layers."""
    weights, _ = _split_by_use(model, example_input)
    return {name: LAYER_PRESETS.get(name)(weights) for name in LAYER_PRESETS.names()} if weights else {}


# -- modules: what activation sources read --------------------------------------------------------------
# Activation-MINT reads a module's output, and any module will do: a weight layer, a residual block, a pooling
# or a normalisation. A *block* is one step of the model's spine: its top-level children, with containers that
# only chain their children (nn.Sequential, nn.ModuleList) opened one level, in forward order.
MODULE_PRESETS = ("blocks", "penultimate", *LAYER_PRESETS.names())
_CONTAINERS = (nn.Sequential, nn.ModuleList)
# Modules that only pass their input on (reshaped, or unchanged in eval mode) add no depth of their own.
_PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


def _called_modules(model: nn.Module, example_input: torch.Tensor | None) -> dict[str, int]:
    """Module name → position of its first call in one forward pass on `example_input` (registration order
    without one, or for TorchScript), for the modules that return a tensor with the batch's first dimension."""
    modules = [(name, m) for name, m in model.named_modules() if name]
    if example_input is None or isinstance(model, torch.jit.ScriptModule):
        return {name: i for i, (name, _) in enumerate(modules)}
    order: dict[str, int] = {}
    started: dict[str, int] = {}
    batch = int(example_input[:1].shape[0])

    def pre(name: str) -> Callable[..., None]:
        def note(_m: nn.Module, _i: object) -> None:
            started.setdefault(name, len(started))
        return note

    def post(name: str) -> Callable[..., None]:
        def record(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.dim() >= 1 and out.shape[0] == batch and name not in order:
                order[name] = started[name]
        return record

    handles = [h for name, m in modules
               for h in (m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name)))]
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
    return order


def model_blocks(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """The model's blocks in forward order: top-level children, those that are containers (Sequential,
    ModuleList) opened one level, keeping the modules the forward calls and that return a batch of tensors.

    `small_cnn` gives its eleven layers (`0` … `10`), a ResNet `conv1, bn1, maxpool, layer1.0, …, avgpool, fc`,
    a ViT `patch_embed, blocks.0, …, norm, head`.
    """
    called = _called_modules(model, example_input)

    spine = [f"{name}.{inner}" if isinstance(child, _CONTAINERS) else name
             for name, child in model.named_children()
             for inner in ([n for n, _ in child.named_children()] if isinstance(child, _CONTAINERS) else [""])]
    modules = dict(model.named_modules())
    return sorted((b for b in spine if b in called and not isinstance(modules[b], _PASS_THROUGH)),
                  key=called.__getitem__)


def owner_module(parameter: str) -> str:
    """The module owning a parameter (`layer1.0.conv1.weight` → `layer1.0.conv1`)."""
    return parameter.rpartition(".")[0]


def module_presets(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, list[str]]:
    """Module presets: `blocks` (every block), `penultimate` (the block before the one holding the last weight
    layer: the embedding the classifier reads), and `entry`/`middle`/`output`/`combined` as the modules owning
    the preset weights."""
    blocks = model_blocks(model, example_input)
    weights, _ = _split_by_use(model, example_input)
    presets = {name: list(dict.fromkeys(owner_module(p) for p in LAYER_PRESETS.get(name)(weights)))
               for name in LAYER_PRESETS.names()} if weights else {}
    last = presets.get("output", [])
    holder = [i for i, b in enumerate(blocks) if last and (last[0] == b or last[0].startswith(b + "."))]
    penultimate = blocks[holder[0] - 1:holder[0]] if holder and holder[0] > 0 else blocks[-2:-1]
    return {"blocks": blocks, "penultimate": penultimate, **presets}


def resolve_modules(model: nn.Module, setup: str | Sequence[str],
                    example_input: torch.Tensor | None = None) -> list[str]:
    """Turn module presets, module names or globs over module names into module names, in forward order.

    Args:
        model: the audited model.
        setup: `blocks` | `penultimate` | `entry` | `middle` | `output` | `combined`, or module names/globs such as
            `layer3.1`, `features.*`, as a list or one comma-separated string (see `match_setup`).
        example_input: one batch, used to order modules by forward execution.

    Raises:
        UnknownNameError: an item that matches no module, or a module the forward never calls.
    """
    called = _called_modules(model, example_input)
    presets = module_presets(model, example_input)
    matches = match_setup(setup, [name for name, _ in model.named_modules() if name], presets)
    for item, found in matches.items():
        if not found:
            blocks = presets["blocks"]
            raise UnknownNameError(f"module '{item}' matches no module; use a preset {list(MODULE_PRESETS)} or a "
                                   f"module name such as {blocks[len(blocks) // 2]!r}", Remedy.LIST_MODULES)
        silent = [n for n in found if n not in called]
        if silent and not any(n in called for n in found):
            raise UnknownNameError(f"module '{silent[0]}' returns no batch of tensors in the forward pass; choose "
                                   "a module whose output is an activation")
    names = list(dict.fromkeys(n for found in matches.values() for n in found if n in called))
    return sorted(names, key=called.__getitem__)
