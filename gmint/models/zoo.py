"""Registry of audited-model architectures, all built for small inputs (8-64 px, 1 or 3 channels).

Every factory has the signature ``factory(in_channels, num_classes, image_size, *, width=1.0, **options)``
and returns an ``nn.Module`` mapping (B, C, H, W) float images to (B, num_classes) logits. `width`
multiplies channel counts so a CPU-scale variant keeps the architecture's topology.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from gmint.errors import InputError
from gmint.registry import Registry

Factory = Callable[..., nn.Module]
ARCHITECTURES: Registry[Factory] = Registry("architecture")


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """Channel count multiplied by `width`, rounded, never below `minimum`."""
    return max(minimum, int(round(channels * width)))


@ARCHITECTURES.register("small_cnn")
def small_cnn(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0) -> nn.Module:
    """Two conv blocks (conv-BN-ReLU) and a two-layer head: the demo's audited model."""
    c1, c2, hidden = scaled(16, width), scaled(32, width), scaled(64, width)
    pooled = max(1, image_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1),
        nn.BatchNorm2d(c1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.BatchNorm2d(c2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * pooled * pooled, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@ARCHITECTURES.register("mlp")
def mlp(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0) -> nn.Module:
    """Fully connected baseline: flatten, two hidden layers."""
    hidden = scaled(256, width)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden // 2),
        nn.ReLU(),
        nn.Linear(hidden // 2, num_classes),
    )


def build(arch: str, in_channels: int, num_classes: int, image_size: int, **options: object) -> nn.Module:
    """Instantiate a registered architecture by name; bad sizes or options become one-line InputErrors."""
    factory = ARCHITECTURES.get(arch)
    try:
        return factory(in_channels, num_classes, image_size, **options)
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot build {arch} for {in_channels}x{image_size}x{image_size} inputs: {exc}") from None
