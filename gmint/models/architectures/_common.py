"""Pieces shared by the architecture families: the stem rule and the conv-BN-activation unit."""

from __future__ import annotations

from torch import nn

STEMS = ("imagenet", "cifar")


def resolve_stem(stem: str | None, image_size: int) -> str:
    """The stem to use: `imagenet` (down-sampling stem) from 64 px up, `cifar` (stride-1 stem) below.

    A stride-2 stem on 8-32 px inputs leaves the last stages at 1×1, so small inputs get the stride-1
    stem of the CIFAR adaptations unless the caller asks otherwise.
    """
    if stem is None:
        return "imagenet" if image_size >= 64 else "cifar"
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    return stem


def check_min_size(arch: str, image_size: int, minimum: int) -> None:
    """Refuse inputs the architecture would pool to nothing."""
    if image_size < minimum:
        raise ValueError(f"{arch} needs inputs of at least {minimum}×{minimum} px, got {image_size}")


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, *, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Bias-free conv ("same" padding), BatchNorm, then `act` (none for linear bottlenecks)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)
