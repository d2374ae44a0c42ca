"""The aMINT head: a small network over the audited model's tap activations that outputs P(member).

Per tap a branch by the activation's shape — feature maps (C, H, W): 3×3 conv, ReLU, 2×2 max-pool, 3×3 conv,
ReLU, global max-pool (the authors' conv stack and pooling); tokens (N, dim): a per-token two-layer MLP and
the mean over tokens; vectors (F,): a two-layer MLP — then the branches concatenated, FC `hidden` → ReLU →
FC 1 (a logit; sigmoid gives P(member)). The authors widen each tap to 1,024-4,096 channels; `channels`
sets the branch width (64 by default, for CPU-scale models).

A head file is a dict of tensors plus one JSON string, loaded with `torch.load(weights_only=True)`: it records
its spec (taps, their shapes, widths), the audited model's fingerprint, the rows it was fitted on and the
calibration scores of held-out external rows for set-level verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gmint.errors import InputError
from gmint.files import atomic_write
from gmint.models.io import what_file

HEAD_FORMAT = "gmint-amint-head/1"


@dataclass(frozen=True)
class HeadSpec:
    """What builds a head again: tap names, each tap's per-sample shape, branch width and hidden width."""

    taps: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    channels: int = 64
    hidden: int = 128

    def __post_init__(self) -> None:
        if len(self.taps) != len(self.shapes) or not self.taps:
            raise InputError(f"a head needs one shape per tap, got {len(self.taps)} taps, {len(self.shapes)} shapes")
        for name, shape in zip(self.taps, self.shapes, strict=True):
            if len(shape) not in (1, 2, 3):
                raise InputError(f"tap {name!r} outputs per-sample shape {shape}; the head reads feature maps "
                                 "(C, H, W), tokens (N, dim) or vectors (F,)")
        if self.channels < 1 or self.hidden < 1:
            raise InputError(f"head widths must be at least 1, got channels {self.channels}, hidden {self.hidden}")

    def to_dict(self) -> dict[str, object]:
        """The JSON form (tuples as lists)."""
        return {"taps": list(self.taps), "shapes": [list(s) for s in self.shapes], "channels": self.channels,
                "hidden": self.hidden}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> HeadSpec:
        """The spec a `to_dict` record describes."""
        taps, shapes = d["taps"], d["shapes"]
        if not isinstance(taps, list) or not isinstance(shapes, list):
            raise InputError("a head spec needs lists of taps and shapes")
        return cls(tuple(map(str, taps)), tuple(tuple(int(n) for n in s) for s in shapes),
                   int(d["channels"]), int(d["hidden"]))  # type: ignore[call-overload]


class _Tokens(nn.Module):
    """(B, N, dim) → (B, channels): per-token Linear-ReLU-Linear-ReLU, then the mean over tokens."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, channels), nn.ReLU(), nn.Linear(channels, channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token mean of the per-token features."""
        return self.mlp(x).mean(dim=1)


def _branch(shape: tuple[int, ...], channels: int) -> nn.Module:
    """The branch reading one tap of per-sample `shape`, ending in (B, channels)."""
    if len(shape) == 3:
        c, h, w = shape
        return nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2) if min(h, w) >= 2 else nn.Identity(),  # a 1×1 map has nothing to pool
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
    if len(shape) == 2:
        return _Tokens(shape[1], channels)
    return nn.Sequential(nn.Linear(shape[0], channels), nn.ReLU(), nn.Linear(channels, channels), nn.ReLU())


class MintHead(nn.Module):
    """Tap activations → one membership logit per sample."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.branches = nn.ModuleList(_branch(shape, spec.channels) for shape in spec.shapes)
        self.classifier = nn.Sequential(nn.Linear(spec.channels * len(spec.shapes), spec.hidden), nn.ReLU(),
                                        nn.Linear(spec.hidden, 1))

    def forward(self, activations: Sequence[torch.Tensor]) -> torch.Tensor:
        """One (B, *shape) tensor per tap, in the spec's order → (B,) membership logits."""
        if len(activations) != len(self.branches):
            raise InputError(f"the head reads {len(self.branches)} taps, got {len(activations)} activations")
        features = [branch(a) for branch, a in zip(self.branches, activations, strict=True)]
        return self.classifier(torch.cat(features, dim=1)).squeeze(1)


@dataclass
class TrainedHead:
    """A fitted head with what it was fitted on, for scoring new samples and calibrating verdicts.

    `fitted_ids` are the sample ids of the rows the head's loss saw (the pool); `calibration_ids` and
    `calibration_scores` are held-out external rows (never fitted) and their P(member), the reference a
    set-level verdict compares candidates with.
    """

    module: MintHead
    meta: dict[str, object]
    fitted_ids: np.ndarray
    calibration_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    calibration_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    @property
    def spec(self) -> HeadSpec:
        """The head's spec (taps, shapes, widths)."""
        return self.module.spec

    @property
    def model_fingerprint(self) -> str:
        """Fingerprint of the audited model the head was trained with."""
        return str(self.meta.get("model_fingerprint", ""))

    def save(self, path: Path) -> None:
        """Write the head, its spec, meta, fitted ids and calibration, whole or not at all."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "spec": self.spec.to_dict(), "format": HEAD_FORMAT}
        payload = {"meta": json.dumps(meta), "state_dict": self.module.state_dict(),
                   "fitted_ids": torch.from_numpy(np.asarray(self.fitted_ids, np.int64)),
                   "calibration_ids": torch.from_numpy(np.asarray(self.calibration_ids, np.int64)),
                   "calibration_scores": torch.from_numpy(np.asarray(self.calibration_scores, np.float64))}
        with atomic_write(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: Path) -> TrainedHead:
        """Read a head file written by `save`, with `torch.load(weights_only=True)`, in eval mode.

        Raises:
            InputError: a missing file, or one that is not a gmint aMINT head.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"aMINT head {path} not found")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(payload["meta"])
        except Exception:  # corrupt or foreign file: many exception types; say what the file is instead
            raise InputError(f"{path} is not a gmint aMINT head: it is {what_file(path)}") from None
        if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
            raise InputError(f"{path} is not a gmint aMINT head (the head.pt an aMINT training writes)")
        module = MintHead(HeadSpec.from_dict(meta["spec"]))
        module.load_state_dict(payload["state_dict"])
        return cls(module.eval(), meta, payload["fitted_ids"].numpy(), payload["calibration_ids"].numpy(),
                   payload["calibration_scores"].numpy())

