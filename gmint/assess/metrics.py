"""Membership metrics on scores where members are the positive class (1) and external samples 0.

Every metric comes with a stratified bootstrap 95% interval: resampling members and externals
separately keeps the evaluation balanced in every replicate. Where rows come in groups that each sit on
one side (the frames of one GTSRB track), replicates resample whole groups: frames of one sign are not
independent rows, and resampling them one by one would draw intervals far too narrow. A TPR at a stated
FPR is reported only where the externals resolve that FPR; otherwise it has no value and says how many
externals it needs.

Two readings compare or bound a classifier rather than describe it: the paired AUC difference against the
loss threshold (both scored on the same resampled rows in every replicate, so what the rows share cancels),
and the empirical ε lower bound of differential-privacy auditing (Clopper–Pearson bounds on the error
rates at a threshold chosen on the auditor's pool, never on the rows that bound it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score

from gmint.errors import InputError
from gmint.mint.base import check_scores


def accuracy(membership: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of rows whose `score >= threshold` decision equals their membership."""
    return float(np.mean((score >= threshold) == (membership == 1)))


def balanced_accuracy(membership: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    """Mean of TPR and TNR at the threshold: accuracy as if both sides were equally many."""
    pred = score >= threshold
    return float(0.5 * (pred[membership == 1].mean() + (~pred[membership == 0]).mean()))


def auc(membership: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half)."""
    return float(roc_auc_score(membership, score))


def tpr_at_fpr(membership: np.ndarray, score: np.ndarray, max_fpr: float) -> float:
    """Highest true-positive rate over thresholds whose false-positive rate is ≤ max_fpr."""
    fpr, tpr = roc_points(np.asarray(membership), np.asarray(score, np.float64))
    return _tpr_at(fpr, tpr, max_fpr)


def roc_points(membership: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve (fpr, tpr), members positive: the points of sklearn's `roc_curve` (drop_intermediate=True)
    bit for bit (tested), without its input validation, which costs ~2 ms a call and dominated the bootstrap."""
    order = np.argsort(score, kind="stable")[::-1]
    ranked, y = score[order], membership[order].astype(np.float64)
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last row of each run of tied scores
    tps = np.cumsum(y)[ends]
    fps = 1 + ends - tps
    if len(fps) > 2:  # drop points collinear with their neighbours, as sklearn does
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps = fps[corner], tps[corner]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1]


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    return float(tpr[np.searchsorted(fpr, max_fpr, side="right") - 1])


METRIC_NAMES = ("accuracy", "balanced_accuracy", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
STATED_FPR = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}
# A collapsed classifier: this share of the scored rows on one value (rounded to COLLAPSE_DECIMALS).
COLLAPSE_SHARE, COLLAPSE_DECIMALS = 0.9, 6


def chance_level(metric: str) -> float:
    """What a score that knows nothing of membership reaches on `metric`, the line a figure draws as chance:
    at a fixed FPR such a score finds members as often as it wrongly calls externals (TPR = that FPR); on
    balanced rows its accuracy and AUC are 0.5."""
    return STATED_FPR.get(metric, 0.5)


def externals_needed(max_fpr: float) -> int:
    """Externals needed before `max_fpr` is a false-positive rate the evaluation can reach.

    With n externals the FPR moves in steps of 1/n: below n = 1/max_fpr not even one false positive fits
    under that rate, so "TPR at max_fpr" would be TPR at zero false positives, labelled as something else.
    """
    return math.ceil(round(1 / max_fpr, 9))


def _all_metrics(membership: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, ...]:
    """Every metric from one ROC curve (bootstrap replicates call this thousands of times)."""
    fpr, tpr = roc_points(membership, score)
    return (accuracy(membership, score, threshold), balanced_accuracy(membership, score, threshold),
            float(np.trapezoid(tpr, fpr)), _tpr_at(fpr, tpr, 0.01), _tpr_at(fpr, tpr, 0.001))


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the evaluation rows and its bootstrap percentile interval; all None, with the
    reason in `unresolved`, where the evaluation rows cannot measure it."""

    value: float | None
    low: float | None
    high: float | None
    unresolved: str = ""

    def to_dict(self) -> dict[str, object]:
        """The JSON form: value, ci95_low, ci95_high, and `unresolved` only where it is set."""
        values: dict[str, object] = {"value": self.value, "ci95_low": self.low, "ci95_high": self.high}
        return {**values, "unresolved": self.unresolved} if self.unresolved else values

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Estimate:
        """The estimate a `to_dict` record describes (e.g. a row of the benchmark grid's JSONL)."""
        return cls(_optional_float(d["value"]), _optional_float(d["ci95_low"]), _optional_float(d["ci95_high"]),
                   str(d.get("unresolved", "")))


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float):
        raise InputError(f"a metric's value must be a number or null, got {value!r}")
    return float(value)


def membership_metrics(membership: np.ndarray, score: np.ndarray, *, threshold: float = 0.5,
                       n_boot: int = 1000, seed: int = 0, groups: np.ndarray | None = None) -> dict[str, Estimate]:
    """All METRIC_NAMES with stratified-bootstrap 95% intervals (n_boot = 0 gives point estimates only).

    With `groups` (from `one_sided_groups`), each replicate draws whole groups, with replacement, on each
    side; with singleton groups that is the row bootstrap, replicate for replicate. A TPR whose stated FPR
    needs more externals than there are (see `externals_needed`) is unresolved: value and interval None.
    """
    membership, score = np.asarray(membership), np.asarray(score, np.float64)
    check_scores(membership, score)
    point = _all_metrics(membership, score, threshold)
    neg = np.flatnonzero(membership == 0)
    low, high = point, point
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        sides = [_units(membership == side, groups) for side in (1, 0)]
        samples = np.empty((n_boot, len(METRIC_NAMES)))
        for b in range(n_boot):
            idx = np.concatenate([_draw(units, rng) for units in sides])
            samples[b] = _all_metrics(membership[idx], score[idx], threshold)
        low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    result: dict[str, Estimate] = {}
    for i, name in enumerate(METRIC_NAMES):
        needed = externals_needed(STATED_FPR[name]) if name in STATED_FPR else 0
        result[name] = (Estimate(None, None, None, f"needs ≥ {needed:,} externals, has {len(neg):,}")
                        if len(neg) < needed else Estimate(point[i], float(low[i]), float(high[i])))
    return result


def paired_auc_difference(membership: np.ndarray, score: np.ndarray, baseline: np.ndarray, *, n_boot: int = 1000,
                          seed: int = 0, groups: np.ndarray | None = None) -> Estimate:
    """AUC(score) − AUC(baseline) on the same rows, with a paired stratified-bootstrap 95% interval.

    Every replicate scores both on the same resampled rows (whole groups where `groups` is given), so what
    the two share (which rows are easy, which members the model memorised) cancels, and the interval is that
    of the difference, far narrower than two separate intervals would suggest. An interval above 0 says the
    classifier reads more than the baseline on these rows.
    """
    membership = np.asarray(membership)
    score, baseline = np.asarray(score, np.float64), np.asarray(baseline, np.float64)
    check_scores(membership, score)
    check_scores(membership, baseline)
    point = auc(membership, score) - auc(membership, baseline)
    if n_boot <= 0:
        return Estimate(point, point, point)
    rng = np.random.default_rng(seed)
    sides = [_units(membership == side, groups) for side in (1, 0)]
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([_draw(units, rng) for units in sides])
        y = membership[idx]
        diffs[b] = _auc(y, score[idx]) - _auc(y, baseline[idx])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Estimate(point, float(low), float(high))


def _auc(membership: np.ndarray, score: np.ndarray) -> float:
    fpr, tpr = roc_points(membership, score)
    return float(np.trapezoid(tpr, fpr))


# The confidence of the ε lower bound: the usual 95% of differential-privacy auditing. Each of the two error
# rates gets a one-sided Clopper–Pearson bound at 1 − (1 − EPSILON_CONFIDENCE) / 2, so both hold together.
EPSILON_CONFIDENCE = 0.95


@dataclass(frozen=True)
class EpsilonBound:
    """The empirical ε lower bound of a membership test (DP auditing, as TF-Privacy and Privacy Meter report it).

    At a decision threshold chosen on the auditor's pool, the held-out false-positive rate (externals called
    members) and false-negative rate (members missed) get one-sided Clopper–Pearson upper bounds; any
    (ε, δ)-DP training would keep 1 − δ − FPR ≤ e^ε·FNR and 1 − δ − FNR ≤ e^ε·FPR, so
    ε ≥ max(log((1 − δ − FPR_high) / FNR_high), log((1 − δ − FNR_high) / FPR_high)) at the stated confidence.
    0 where the test shows nothing.
    """

    value: float
    confidence: float
    delta: float
    threshold: float
    fpr: float
    fnr: float
    fpr_high: float
    fnr_high: float
    members: int
    external: int

    def to_dict(self) -> dict[str, object]:
        """The JSON form, with the plain-language conclusion."""
        return {"epsilon_lower_bound": self.value, "confidence": self.confidence, "delta": self.delta,
                "threshold": self.threshold, "fpr": self.fpr, "fnr": self.fnr, "fpr_upper": self.fpr_high,
                "fnr_upper": self.fnr_high, "members": self.members, "external": self.external,
                "conclusion": self.conclusion}

    @property
    def conclusion(self) -> str:
        """What the bound says, for a model trained without differential privacy as much as with."""
        if self.value <= 0:
            return (f"no ε lower bound at {self.confidence:.0%} confidence: the test's error rates are consistent "
                    "with any privacy level")
        return (f"at {self.confidence:.0%} confidence no (ε, δ={self.delta:g}) differential-privacy guarantee with "
                f"ε < {self.value:.3f} can hold for this training; for a model trained without DP it is a measured "
                "floor on its leakage, not a guarantee of any level")


def clopper_pearson_upper(errors: np.ndarray | int, n: np.ndarray | int, confidence: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound on a rate with `errors` of `n` at `confidence` (1 where all err)."""
    errors, n = np.asarray(errors, np.float64), np.asarray(n, np.float64)
    with np.errstate(invalid="ignore"):
        upper = beta.ppf(confidence, errors + 1, np.maximum(n - errors, 1e-12))
    return np.where(errors >= n, 1.0, upper)


def epsilon_from_rates(fpr_high: np.ndarray, fnr_high: np.ndarray, delta: float) -> np.ndarray:
    """ε = max(log((1 − δ − FPR_high) / FNR_high), log((1 − δ − FNR_high) / FPR_high)), floored at 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.maximum(1 - delta - fpr_high, 0) / fnr_high)
        b = np.log(np.maximum(1 - delta - fnr_high, 0) / fpr_high)
    return np.maximum(np.nan_to_num(np.maximum(a, b), nan=0.0, neginf=0.0), 0.0)


def epsilon_threshold(membership: np.ndarray, score: np.ndarray, *, confidence: float = EPSILON_CONFIDENCE,
                      delta: float = 0.0) -> float:
    """The decision threshold (score ≥ threshold → member) whose ε lower bound is largest on these rows.

    Called on the auditor's pool: a threshold chosen on the rows that then bound ε would overstate it.
    """
    membership, score = np.asarray(membership), np.asarray(score, np.float64)
    check_scores(membership, score)
    candidates = np.unique(score)
    members, external = np.sort(score[membership == 1]), np.sort(score[membership == 0])
    fn = np.searchsorted(members, candidates, side="left")  # members below the threshold
    fp = len(external) - np.searchsorted(external, candidates, side="left")  # externals at or above it
    side = 1 - (1 - confidence) / 2
    eps = epsilon_from_rates(clopper_pearson_upper(fp, len(external), side),
                             clopper_pearson_upper(fn, len(members), side), delta)
    return float(candidates[int(np.argmax(eps))])


def epsilon_lower_bound(membership: np.ndarray, score: np.ndarray, threshold: float, *,
                        confidence: float = EPSILON_CONFIDENCE, delta: float = 0.0,
                        groups: np.ndarray | None = None) -> EpsilonBound:
    """The ε lower bound from rows' error rates at a `threshold` chosen elsewhere (see `epsilon_threshold`).

    Clopper–Pearson bounds hold for independent trials. Where rows come in groups (`groups`, as the bootstrap
    draws them: frames of one physical sign), rows of a group err together, and counting each would narrow the
    bounds and overstate ε; the bound is then taken on one row per group (its first), the groups being
    independent draws.

    Raises:
        InputError: a confidence outside (0, 1) or a δ outside [0, 1).
    """
    if not 0 < confidence < 1 or not 0 <= delta < 1:
        raise InputError(f"the ε bound needs a confidence in (0, 1) and δ in [0, 1), got {confidence} and {delta}")
    membership, score = np.asarray(membership), np.asarray(score, np.float64)
    check_scores(membership, score)
    if groups is not None:
        first = np.sort(np.unique(np.asarray(groups), return_index=True)[1])
        membership, score = membership[first], score[first]
    called = score >= threshold
    members, external = int((membership == 1).sum()), int((membership == 0).sum())
    fn, fp = int((~called[membership == 1]).sum()), int(called[membership == 0].sum())
    side = 1 - (1 - confidence) / 2
    fpr_high = float(clopper_pearson_upper(fp, external, side))
    fnr_high = float(clopper_pearson_upper(fn, members, side))
    value = float(epsilon_from_rates(np.asarray(fpr_high), np.asarray(fnr_high), delta))
    return EpsilonBound(value, confidence, delta, float(threshold), fp / external, fn / members, fpr_high, fnr_high,
                        members, external)


@dataclass(frozen=True)
class SeedSpread:
    """A metric over a classifier's fitting seeds on the same rows: the median is the figure to report, the
    range beside it. One seed's value alone is a draw, not the classifier's result: fits of the same recipe
    can differ by more than the row bootstrap's interval."""

    median: float | None
    low: float | None
    high: float | None
    seeds: int

    def to_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {"median": self.median, "min": self.low, "max": self.high, "seeds": self.seeds}

    def __str__(self) -> str:
        if self.median is None or self.low is None or self.high is None:
            return "n/a"
        if self.seeds == 1:
            return f"{self.median:.3f} (1 seed)"
        return f"{self.median:.3f} (median of {self.seeds} seeds, range {self.low:.3f}–{self.high:.3f})"


def seed_spread(values: Sequence[float | None]) -> SeedSpread:
    """The median and range of a metric's values over seeds (those the rows resolve; None where none do)."""
    known = [v for v in values if v is not None]
    if not known:
        return SeedSpread(None, None, None, len(values))
    return SeedSpread(float(np.median(known)), float(min(known)), float(max(known)), len(known))


def resampling_unit(groups: np.ndarray | None) -> str:
    """What the bootstrap resamples, in words, for a result to carry: `rows` or `whole groups (N groups of rows)`."""
    return "rows" if groups is None else f"whole groups ({len(np.unique(groups))} groups of rows)"


def _units(on_side: np.ndarray, groups: np.ndarray | None) -> np.ndarray | list[np.ndarray]:
    """One side's resampling units: its row indices, or a list of each group's row indices."""
    rows = np.flatnonzero(on_side)
    if groups is None:
        return rows
    keys = groups[rows]
    order = np.argsort(keys, kind="stable")
    return np.split(rows[order], np.flatnonzero(np.diff(keys[order])) + 1)


def _draw(units: np.ndarray | list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A replicate of one side: as many units as it has, drawn with replacement (rows, or whole groups)."""
    chosen = rng.choice(len(units), len(units))
    if isinstance(units, np.ndarray):
        return units[chosen]
    return np.concatenate([units[i] for i in chosen])


def control_off_chance(auc: Estimate) -> str | None:
    """A warning when a negative control's AUC interval excludes chance, else None.

    A control model saw neither side, so a classifier on its features can only tell members from externals
    by something else the pool and the holdout differ in (which classes or groups are members, say). Below
    chance, that difference flips between pool and holdout; above, it carries over. Either way it reaches
    the audited model's classifier too, and its figures are not a clean membership signal.
    """
    low, high = auc.low, auc.high
    if auc.value is None or low is None or high is None or low <= 0.5 <= high:
        return None
    side = "below" if high < 0.5 else "above"
    return (f"its AUC {auc.value:.3f} [{low:.3f}, {high:.3f}] is {side} chance: unless this is the one 95% "
            "interval in twenty that misses, pool and holdout differ in something besides membership (e.g. which "
            "classes or groups are members), and the membership figures above carry it too")


def score_collapse(score: np.ndarray) -> str | None:
    """A warning when the scores have (nearly) stopped ranking rows, else None.

    When most rows share one score, AUC and TPR come from how ties are broken, not from the classifier
    (a net stuck at a constant, or saturated to 0/1): the figures must not be read as a membership signal.
    """
    values, counts = np.unique(np.round(np.asarray(score, np.float64), COLLAPSE_DECIMALS), return_counts=True)
    top = int(np.argmax(counts))
    if len(values) == 1:
        return f"all {len(score)} scores are {values[0]:.6g}: the classifier does not rank the rows at all"
    share = counts[top] / len(score)
    if share >= COLLAPSE_SHARE:
        return (f"{share:.1%} of the {len(score)} scores are {values[top]:.6g}: the classifier hardly ranks the "
                "rows; its AUC and TPR reflect ties")
    return None


def balance(membership: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of a balanced subset: the larger side subsampled (seeded) to the smaller side's size."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(membership == 1), np.flatnonzero(membership == 0)
    n = min(len(pos), len(neg))
    return np.sort(np.concatenate([rng.permutation(pos)[:n], rng.permutation(neg)[:n]]))
