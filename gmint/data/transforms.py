"""Preprocessing from decoded uint8 images to the float tensors a model sees, recorded in provenance.

A model answers correctly only for inputs prepared as it was trained: the same size, channels and
normalisation. The transform is therefore part of a model's description and of every store's provenance,
and a model from outside must state it (`gmint.models.description`); nothing here guesses one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from gmint.errors import InputError

# torch's interpolation modes a model may have been trained with; bilinear and bicubic antialias when
# shrinking, as PIL (and torchvision's tensor resize with antialias=True) do.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
# ITU-R 601-2 luma, the weights PIL's mode "L" and torchvision's Grayscale use.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Transform:
    """Channels, resize, centre crop, then per-channel normalise: x = (pixel / 255 - mean) / std.

    The default mean = std = 0.5 per channel maps pixels to [-1, 1], the paper's `Normalize(0.5, 0.5)`,
    which gmint's own zoo models are trained with.

    Attributes:
        size: resize every image to size x size first (None: keep its size).
        mean: per-channel means (one value: the same for every channel).
        std: per-channel standard deviations.
        channels: bring images to this many channels before anything else: grey → RGB repeats the
            channel, RGB → grey is luma (as `Grayscale`); None keeps the images' own.
        crop: then cut the centre crop x crop (as `CenterCrop`); None for none.
        interpolation: how the resize samples, one of INTERPOLATIONS.
    """

    size: int | None = None
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    channels: int | None = None
    crop: int | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        problems = []
        for name in ("size", "crop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                problems.append(f"{name} must be a positive whole number of pixels, got {value!r}")
        if self.channels not in (None, 1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels!r}")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.size is not None and self.crop is not None and self.crop > self.size:
            problems.append(f"crop {self.crop} is larger than the resized side {self.size}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
                                     for v in values):
                problems.append(f"{name} must be finite numbers, got {values!r}")
            elif self.channels is not None and len(values) not in (1, self.channels):
                problems.append(f"{name} has {len(values)} values for {self.channels} channels")
        if not problems and any(v <= 0 for v in self.std):
            problems.append(f"std must be positive, got {self.std!r}")
        if problems:
            raise InputError("preprocessing: " + "; ".join(problems))

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, C) uint8 → (B, C', side, side) float32."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        if self.channels is not None and x.shape[1] != self.channels:
            x = _convert_channels(x, self.channels)
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            smooth = self.interpolation != "nearest"
            x = F.interpolate(x, size=(self.size, self.size), mode=self.interpolation,
                              align_corners=False if smooth else None, antialias=smooth)
            if self.interpolation == "bicubic":
                x = x.clamp_(0.0, 1.0)  # bicubic overshoots; decoded pixels never leave [0, 1]
        if self.crop is not None:
            h, w = x.shape[-2:]
            if self.crop > min(h, w):
                raise InputError(f"preprocessing crops {self.crop}x{self.crop} from images of {h}x{w}")
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            x = x[..., top:top + self.crop, left:left + self.crop]
        channels = x.shape[1]
        mean = torch.tensor(_per_channel(self.mean, channels)).view(1, -1, 1, 1)
        std = torch.tensor(_per_channel(self.std, channels)).view(1, -1, 1, 1)
        return (x - mean) / std

    @property
    def side(self) -> int | None:
        """The side of what reaches the model (the crop, else the resize), None where images keep theirs."""
        return self.crop or self.size

    def to_dict(self) -> dict[str, object]:
        """The fields as JSON values, for checkpoints' and stores' provenance. Fields at their defaults beyond
        size, mean and std are left out, so records written before they existed compare equal."""
        d: dict[str, object] = {"size": self.size, "mean": list(self.mean), "std": list(self.std)}
        for name, default in (("channels", None), ("crop", None), ("interpolation", "bilinear")):
            if getattr(self, name) != default:
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Transform:
        """The transform a `to_dict` record (or a user's JSON spec) describes.

        Raises:
            InputError: unknown keys, a missing mean or std, or values out of range.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"preprocessing: unknown key{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                             f"the keys are {', '.join(f.name for f in fields(cls))}")
        missing = [k for k in ("mean", "std") if k not in d]
        if missing:
            raise InputError(f"preprocessing: {' and '.join(missing)} must be given (the normalisation the model "
                             "was trained with)")
        values = dict(d)
        for key in ("mean", "std"):
            value = values[key]
            values[key] = tuple(value) if isinstance(value, list | tuple) else (value,)
        return cls(**values)  # type: ignore[arg-type]


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] → `channels` channels: grey repeated to RGB, RGB to luma."""
    have = x.shape[1]
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        return torch.einsum("bchw,c->bhw", x, torch.tensor(LUMA)).unsqueeze(1)
    raise InputError(f"preprocessing cannot bring {have}-channel images to {channels} channels")


def _per_channel(values: tuple[float, ...], channels: int) -> list[float]:
    if len(values) == channels:
        return list(values)
    if len(values) == 1:
        return list(values) * channels
    raise InputError(f"normalisation has {len(values)} values for {channels} channels")
