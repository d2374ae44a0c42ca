"""A representation of Weight-Modifier features that keeps their scale: per-block log-norms beside every
column, each through a signed log with its own scale, then z-scored.

Weight Modifiers span many orders of magnitude: the output layer's MEAN Weight Modifier is (p − y)·mean(h),
so a memorised member's is tiny and a misclassified external's is large, and which matters is its size.
A z-score alone leaves the heavy tail as a few huge values (a network's first steps then chase them, or its
units die) and hides the size among the signs; `sign(x)·log1p(|x|/s)` with s the column's median |x| keeps
order and sign, is linear below s and logarithmic above, and the block's norm carries the size on its own.
Everything is fitted on the rows it is given (a fold's training rows), never on the rows it then scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gmint.errors import InputError
from gmint.registry import Registry

# How each column is bent before the z-score, by name: a function of (columns, per-column scale).
TRANSFORMS: Registry[Callable[[np.ndarray, np.ndarray], np.ndarray]] = Registry("feature transform")


@TRANSFORMS.register("signed_log")
def signed_log(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """sign(x)·log1p(|x|/scale): order and sign kept, magnitudes compressed above the column's scale."""
    return np.sign(x) * np.log1p(np.abs(x) / scale)


@TRANSFORMS.register("linear")
def linear(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The columns as they are (a plain z-score follows)."""
    return x


def _column_scale(x: np.ndarray) -> np.ndarray:
    """Each column's median |x|, or its mean |x| where most values are 0, or 1 where all are."""
    size = np.abs(x)
    scale = np.median(size, axis=0)
    scale = np.where(scale > 0, scale, size.mean(axis=0))
    return np.where(scale > 0, scale, 1.0)


@dataclass(frozen=True)
class Representation:
    """Fitted on training rows: block widths, the transform, and each output column's scale, mean and std.

    Output columns: one log-norm per block wider than one column (its L2 norm, through the transform), then
    every input column, all z-scored.
    """

    blocks: tuple[int, ...]
    transform: str
    scale: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, blocks: tuple[int, ...], transform: str) -> Representation:
        """Fit on (n, Σ blocks) raw training rows.

        Raises:
            InputError: the blocks do not add up to the rows' width.
        """
        TRANSFORMS.get(transform)
        if sum(blocks) != x.shape[1]:
            raise InputError(f"feature blocks of widths {list(blocks)} do not add up to {x.shape[1]} columns")
        raw = _with_norms(np.asarray(x, np.float64), blocks)
        scale = _column_scale(raw)
        bent = TRANSFORMS.get(transform)(raw, scale)
        std = bent.std(axis=0)
        return cls(tuple(blocks), transform, scale, bent.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, x: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
        """(n, Σ blocks) raw rows → (n, width) inputs of the classifier, as `dtype` (float32 for a network,
        float64 for a reader that ranks one signal as it is)."""
        bent = TRANSFORMS.get(self.transform)(_with_norms(np.asarray(x, np.float64), self.blocks), self.scale)
        return ((bent - self.mean) / self.std).astype(dtype)

    @property
    def width(self) -> int:
        """How many columns the representation has."""
        return len(self.scale)

    def state(self) -> dict[str, torch.Tensor]:
        """Scale, mean and std as tensors (blocks and transform travel in the classifier's config)."""
        return {"scale": torch.from_numpy(self.scale), "mean": torch.from_numpy(self.mean),
                "std": torch.from_numpy(self.std)}

    @classmethod
    def from_state(cls, blocks: tuple[int, ...], transform: str, state: dict[str, torch.Tensor]) -> Representation:
        """The representation `state` saved, for the given blocks and transform."""
        return cls(tuple(blocks), transform, state["scale"].numpy(), state["mean"].numpy(), state["std"].numpy())


def _with_norms(x: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """The L2 norm of every block wider than one column, then the columns themselves."""
    edges = np.cumsum((0, *blocks))
    norms = [np.linalg.norm(x[:, a:b], axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True) if b - a > 1]
    return np.concatenate([np.stack(norms, axis=1), x], axis=1) if norms else x


def representation_width(blocks: tuple[int, ...]) -> int:
    """The width of the representation of rows in `blocks`."""
    return sum(blocks) + sum(1 for b in blocks if b > 1)
