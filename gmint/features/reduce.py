"""Reductions: a Weight Modifier (B, F_out, *rest) → a small feature vector (B, d) per sample.

Per-filter reductions summarise each output filter (conv: F_out × F_in × kh × kw; linear: out × in;
a 1-D parameter such as a bias is its own summary). Registered by name; `name:arg` passes an argument.

| spec | output | what it keeps |
|---|---|---|
| `mean` | (B, F_out) | mean update per filter (gMINT's MEAN) |
| `abs_mean` | (B, F_out) | mean absolute update per filter |
| `std` | (B, F_out) | population standard deviation per filter |
| `l2` | (B, F_out) | Euclidean norm per filter |
| `max` | (B, F_out) | largest signed entry per filter |
| `flat` | (B, D), D = prod(param.shape) | everything |
| `project:<d>` | (B, d) | a seeded Johnson-Lindenstrauss projection of the flat Weight Modifier |

Note on Linear layers: on 2-D input the per-sample weight gradient is the outer product g·xᵀ, so
`mean` per output row equals the bias gradient g times mean(x); after a zero-mean LayerNorm it is
pure rounding noise. Keep information there with `flat`, `project:<d>` (or `l2`, which is |g|·|x|).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gmint.errors import InputError
from gmint.registry import Registry

# A reduction maps (B, *param.shape) → (B, d); `layer` is the parameter name (for seeded reductions).
Reduction = Callable[[Tensor, str], Tensor]
# A factory builds a reduction from its optional `name:arg` argument and the run's seed.
ReductionFactory = Callable[[str | None, int], Reduction]
REDUCTIONS: Registry[ReductionFactory] = Registry("reduction")


@dataclass(frozen=True)
class NamedReduction:
    """A reduction that remembers the spec it was built from, so an engine can pick an exact algebraic
    shortcut by name (see `gmint.features.engine.hooks`) and fall back to calling it on a Weight Modifier."""

    spec: str
    fn: Reduction

    @property
    def name(self) -> str:
        """The reduction's registered name, without its argument (`project` for `project:64`)."""
        return self.spec.partition(":")[0]

    def __call__(self, wm: Tensor, layer: str) -> Tensor:
        """(B, *param.shape) Weight Modifiers of `layer` → (B, d) features."""
        return self.fn(wm, layer)


def _per_filter(wm: Tensor) -> Tensor:
    """(B, F_out, *rest) → (B, F_out, R) with R = prod(rest), 1 for 1-D parameters."""
    return wm.reshape(wm.shape[0], wm.shape[1], -1)


def _no_argument(name: str, fn: Callable[[Tensor], Tensor]) -> ReductionFactory:
    def factory(arg: str | None, seed: int) -> Reduction:
        if arg is not None:
            raise InputError(f"reduction '{name}' takes no argument, got '{name}:{arg}'")
        return lambda wm, layer: fn(wm)

    factory.__doc__ = fn.__doc__
    return factory


def _mean(wm: Tensor) -> Tensor:
    """(B, F_out): mean of each output filter's update — gMINT's MEAN."""
    return _per_filter(wm).mean(dim=2)


def _abs_mean(wm: Tensor) -> Tensor:
    """(B, F_out): mean absolute update per filter (does not cancel signs)."""
    return _per_filter(wm).abs().mean(dim=2)


def _std(wm: Tensor) -> Tensor:
    """(B, F_out): population standard deviation of each filter's update (0 for 1-D parameters)."""
    return _per_filter(wm).std(dim=2, unbiased=False)


def _l2(wm: Tensor) -> Tensor:
    """(B, F_out): Euclidean norm of each filter's update."""
    return _per_filter(wm).norm(dim=2)


def _max(wm: Tensor) -> Tensor:
    """(B, F_out): largest (signed) entry of each filter's update."""
    return _per_filter(wm).amax(dim=2)


def _flat(wm: Tensor) -> Tensor:
    """(B, prod(shape)): the whole Weight Modifier, unreduced (filter structure kept in row-major order)."""
    return wm.reshape(wm.shape[0], -1)


for _name, _fn in {"mean": _mean, "abs_mean": _abs_mean, "std": _std, "l2": _l2, "max": _max,
                   "flat": _flat}.items():
    REDUCTIONS.register(_name)(_no_argument(_name, _fn))


# The projection matrix R (D × d) is generated in blocks of rows, each at most this many entries (32 MiB
# in float64), so a dense d × D matrix never exists for a large layer.
_BLOCK_ENTRIES = 1 << 22
# A projection may widen a layer smaller than this (e.g. a bias) up to this many numbers, never more.
_SMALL_PROJECTION = 4096
# Projections with at most this many entries (a single block) are cached per (seed, layer, shape, dtype,
# device): small layers are projected every batch and regenerating them would dominate.
_CACHE_ENTRIES = 1 << 20


def _block_seed(seed: int, layer: str, block: int) -> int:
    """A 63-bit seed from (seed, layer, block): stable across processes, unlike Python's `hash`."""
    digest = hashlib.sha256(f"gmint-project:{seed}:{layer}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _sign_block(seed: int, layer: str, block: int, rows: int, d: int, dtype: torch.dtype,
                device: torch.device) -> Tensor:
    """(rows, d) entries ±1/√d, drawn on the CPU generator so every device gets the same matrix."""
    generator = torch.Generator().manual_seed(_block_seed(seed, layer, block))
    bits = torch.randint(0, 2, (rows, d), generator=generator, dtype=torch.int8)
    return (bits.to(dtype) * 2 - 1).mul_(d ** -0.5).to(device)


_cached_sign_block = functools.lru_cache(maxsize=32)(_sign_block)


def project(wm: Tensor, layer: str, d: int, seed: int) -> Tensor:
    """(B, *shape) → (B, d): the flat Weight Modifier times a seeded Rademacher matrix R (D × d).

    R has i.i.d. entries ±1/√d, so E‖xR‖² = ‖x‖² and ‖xR‖²/‖x‖² has relative spread ≈ √(2/d)
    (Johnson-Lindenstrauss). R is a function of (seed, layer name, D, d) only: rows are generated in
    blocks of ⌊2²²/d⌋, block k from a torch CPU generator seeded with sha256(seed, layer, k), and the
    block products are accumulated — identical across calls, processes and devices.
    """
    flat = wm.reshape(wm.shape[0], -1)
    size = flat.shape[1]
    if d > max(size, _SMALL_PROJECTION):  # bounds what a request may allocate: about the WM's own size
        raise InputError(f"project:{d} asks for {d:,} numbers per sample from {layer}, which has {size:,}; "
                         f"a projection shrinks (at most {max(size, _SMALL_PROJECTION):,} here): use a smaller d "
                         "or 'flat'")
    rows = max(1, _BLOCK_ENTRIES // d)
    make = _cached_sign_block if size * d <= _CACHE_ENTRIES else _sign_block
    out = flat.new_zeros(flat.shape[0], d)
    for block, start in enumerate(range(0, size, rows)):
        stop = min(start + rows, size)
        out.addmm_(flat[:, start:stop], make(seed, layer, block, stop - start, d, flat.dtype, flat.device))
    return out


@REDUCTIONS.register("project")
def _project_factory(arg: str | None, seed: int) -> Reduction:
    """(B, d): seeded random projection of the flat Weight Modifier (`project:<d>`; see `project`)."""
    if arg is None or not arg.isdigit() or int(arg) < 1:
        raise InputError(f"reduction 'project' needs a positive dimension, e.g. 'project:64', got {arg!r}")
    d = int(arg)
    return lambda wm, layer: project(wm, layer, d, seed)


def parse_reduction(spec: str, seed: int = 0) -> NamedReduction:
    """Build the reduction named by `spec` (`mean`, `l2`, `project:64`, ...)."""
    name, _, arg = spec.partition(":")
    return NamedReduction(spec, REDUCTIONS.get(name)(arg or None, seed))
