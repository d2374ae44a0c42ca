"""Whether an engine's Weight Modifiers agree with the naive loop's on checked rows: the measure, the tolerance and
the float64 trial that tells a deep network's rounding from a wrong formula.

Agreement is measured per checked row and layer as ‖got − ref‖ / (‖ref‖ + ‖WM‖), with WM the row's full,
unreduced Weight Modifier: a reduction that cancels (MEAN of a filter whose entries sum to almost nothing)
is judged against the size of what it summed, not against its own rounding noise. The tolerance is
√ε of the features' dtype (3.5e-4 in float32, 1.5e-8 in float64), far above rounding and far below the
40-130% a wrong formula gives.

A deep float32 network can round further than that: a batched forward and backward through a trained
ResNet-50 sums in another order than one sample alone, and there both fast engines landed 5.1e-4 from the
float64 value (the float32 naive loop 1.5e-4). So a candidate that misses the float32 tolerance gets a second,
stricter trial on a float64 copy of the model: run on the checked rows it must agree with the float64 naive
loop to √ε of float64 — its formula is then right on this model — and its own features must lie within
`ROUNDING_LIMIT` (3.5e-3, ten times float32's tolerance, still far below a wrong formula's error) of the
float64 value, or of twice the float32 naive loop's own distance from it where the definition itself rounds
further (`rounding_limit`). Both errors are recorded. Half precision, whose tolerance is above that limit, gets
no such allowance.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gmint.errors import InputError, UnsupportedModelError
from gmint.features.engine.base import ENGINES, EngineResult, Plan
from gmint.features.engine.naive import naive_gradients
from gmint.features.reduce import Reduction

ROUNDING_LIMIT = 3.5e-3  # rounding accepted once the formula is proven in float64 (10 × float32's √ε)


def rounding_limit(naive: float) -> float:
    """How far from the float64 value an engine proven in float64 may land: ROUNDING_LIMIT, or twice the float32
    naive loop's own distance from it where the definition, computed in the model's dtype, rounds further (a deep
    network can: a 40-layer conv/BN stack put the naive loop 4.1e-3 from float64). Wrong formulas land 40-130%
    away, far beyond either."""
    return max(ROUNDING_LIMIT, 2 * naive)


@dataclass(frozen=True)
class Trial:
    """One candidate's self-check: its worst relative error on the checked rows (None when it failed to
    run or was not checked) and, when it was passed over, why."""

    engine: str
    passed: bool
    max_error: float | None
    note: str = ""
    float64_error: float | None = None  # the float64 trial's error against the float64 naive loop, if run
    rounding_error: float | None = None  # and the engine's own features' distance from the float64 value


class Float64Copy:
    """The float64 copy of the model every float64 trial of an extraction runs on: made when a trial first needs
    it (a candidate of the first batch, or a re-checked row of a later one, missing its dtype's tolerance) and
    kept, so the model is copied at most once."""

    def __init__(self) -> None:
        self._copy: nn.Module | str | None = None

    def of(self, model: nn.Module) -> nn.Module | str:
        """The copy of `model`, or (one line) why the model cannot be put in float64."""
        if self._copy is None:
            try:
                self._copy = copy.deepcopy(model).double()
            except Exception as exc:  # the verdict in the model's own dtype stands
                self._copy = one_line(exc)
        return self._copy


@dataclass
class Check:
    """Rows of one batch checked against the naive loop, and the rule an engine's result on them is judged by (see
    the module's docstring): within the tolerance of their dtype, or else through the float64 trial. The first
    batch's candidates share one check, a later batch's re-checked row has its own; the float64 rows are made once
    per check, on the extraction's one float64 copy of the model."""

    model: nn.Module
    layers: list[str]
    reduction: Reduction
    x: Tensor
    y: Tensor
    rows: tuple[int, ...]
    reference: Reference  # the naive loop's, of `rows`
    float64: Float64Copy
    loss: str
    chunk_size: int | None
    _wide: Float64Rows | str | None = field(default=None, init=False)

    @property
    def tolerance(self) -> float:
        """√ε of the reference's dtype."""
        return math.sqrt(torch.finfo(self.reference.dtype).eps)

    def judge(self, engine: str, result: EngineResult) -> Trial:
        """The trial of `engine`'s `result` for the whole batch (its checked rows are judged)."""
        error = self.reference.error(result, self.rows)
        if error <= self.tolerance:
            return Trial(engine, True, error)
        failed = f"differs from the naive loop by {error:.2g} (tolerance {self.tolerance:.2g})"
        if self.reference.dtype == torch.float64:  # no wider dtype to try
            return Trial(engine, False, error, failed)
        if self._wide is None:
            self._wide = Float64Rows.make(self.float64.of(self.model), self.layers, self.reduction,
                                           self.x, self.y, self.rows, self.loss)
        wide = self._wide
        if isinstance(wide, str):
            return Trial(engine, False, error, f"{failed}; no float64 trial: {wide}")
        try:
            prepare = ENGINES.get(engine).prepare
            got = run_engine(engine, prepare(wide.model, self.layers, wide.x) if prepare else None, wide.model,
                       self.layers, self.reduction, wide.x, wide.y, loss=self.loss, chunk_size=self.chunk_size)
        except Exception as exc:  # an engine that cannot run in float64 keeps the verdict in its own dtype
            return Trial(engine, False, error, f"{failed}; no float64 trial: {one_line(exc)}")
        formula = wide.reference.error(got, tuple(range(len(self.rows))))
        rounding = wide.reference.error(result, self.rows)
        naive = wide.reference.distance(self.reference)
        detail = (f"{failed}; in float64 by {formula:.2g}, and its own result is {rounding:.2g} from the float64 "
                  f"value (the naive loop's {naive:.2g})")
        passed = formula <= math.sqrt(torch.finfo(torch.float64).eps) and rounding <= rounding_limit(naive)
        return Trial(engine, passed, error, ("rounding: " if passed else "") + detail, formula, rounding)


def finite(value: float | None) -> float | None:
    """The value, or None where it is not finite (JSON has no inf)."""
    return value if value is not None and math.isfinite(value) else None


def run_engine(engine: str, plan: Plan | None, model: nn.Module, layers: list[str], reduction: Reduction,
               x: Tensor, y: Tensor, *, loss: str, chunk_size: int | None) -> EngineResult:
    """One batch on `engine`, with the plan it made for the model where it makes one."""
    extra = {"plan": plan} if plan is not None else {}
    return ENGINES.get(engine).run(model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size, **extra)


@dataclass(frozen=True)
class Reference:
    """The naive loop's reduced features, losses and full Weight Modifier norms for the checked rows."""

    features: dict[str, Tensor]
    wm_norms: dict[str, Tensor]
    loss: Tensor
    dtype: torch.dtype

    @classmethod
    def compute(cls, model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor,
                loss: str) -> Reference:
        """The naive loop's reference of the rows (x, y).

        Raises:
            UnsupportedModelError: the model cannot run on one sample alone.
        """
        try:
            grads, losses, _ = naive_gradients(model, layers, x, y, loss=loss)
        except InputError:
            raise
        except Exception as exc:
            raise UnsupportedModelError(f"the model cannot be run on one sample alone, so its per-sample "
                                        f"Weight Modifiers are not defined: {one_line(exc)}") from exc
        dtype = next(iter(grads.values())).dtype
        with torch.no_grad():
            return cls({n: reduction(g, n) for n, g in grads.items()},
                       {n: g.flatten(1).double().norm(dim=1) for n, g in grads.items()}, losses, dtype)

    def joined(self, more: Reference | None) -> Reference:
        """This reference's rows followed by those of `more`."""
        if more is None:
            return self
        return Reference({n: torch.cat([f, more.features[n]]) for n, f in self.features.items()},
                          {n: torch.cat([w, more.wm_norms[n]]) for n, w in self.wm_norms.items()},
                          torch.cat([self.loss, more.loss]), self.dtype)

    def error(self, result: EngineResult, rows: tuple[int, ...]) -> float:
        """Worst relative error of `result`'s checked rows against this reference."""
        picked = list(rows)
        return self._error({n: f[picked] for n, f in result.features.items()}, result.loss[picked])

    def distance(self, other: Reference) -> float:
        """Worst relative error of another reference of the same rows (the float32 naive loop's rounding)."""
        return self._error(other.features, other.loss)

    def _error(self, features: dict[str, Tensor], loss: Tensor) -> float:
        worst = _relative(loss.unsqueeze(1), self.loss.unsqueeze(1), self.loss.double().abs() + 1.0)
        for name, ref in self.features.items():
            scale = ref.flatten(1).double().norm(dim=1) + self.wm_norms[name]
            worst = max(worst, _relative(features[name], ref, scale))
        return worst


@dataclass(frozen=True)
class Float64Rows:
    """The checked rows in float64, on the float64 copy of the model, and the float64 naive loop's features on
    them."""

    model: nn.Module
    x: Tensor
    y: Tensor
    reference: Reference

    @classmethod
    def make(cls, wide: nn.Module | str, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor,
             rows: tuple[int, ...], loss: str) -> Float64Rows | str:
        """The rows on the float64 copy `wide`, or (one line) why the model cannot run in float64."""
        if isinstance(wide, str):
            return wide
        picked = list(rows)
        try:
            xs = x[picked].double() if x.is_floating_point() else x[picked]
            return cls(wide, xs, y[picked], Reference.compute(wide, layers, reduction, xs, y[picked], loss))
        except Exception as exc:  # the verdict in the model's own dtype stands
            return one_line(exc)


def _relative(got: Tensor, ref: Tensor, scale: Tensor) -> float:
    """Max over rows of ‖got − ref‖ / scale; rows non-finite in both count as equal, in one as inf."""
    got, ref = got.detach().flatten(1).double().cpu(), ref.detach().flatten(1).double().cpu()
    scale = scale.detach().double().cpu().nan_to_num(nan=0.0, posinf=0.0)
    finite = ref.isfinite()
    diff = (got.where(finite, 0.0) - ref.where(finite, 0.0)).norm(dim=1)
    rel = torch.where(scale > 0, diff / scale.clamp_min(1e-300), torch.where(diff > 0, math.inf, 0.0))
    rel = torch.where((finite == got.isfinite()).all(dim=1), rel, math.inf)
    return float(rel.nan_to_num(nan=math.inf).max()) if len(rel) else 0.0


def one_line(exc: BaseException) -> str:
    """An exception's message on one line of at most 200 characters, for a warning or a record."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
