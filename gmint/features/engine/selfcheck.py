"""The engine an extraction runs: the fastest one that proves itself on the model at hand.

Candidates are tried fastest first (`hooks`, then `vmap`, then the naive loop). Each computes the first
batch; a few of its rows (the first, the last and the highest-loss ones, where cancellation bites) are
recomputed by the naive loop — the definition of a Weight Modifier: the gradient of one sample's loss
with the model run on that sample alone — and compared. The first candidate that agrees computes every
batch; one that disagrees or fails is passed over with one warning line. The trials are recorded in the
store's provenance.

How one engine's result is judged against the naive loop (the relative error, the tolerance, the
float64 trial that tells rounding from a wrong formula) is `agreement.py`'s.

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

import math
import random
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gmint.errors import InputError, UnsupportedModelError
from gmint.features.engine.agreement import Check, Float64Copy, Reference, Trial, finite, one_line, run_engine
from gmint.features.engine.base import ENGINES, EngineResult, Plan, labels, register_engine
from gmint.features.reduce import Reduction

CHECK_ROWS = 4
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
class EngineChoice:
    """The engine that computes every batch of an extraction, and the evidence for it."""

    requested: str
    engine: str
    rows: tuple[int, ...]
    tolerance: float
    trials: tuple[Trial, ...]
    plan: Plan | None = None
    # the float64 copy of the model for the later batches' trials
    float64: Float64Copy = field(default_factory=Float64Copy, repr=False, compare=False)

    def run(self, model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
            loss: str = "cross_entropy", chunk_size: int | None = 64) -> EngineResult:
        """One batch on the chosen engine, with the plan it made when it was chosen."""
        return run_engine(self.engine, self.plan, model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size)

    @property
    def fallbacks(self) -> dict[str, str]:
        """Parameters the chosen engine leaves to another method, and why."""
        return self.plan.notes if self.plan is not None else {}

    def provenance(self) -> dict[str, object]:
        """The record a store keeps: which engine ran, which were tried, how well each agreed."""
        trials = [{**vars(t), "max_error": finite(t.max_error), "float64_error": finite(t.float64_error),
                   "rounding_error": finite(t.rounding_error)} for t in self.trials]
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
    first_row = Reference.compute(model, layers, reduction, x[:1], y[:1], loss)
    trials: list[Trial] = []
    check: Check | None = None
    float64 = Float64Copy()
    for position, engine in enumerate(chain):
        last = position == len(chain) - 1
        try:
            result = run_engine(engine, plans.get(engine), model, layers, reduction, x, y, loss=loss,
                          chunk_size=chunk_size)
        except InputError:
            raise
        except Exception as exc:
            if last:
                raise UnsupportedModelError(f"the {engine} engine cannot run this model: "
                                            f"{one_line(exc)}") from exc
            trials.append(Trial(engine, False, None, f"failed: {one_line(exc)}"))
            _notice(engine, chain[position + 1], trials[-1].note)
            continue
        if engine == "naive":
            trials.append(Trial(engine, True, 0.0, "the definition"))
        else:
            if check is None:
                rows = _check_rows(result.loss, check_rows)
                others = list(rows[1:])  # rows[0] is row 0, whose reference is computed already
                check = Check(model, layers, reduction, x, y, rows, first_row.joined(
                    Reference.compute(model, layers, reduction, x[others], y[others], loss) if others else None),
                    float64, loss, chunk_size)
            trials.append(check.judge(engine, result))
            if not trials[-1].passed:
                _notice(engine, chain[position + 1], trials[-1].note)
                continue
        rows, tolerance = (check.rows, check.tolerance) if check is not None else ((), 0.0)
        return EngineChoice(requested, engine, rows, tolerance, tuple(trials), plans.get(engine), float64), result
    raise AssertionError("the naive loop ends every candidate list")  # pragma: no cover


def _check_rows(losses: Tensor, count: int) -> tuple[int, ...]:
    """The first and last rows and the highest-loss ones, at most `count`, in order."""
    order = torch.argsort(torch.nan_to_num(losses.detach().float().cpu(), nan=-math.inf), descending=True)
    chosen = list(dict.fromkeys([0, len(losses) - 1, *order.tolist()]))[:count]
    return tuple(sorted(chosen))


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
        reference = Reference.compute(model, layers, reduction, x[row:row + 1], y[row:row + 1], loss)
        trial = Check(model, layers, reduction, x, y, (row,), reference, choice.float64, loss,
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
        float64 = [{"row": row, "error": finite(t.max_error), "float64_error": finite(t.float64_error),
                    "rounding_error": finite(t.rounding_error)} for row, t in self._checked
                   if t.float64_error is not None]
        return {"rows": [row for row, _ in self._checked], "max_error": finite(max(errors)) if errors else None,
                "float64_trials": float64, "check_seconds": round(self._check_seconds, 4),
                "engine_seconds": round(self._engine_seconds, 4)}


@register_engine("auto", rank=None, torchscript=True)
def auto_engine(model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                loss: str = "cross_entropy", chunk_size: int | None = 64) -> EngineResult:
    """The fastest engine that agrees with the naive loop on this batch (same contract as `vmap_engine`).
    Checks every call; an extraction calls `choose_engine` once and reuses the choice."""
    return choose_engine(model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size)[1]
