"""Training-time augmentations of audited models, by the name a TrainConfig records (`augment`).

Each takes a batch (N, C, H, W) and the run's seeded generator, so an augmented run is as reproducible as a plain
one: the generator, seeded per epoch, is the only source of randomness.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gmint.registry import Registry

Augmentation = Callable[[Tensor, torch.Generator], Tensor]
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


@AUGMENTATIONS.register("none")
def _no_augmentation(x: Tensor, gen: torch.Generator) -> Tensor:
    return x


@AUGMENTATIONS.register("crop")
def _random_crop(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random translation by up to 1/8 of the side (reflect padding), per sample."""
    pad = max(1, x.shape[-1] // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (len(x), 2), generator=gen)
    h, w = x.shape[-2:]
    return torch.stack([p[:, i:i + h, j:j + w] for p, (i, j) in zip(padded, offsets.tolist(), strict=True)])


@AUGMENTATIONS.register("flip-crop")
def _flip_crop(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random crop, then horizontal flip with probability 1/2 (natural images only; not for digits)."""
    x = _random_crop(x, gen)
    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
