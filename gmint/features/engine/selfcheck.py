"""The engine an extraction runs: the fastest one that proves itself on the model at hand.

Candidates are tried fastest first (`hooks`, then `vmap`, then the naive loop). Each computes the first
batch; a few of its rows (the first, the last and the highest-loss ones, where cancellation bites) are
recomputed by the naive loop — the definition of a Weight Modifier: the gradient of one sample's loss
with the model run on that sample alone — and compared. The first candidate that agrees computes every
batch; one that disagrees or fails is passed over with one warning line. The trials are recorded in the
store's provenance.

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

The engine is proven through the run too: a model can mix or reorder its batch only from a later batch on (a
sort, a rescale by the batch maximum that bites later), which the first batch's check cannot see. So one row of
batches 0, 1, 2, 4, 8, … (counted from the extraction's first row) and of the last batch is recomputed by the
naive loop and judged as the first batch's rows are: within the tolerance, or else through the float64 trial on
that row. The schedule is a function of the batch index alone and the row is drawn by the seeded generator from
the batch's first row, so two runs of one extraction check the same rows and end on the same engine (a schedule
by measured time did not); the geometric spacing keeps the cost to ⌊log₂ n⌋ + 3 naive rows of an n-batch run.
A row that fails raises `EngineDisagreement`, and the extraction starts again on the next engine.
"""

from __future__ import annotations

import copy
import math
import random
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gmint.errors import InputError, UnsupportedModelError
from gmint.features.engine.base import ENGINES, EngineResult, Plan, labels, register_engine
from gmint.features.engine.naive import naive_gradients
from gmint.features.reduce import Reduction

CHECK_ROWS = 4
ROUNDING_LIMIT = 3.5e-3  # rounding accepted once the formula is proven in float64 (10 × float32's √ε)


def rounding_limit(naive: float) -> float:
    """How far from the float64 value an engine proven in float64 may land: ROUNDING_LIMIT, or twice the float32
    naive loop's own distance from it where the definition, computed in the model's dtype, rounds further (a deep
    network can: a 40-layer conv/BN stack put the naive loop 4.1e-3 from float64). Wrong formulas land 40-130%
    away, far beyond either."""
    return max(ROUNDING_LIMIT, 2 * naive)


class EngineCheckWarning(UserWarning):
    """An engine disagreed with the naive loop on the first batch (or failed) and was passed over."""


class EngineDisagreement(Exception):
    """The chosen engine disagreed with the naive loop on a later batch: every row it computed is suspect, so
    the extraction starts again on the next engine (`replacement`)."""

    def __init__(self, engine: str, replacement: str, row: int, why: str) -> None:
        super().__init__(f"the {engine} engine disagreed with the naive loop on row {row} ({why}) after agreeing on "
                         f"the first batch; every row is extracted again with the {replacement} engine")
        self.engine, self.replacement = engine, replacement


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


class _Float64:
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
                self._copy = _one_line(exc)
        return self._copy


@dataclass(frozen=True)
class EngineChoice:
    """The engine that computes every batch of an extraction, and the evidence for it."""

    requested: str
    engine: str
    rows: tuple[int, ...]
    tolerance: float
    trials: tuple[Trial, ...]
    plan: Plan | None = None
    float64: _Float64 = field(default_factory=_Float64, repr=False, compare=False)  # for the later batches' trials

    def run(self, model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
            loss: str = "cross_entropy", chunk_size: int | None = 64) -> EngineResult:
        """One batch on the chosen engine, with the plan it made when it was chosen."""
        return _run(self.engine, self.plan, model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size)

    @property
    def fallbacks(self) -> dict[str, str]:
        """Parameters the chosen engine leaves to another method, and why."""
        return self.plan.notes if self.plan is not None else {}

    def provenance(self) -> dict[str, object]:
        """The record a store keeps: which engine ran, which were tried, how well each agreed."""
        trials = [{**vars(t), "max_error": _finite(t.max_error), "float64_error": _finite(t.float64_error),
                   "rounding_error": _finite(t.rounding_error)} for t in self.trials]
        return {"engine_used": self.engine, "engine_fallbacks": self.fallbacks,
                "engine_check": {"reference": "naive", "rows": list(self.rows), "tolerance": self.tolerance,
                                 "trials": trials}}


def candidates(requested: str, model: nn.Module) -> tuple[str, ...]:
    """The engines a request may end up on, fastest first: those ranked at or after it (all of them for
    `auto`) that can run the model; the naive loop, which can run any, comes last."""
    start = ENGINES.get(requested).rank or 0
    scripted = isinstance(model, torch.jit.ScriptModule)
    ranked = sorted((spec.rank, name) for name in ENGINES.names() if (spec := ENGINES.get(name)).rank is not None
                    and spec.rank >= start and (spec.torchscript or not scripted))
    return tuple(name for _, name in ranked)


def choose_engine(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                  requested: str = "auto", loss: str = "cross_entropy", chunk_size: int | None = 64,
                  check_rows: int = CHECK_ROWS) -> tuple[EngineChoice, EngineResult]:
    """Try the candidates for `requested` on the batch (x, y) and keep the first that agrees with the
    naive loop on `check_rows` of its rows.

    Returns:
        The choice, and the chosen engine's result for (x, y) (an extraction writes it as its first batch).

    Raises:
        UnsupportedModelError: the naive loop itself cannot run the model on one sample.
    """
    if check_rows < 1:
        raise ValueError(f"check_rows must be at least 1, got {check_rows}")
    y = labels(y)
    chain = candidates(requested, model)
    plans = {name: prepare(model, layers, x) for name in chain if (prepare := ENGINES.get(name).prepare)}
    if ENGINES.get(requested).rank is None:
        # `auto` passes over an engine whose own method would not cover every parameter: one pass of the
        # next engine is faster than the first plus that engine for the rest.
        chain = tuple(name for name in chain if name not in plans or plans[name].complete)
    # Row 0 is always checked: its reference, computed first, refuses a model that cannot run, once.
    first_row = _Reference.compute(model, layers, reduction, x[:1], y[:1], loss)
    trials: list[Trial] = []
    check: _Check | None = None
    float64 = _Float64()
    for position, engine in enumerate(chain):
        last = position == len(chain) - 1
        try:
            result = _run(engine, plans.get(engine), model, layers, reduction, x, y, loss=loss,
                          chunk_size=chunk_size)
        except InputError:
            raise
        except Exception as exc:
            if last:
                raise UnsupportedModelError(f"the {engine} engine cannot run this model: "
                                            f"{_one_line(exc)}") from exc
            trials.append(Trial(engine, False, None, f"failed: {_one_line(exc)}"))
            _notice(engine, chain[position + 1], trials[-1].note)
            continue
        if engine == "naive":
            trials.append(Trial(engine, True, 0.0, "the definition"))
        else:
            if check is None:
                rows = _check_rows(result.loss, check_rows)
                others = list(rows[1:])  # rows[0] is row 0, whose reference is computed already
                check = _Check(model, layers, reduction, x, y, rows, first_row.joined(
                    _Reference.compute(model, layers, reduction, x[others], y[others], loss) if others else None),
                    float64, loss, chunk_size)
            trials.append(check.judge(engine, result))
            if not trials[-1].passed:
                _notice(engine, chain[position + 1], trials[-1].note)
                continue
        rows, tolerance = (check.rows, check.tolerance) if check is not None else ((), 0.0)
        return EngineChoice(requested, engine, rows, tolerance, tuple(trials), plans.get(engine), float64), result
    raise AssertionError("the naive loop ends every candidate list")  # pragma: no cover


@dataclass
class _Check:
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
    reference: _Reference  # the naive loop's, of `rows`
    float64: _Float64
    loss: str
    chunk_size: int | None
    _wide: _Float64Rows | str | None = field(default=None, init=False)

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
            self._wide = _Float64Rows.make(self.float64.of(self.model), self.layers, self.reduction,
                                           self.x, self.y, self.rows, self.loss)
        wide = self._wide
        if isinstance(wide, str):
            return Trial(engine, False, error, f"{failed}; no float64 trial: {wide}")
        try:
            prepare = ENGINES.get(engine).prepare
            got = _run(engine, prepare(wide.model, self.layers, wide.x) if prepare else None, wide.model,
                       self.layers, self.reduction, wide.x, wide.y, loss=self.loss, chunk_size=self.chunk_size)
        except Exception as exc:  # an engine that cannot run in float64 keeps the verdict in its own dtype
            return Trial(engine, False, error, f"{failed}; no float64 trial: {_one_line(exc)}")
        formula = wide.reference.error(got, tuple(range(len(self.rows))))
        rounding = wide.reference.error(result, self.rows)
        naive = wide.reference.distance(self.reference)
        detail = (f"{failed}; in float64 by {formula:.2g}, and its own result is {rounding:.2g} from the float64 "
                  f"value (the naive loop's {naive:.2g})")
        passed = formula <= math.sqrt(torch.finfo(torch.float64).eps) and rounding <= rounding_limit(naive)
        return Trial(engine, passed, error, ("rounding: " if passed else "") + detail, formula, rounding)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _run(engine: str, plan: Plan | None, model: nn.Module, layers: list[str], reduction: Reduction,
         x: Tensor, y: Tensor, *, loss: str, chunk_size: int | None) -> EngineResult:
    extra = {"plan": plan} if plan is not None else {}
    return ENGINES.get(engine).run(model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size, **extra)


def _check_rows(losses: Tensor, count: int) -> tuple[int, ...]:
    """The first and last rows and the highest-loss ones, at most `count`, in order."""
    order = torch.argsort(torch.nan_to_num(losses.detach().float().cpu(), nan=-math.inf), descending=True)
    chosen = list(dict.fromkeys([0, len(losses) - 1, *order.tolist()]))[:count]
    return tuple(sorted(chosen))


@dataclass(frozen=True)
class _Reference:
    """The naive loop's reduced features, losses and full Weight Modifier norms for the checked rows."""

    features: dict[str, Tensor]
    wm_norms: dict[str, Tensor]
    loss: Tensor
    dtype: torch.dtype

    @classmethod
    def compute(cls, model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor,
                loss: str) -> _Reference:
        try:
            grads, losses, _ = naive_gradients(model, layers, x, y, loss=loss)
        except InputError:
            raise
        except Exception as exc:
            raise UnsupportedModelError(f"the model cannot be run on one sample alone, so its per-sample "
                                        f"Weight Modifiers are not defined: {_one_line(exc)}") from exc
        dtype = next(iter(grads.values())).dtype
        with torch.no_grad():
            return cls({n: reduction(g, n) for n, g in grads.items()},
                       {n: g.flatten(1).double().norm(dim=1) for n, g in grads.items()}, losses, dtype)

    def joined(self, more: _Reference | None) -> _Reference:
        """This reference's rows followed by those of `more`."""
        if more is None:
            return self
        return _Reference({n: torch.cat([f, more.features[n]]) for n, f in self.features.items()},
                          {n: torch.cat([w, more.wm_norms[n]]) for n, w in self.wm_norms.items()},
                          torch.cat([self.loss, more.loss]), self.dtype)

    def error(self, result: EngineResult, rows: tuple[int, ...]) -> float:
        """Worst relative error of `result`'s checked rows against this reference."""
        picked = list(rows)
        return self._error({n: f[picked] for n, f in result.features.items()}, result.loss[picked])

    def distance(self, other: _Reference) -> float:
        """Worst relative error of another reference of the same rows (the float32 naive loop's rounding)."""
        return self._error(other.features, other.loss)

    def _error(self, features: dict[str, Tensor], loss: Tensor) -> float:
        worst = _relative(loss.unsqueeze(1), self.loss.unsqueeze(1), self.loss.double().abs() + 1.0)
        for name, ref in self.features.items():
            scale = ref.flatten(1).double().norm(dim=1) + self.wm_norms[name]
            worst = max(worst, _relative(features[name], ref, scale))
        return worst


@dataclass(frozen=True)
class _Float64Rows:
    """The checked rows in float64, on the float64 copy of the model, and the float64 naive loop's features on
    them."""

    model: nn.Module
    x: Tensor
    y: Tensor
    reference: _Reference

    @classmethod
    def make(cls, wide: nn.Module | str, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor,
             rows: tuple[int, ...], loss: str) -> _Float64Rows | str:
        """The rows on the float64 copy `wide`, or (one line) why the model cannot run in float64."""
        if isinstance(wide, str):
            return wide
        picked = list(rows)
        try:
            xs = x[picked].double() if x.is_floating_point() else x[picked]
            return cls(wide, xs, y[picked], _Reference.compute(wide, layers, reduction, xs, y[picked], loss))
        except Exception as exc:  # the verdict in the model's own dtype stands
            return _one_line(exc)


def _relative(got: Tensor, ref: Tensor, scale: Tensor) -> float:
    """Max over rows of ‖got − ref‖ / scale; rows non-finite in both count as equal, in one as inf."""
    got, ref = got.detach().flatten(1).double().cpu(), ref.detach().flatten(1).double().cpu()
    scale = scale.detach().double().cpu().nan_to_num(nan=0.0, posinf=0.0)
    finite = ref.isfinite()
    diff = (got.where(finite, 0.0) - ref.where(finite, 0.0)).norm(dim=1)
    rel = torch.where(scale > 0, diff / scale.clamp_min(1e-300), torch.where(diff > 0, math.inf, 0.0))
    rel = torch.where((finite == got.isfinite()).all(dim=1), rel, math.inf)
    return float(rel.nan_to_num(nan=math.inf).max()) if len(rel) else 0.0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _notice(engine: str, replacement: str, why: str) -> None:
    warnings.warn(f"{engine} engine passed over for {replacement}: {why}", EngineCheckWarning, stacklevel=3)


def rechecked(batch: int) -> bool:
    """Whether a row of a later batch is re-checked, from its index in the extraction (counted from 0): batches 0
    (when computed again after the first check), 1, 2, 4, 8, … (the last batch is re-checked whatever its index).
    A function of the index alone, so the same rows are re-checked in every run of an extraction."""
    return batch & (batch - 1) == 0


class ProvenEngine:
    """An engine (same call as `vmap_engine`) that chooses itself with `choose_engine` on its first batch and
    runs that choice on every later one, re-checking one row of the batches `rechecked` names and of the last
    batch as the first batch was checked (see the module's docstring): what an extraction hands to its feature
    source. The extraction says where each batch sits with `at`."""

    def __init__(self, requested: str = "auto", *, seed: int = 0) -> None:
        self.requested = requested
        self.seed = seed
        self.choice: EngineChoice | None = None
        self._engine_seconds = 0.0
        self._check_seconds = 0.0
        self._checked: list[tuple[int, Trial]] = []
        self._start, self._last = 0, False

    def at(self, start: int, *, last: bool) -> ProvenEngine:
        """This engine, told that its next batch starts at row `start` of the extraction (and whether it is the
        last one, which is always re-checked)."""
        self._start, self._last = start, last
        return self

    def __call__(self, model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                 loss: str = "cross_entropy", chunk_size: int | None = 64) -> EngineResult:
        """The batch's reduced Weight Modifiers: chosen and checked on the first call, the choice after.

        Raises:
            EngineDisagreement: a re-checked row of a later batch disagrees with the naive loop.
        """
        if self.choice is None:
            self.choice, result = choose_engine(model, layers, reduction, x, y, requested=self.requested,
                                                loss=loss, chunk_size=chunk_size)
            return result
        t0 = time.perf_counter()
        result = self.choice.run(model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size)
        self._engine_seconds += time.perf_counter() - t0
        # Every batch but the last holds the same number of rows, so a batch's index is its start over its length.
        if self.choice.engine != "naive" and len(y) and (self._last or rechecked(self._start // len(y))):
            self._recheck(self.choice, model, layers, reduction, x, y, result, loss, chunk_size)
        return result

    def _recheck(self, choice: EngineChoice, model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor,
                 y: Tensor, result: EngineResult, loss: str, chunk_size: int | None) -> None:
        t0 = time.perf_counter()
        row = random.Random(f"{self.seed}/{self._start}").randrange(len(y))
        y = labels(y)
        reference = _Reference.compute(model, layers, reduction, x[row:row + 1], y[row:row + 1], loss)
        trial = _Check(model, layers, reduction, x, y, (row,), reference, choice.float64, loss,
                       chunk_size).judge(choice.engine, result)
        self._check_seconds += time.perf_counter() - t0
        self._checked.append((self._start + row, trial))
        if not trial.passed:
            following = candidates(choice.engine, model)
            raise EngineDisagreement(choice.engine, following[1] if len(following) > 1 else "naive",
                                     self._start + row, trial.note)

    def record(self) -> dict[str, object]:
        """What the re-checks found, for the store's provenance (`engine_recheck`): the rows, the worst error
        against the naive loop in the model's dtype, each float64 trial (a row past that dtype's tolerance)
        with both its errors, and the seconds spent."""
        errors = [t.max_error for _, t in self._checked if t.max_error is not None]
        float64 = [{"row": row, "error": _finite(t.max_error), "float64_error": _finite(t.float64_error),
                    "rounding_error": _finite(t.rounding_error)} for row, t in self._checked
                   if t.float64_error is not None]
        return {"rows": [row for row, _ in self._checked], "max_error": _finite(max(errors)) if errors else None,
                "float64_trials": float64, "check_seconds": round(self._check_seconds, 4),
                "engine_seconds": round(self._engine_seconds, 4)}


@register_engine("auto", rank=None, torchscript=True)
def auto_engine(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                loss: str = "cross_entropy", chunk_size: int | None = 64) -> EngineResult:
    """The fastest engine that agrees with the naive loop on this batch (same contract as `vmap_engine`).
    Checks every call; an extraction calls `choose_engine` once and reuses the choice."""
    return choose_engine(model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size)[1]
