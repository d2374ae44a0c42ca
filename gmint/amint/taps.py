"""Where the aMINT head reads the audited model: tap modules, their presets per architecture, and a collector.

A tap is a named submodule whose output (an intermediate activation) feeds the MINT head. Presets put the
taps where the aMINT authors placed them (ResNet after stages 2 and 3, DenseNet after transitions 2 and 3,
Xception after the middle flow, MobileNet V1 after its 256- and 512-channel stages); the ViT taps the token
sequences of its two middle blocks. Any model can be tapped by module names instead.

The collector keeps each tap's output *with its autograd graph*: during joint training the head's loss
flows back through the taps into the audited model, which is what makes the model auditable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from gmint.errors import InputError
from gmint.registry import Registry

# A preset maps the built model (some depend on its depth) to the names of its tap modules.
TapPreset = Callable[[nn.Module], tuple[str, ...]]
TAP_PRESETS: Registry[TapPreset] = Registry("tap preset")


def _fixed(*names: str) -> TapPreset:
    return lambda model: names


for _arch in ("resnet18", "resnet50", "resnet101", "resnet100"):
    TAP_PRESETS.register(_arch)(_fixed("layer2", "layer3"))  # after stages 2 and 3
TAP_PRESETS.register("densenet121")(_fixed("features.transition2", "features.transition3"))
TAP_PRESETS.register("xception")(_fixed("middle"))  # after the middle flow
# MobileNet V1: features = [stem conv, 13 separable blocks]; blocks 4-5 end the 256-channel stage and
# blocks 6-11 the 512-channel one (the `conv2` and `conv3` stages of the authors' pytorch-cifar100 layout).
TAP_PRESETS.register("mobilenet")(_fixed("features.5", "features.11"))
# MobileNetV2 (not in the authors' set): the ends of its 32- and 96-channel stages, at the same depths.
TAP_PRESETS.register("mobilenet_v2")(_fixed("features.6", "features.13"))
# small_cnn: after each conv-BN-ReLU block; mlp: after each hidden layer's ReLU.
TAP_PRESETS.register("small_cnn")(_fixed("2", "5"))
TAP_PRESETS.register("mlp")(_fixed("2", "4"))


@TAP_PRESETS.register("vit")
def _vit_taps(model: nn.Module) -> tuple[str, ...]:
    """The two middle transformer blocks (5 and 6 of 12; 2 and 3 of 6): their (B, N, dim) token outputs."""
    blocks = getattr(model, "blocks", None)
    depth = len(blocks) if isinstance(blocks, nn.Sequential) else 0
    if depth < 2:
        raise InputError(f"the vit tap preset needs at least 2 blocks, the model has {depth}")
    return f"blocks.{depth // 2 - 1}", f"blocks.{depth // 2}"


def resolve_taps(model: nn.Module, arch: str | None, taps: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The tap module names for `model`: the given ones (comma-separated or a sequence), else `arch`'s preset.

    Args:
        model: the audited model.
        arch: its zoo architecture (the preset's key), or None for a user model.
        taps: module names (as `model.named_modules()` spells them), or None for the preset.

    Raises:
        InputError: no names and no preset, an unknown or repeated module name, or the model itself.
    """
    if taps is None or (isinstance(taps, str) and not taps.strip()):
        if arch is None or arch not in TAP_PRESETS:
            raise InputError(f"no tap preset for {'this model' if arch is None else repr(arch)} (presets: "
                             f"{', '.join(TAP_PRESETS.names())}); name the modules to tap (taps), e.g. layer2,layer3")
        names = TAP_PRESETS.get(arch)(model)
    else:
        names = tuple(t.strip() for t in (taps.split(",") if isinstance(taps, str) else taps) if t.strip())
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules or n == ""]
    if unknown:
        near = [m for m in modules if m and "." not in m][:12]
        raise InputError(f"no module named {unknown[0]!r} to tap; top-level modules: {', '.join(near)}")
    if len(set(names)) < len(names):
        raise InputError(f"a tap is named twice: {', '.join(names)}")
    return tuple(names)


class TapCollector:
    """Forward hooks on the tap modules; `outputs()` returns their outputs of the last forward, in tap order.

    Each output keeps its graph (gradients flow from the head into the model). A tap module that runs more
    than once per forward, or whose output is modified in place afterwards (a later in-place op would hand
    the head a different tensor than the one the module produced), is refused.
    """

    def __init__(self, model: nn.Module, taps: Sequence[str]) -> None:
        self.taps = tuple(taps)
        self._modules = dict(model.named_modules())
        self._captured: dict[str, list[tuple[torch.Tensor, int]]] = {}

    @contextmanager
    def attached(self) -> Iterator[TapCollector]:
        """Hooks on while inside the block, removed after it (even on an error): the model is left as found."""
        handles = [self._modules[name].register_forward_hook(self._hook(name)) for name in self.taps]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def capture(module: nn.Module, inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise InputError(f"tap {name!r} returns a {type(output).__name__}, not a tensor; tap a module "
                                 "that outputs one")
            self._captured.setdefault(name, []).append((output, output._version))

        return capture

    def clear(self) -> None:
        """Forget the captured outputs (call before each forward)."""
        self._captured = {}

    def outputs(self) -> list[torch.Tensor]:
        """The taps' outputs of the forward since the last `clear`, in tap order.

        Raises:
            InputError: a tap did not run, ran more than once, or its output was changed in place.
        """
        result = []
        for name in self.taps:
            seen = self._captured.get(name, [])
            if len(seen) != 1:
                raise InputError(f"tap {name!r} ran {len(seen)} times in one forward pass; tap a module that "
                                 "runs exactly once")
            tensor, version = seen[0]
            if tensor._version != version:
                raise InputError(f"the output of tap {name!r} is modified in place later in the forward pass "
                                 "(e.g. by ReLU(inplace=True)); tap the module after that operation")
            result.append(tensor)
        return result

    def __call__(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, tap outputs) of one forward pass of `model` on `x` (hooks must be attached)."""
        self.clear()
        logits = model(x)
        return logits, self.outputs()


def tap_shapes(model: nn.Module, taps: Sequence[str], input_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """Per-sample output shape of each tap — (C, H, W), (N, dim) or (F,) — from one forward of two zero images
    in eval mode (the model's mode is restored)."""
    was_training = model.training
    collector = TapCollector(model, taps)
    param = next(model.parameters(), None)
    x = torch.zeros(2, *input_shape, dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    try:
        model.eval()
        with torch.no_grad(), collector.attached():
            _, outputs = collector(model, x)
    finally:
        model.train(was_training)
    return [tuple(t.shape[1:]) for t in outputs]
