"""Reductions: a Weight Modifier (B, F_out, *rest) → a small feature vector (B, d) per sample.

Per-filter reductions summarise each output filter (conv: F_out × F_in × kh × kw; linear: out × in;
a 1-D parameter such as a bias is its own summary). Registered by name; `name:arg` passes an argument.

Note on Linear layers: on 2-D input the per-sample weight gradient is the outer product g·xᵀ, so
`mean` per output row equals the bias gradient g times mean(x); after a zero-mean LayerNorm it is
pure rounding noise. Keep information there with `flat` (or `l2`, which is |g|·|x|).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from gmint.errors import InputError
from gmint.registry import Registry

# A reduction maps (B, *param.shape) → (B, d); `layer` is the parameter name (for seeded reductions).
Reduction = Callable[[Tensor, str], Tensor]
# A factory builds a reduction from its optional `name:arg` argument and the run's seed.
ReductionFactory = Callable[[str | None, int], Reduction]
REDUCTIONS: Registry[ReductionFactory] = Registry("reduction")


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


def parse_reduction(spec: str, seed: int = 0) -> Reduction:
    """Build the reduction named by `spec` (`mean`, `l2`, `project:64`, ...)."""
    name, _, arg = spec.partition(":")
    return REDUCTIONS.get(name)(arg or None, seed)
