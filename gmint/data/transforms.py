"""Preprocessing from decoded uint8 images to the float tensors a model sees, recorded in provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Transform:
    """Resize (bilinear, optional) then per-channel normalise: x = (pixel / 255 - mean) / std.

    The default mean = std = 0.5 per channel maps pixels to [-1, 1], the paper's `Normalize(0.5, 0.5)`.
    """

    size: int | None = None
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, C) uint8 → (B, C, size, size) float32."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)
        channels = x.shape[1]
        mean = torch.tensor(_per_channel(self.mean, channels)).view(1, -1, 1, 1)
        std = torch.tensor(_per_channel(self.std, channels)).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, object]:
        """The fields as JSON values, for checkpoints' and stores' provenance."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Transform:
        """The transform a `to_dict` record describes (JSON turned the tuples into lists)."""
        return cls(size=d.get("size"), mean=tuple(d["mean"]), std=tuple(d["std"]))  # type: ignore[arg-type]


def _per_channel(values: tuple[float, ...], channels: int) -> list[float]:
    if len(values) == channels:
        return list(values)
    if len(values) == 1:
        return list(values) * channels
    raise ValueError(f"normalisation has {len(values)} values for {channels} channels")
