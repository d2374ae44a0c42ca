"""The set-level verdict: were these candidates, as a set, used to train the audited model?

Each candidate has a MINT score; the set gets a test of H0 "the candidates were not in training", i.e. their
scores are exchangeable with the scores of external samples the audited model never saw (the calibration).
The test is the one-sided Mann–Whitney U test: rank-based, so it needs no model of the score distribution,
and its false-positive rate is at most α whenever H0 holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from gmint.errors import InputError

ALTERNATIVES = {"greater": "candidates > external", "less": "candidates < external",
                "two-sided": "candidates ≠ external"}
# Exact null distribution of U (valid without ties) while it is cheap: n·m up to this many cells.
EXACT_MAX_CELLS = 10_000
# With ties the exact distribution does not apply; for small samples a permutation test replaces the
# normal approximation (whose tie correction is accurate only once both samples are moderately large).
PERMUTATION_MAX_SMALLER, PERMUTATION_MAX_TOTAL, PERMUTATION_RESAMPLES = 8, 500, 9_999


@dataclass(frozen=True)
class SetVerdict:
    """Outcome of the set test: candidates' MINT scores against the external calibration scores.

    `statistic` is U of the candidates: the number of (candidate, calibration) pairs where the candidate
    scores higher, ties counting one half.
    """

    test: str
    alternative: str
    statistic: float
    p_value: float
    n_candidates: int
    n_calibration: int
    mean_candidate: float
    mean_calibration: float

    @property
    def effect(self) -> float:
        """U / (n·m): the probability that a candidate outscores an external sample (0.5 under H0)."""
        return self.statistic / (self.n_candidates * self.n_calibration)

    def rejects(self, alpha: float = 0.05) -> bool:
        """Whether H0 ("not in training") is rejected at level α (p ≤ α)."""
        if not 0.0 < alpha < 1.0:
            raise InputError(f"alpha must be in (0, 1), got {alpha}")
        return self.p_value <= alpha

    def conclusion(self, alpha: float = 0.05) -> str:
        """The verdict in plain language; a non-rejection is never read as proof of non-membership."""
        if self.rejects(alpha):
            return (f"Evidence that these samples were used in training the audited model (p = "
                    f"{self.p_value:.3g} ≤ α = {alpha}).")
        return (f"No evidence that these samples were used in training (p = {self.p_value:.3g} > α = {alpha}); "
                "this is not proof of absence: a model that generalises well leaves little trace of its data.")

    def to_dict(self, alpha: float = 0.05) -> dict[str, object]:
        """The JSON form at level α, with the decision and its reading."""
        return {"test": self.test, "alternative": self.alternative, "statistic": self.statistic,
                "p_value": self.p_value, "alpha": alpha, "rejects_h0": self.rejects(alpha),
                "n_candidates": self.n_candidates, "n_calibration": self.n_calibration,
                "mean_candidate": self.mean_candidate, "mean_calibration": self.mean_calibration,
                "effect": self.effect, "conclusion": self.conclusion(alpha)}


def _scores(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise InputError(f"{what} must be a non-empty 1-D array of scores, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{what} contain NaN or Inf")
    return x


def set_test(candidate_scores: Sequence[float] | np.ndarray, external_scores: Sequence[float] | np.ndarray, *,
             alternative: str = "greater", seed: int = 0) -> SetVerdict:
    """Mann–Whitney U test of H0 "candidate scores are exchangeable with external scores".

    The p-value is exact where that is cheap and there are no ties, a permutation p-value for small
    samples with ties (seeded, so a verdict is reproducible), and otherwise the normal approximation with
    tie and continuity correction; `SetVerdict.test` names the one used.

    Args:
        candidate_scores: MINT scores of the samples under audit.
        external_scores: MINT scores of external samples the audited model never saw and the MINT
            classifier was never fitted on (the calibration).
        alternative: `greater` (members score higher: the audit's question), `less` or `two-sided`.
        seed: seeds the permutation p-value.
    """
    if alternative not in ALTERNATIVES:
        raise InputError(f"unknown alternative '{alternative}'; choose from {list(ALTERNATIVES)}")
    x = _scores(candidate_scores, "candidate scores")
    y = _scores(external_scores, "calibration scores")
    n, m = len(x), len(y)
    sides = "one-sided" if alternative != "two-sided" else "two-sided"
    if n == 1:  # one candidate: its rank among m + 1 exchangeable scores is uniform under H0
        above, below = int((y >= x[0]).sum()), int((y <= x[0]).sum())
        p_greater, p_less = (1 + above) / (m + 1), (1 + below) / (m + 1)
        p = {"greater": p_greater, "less": p_less, "two-sided": min(1.0, 2 * min(p_greater, p_less))}[alternative]
        u = float((y < x[0]).sum() + 0.5 * (y == x[0]).sum())
        return SetVerdict(
            test=f"Mann-Whitney U, {sides} ({ALTERNATIVES[alternative]} calibration), exact rank p-value "
                 "(one candidate; ties counted against rejection)",
            alternative=alternative, statistic=u, p_value=float(p), n_candidates=1, n_calibration=m,
            mean_candidate=float(x[0]), mean_calibration=float(y.mean()))
    ties = len(np.unique(np.concatenate([x, y]))) < n + m
    if ties and min(n, m) <= PERMUTATION_MAX_SMALLER and n + m <= PERMUTATION_MAX_TOTAL:
        u, p = permutation_u_test(x, y, alternative, seed=seed)
        how = "permutation p-value (small samples with ties)"
    else:
        exact = not ties and n * m <= EXACT_MAX_CELLS
        result = stats.mannwhitneyu(x, y, alternative=alternative, method="exact" if exact else "asymptotic")
        u, p = float(result.statistic), float(result.pvalue)
        how = "exact" if exact else "normal approximation, tie- and continuity-corrected"
    return SetVerdict(
        test=f"Mann-Whitney U, {sides} ({ALTERNATIVES[alternative]} calibration), {how}",
        alternative=alternative, statistic=u, p_value=p,
        n_candidates=n, n_calibration=m, mean_candidate=float(x.mean()), mean_calibration=float(y.mean()))


def permutation_u_test(x: np.ndarray, y: np.ndarray, alternative: str, *, seed: int = 0,
                       resamples: int = PERMUTATION_RESAMPLES) -> tuple[float, float]:
    """U of `x` against `y` and its permutation p-value, (1 + #{U* at least as extreme}) / (1 + resamples).

    U depends only on which midranks of the pooled sample fall in `x`, so the ranks are computed once and
    every resample is a random choice of len(x) of them: all resamples in one vectorised draw. Doubled
    midranks are integers, so "at least as extreme" is compared exactly.
    """
    n = len(x)
    twice_ranks = np.round(2 * stats.rankdata(np.concatenate([x, y]))).astype(np.int64)
    observed = int(twice_ranks[:n].sum())
    drawn = twice_ranks[_subsets(len(twice_ranks), n, resamples, np.random.default_rng(seed))].sum(axis=1)
    p_greater = (1 + int((drawn >= observed).sum())) / (1 + resamples)
    p_less = (1 + int((drawn <= observed).sum())) / (1 + resamples)
    p = {"greater": p_greater, "less": p_less, "two-sided": min(1.0, 2 * min(p_greater, p_less))}[alternative]
    return observed / 2 - n * (n + 1) / 2, p


def _subsets(total: int, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` uniform random `size`-subsets of range(total), as rows of indices. Where a size-tuple rarely
    repeats an index, tuples are drawn with replacement and those with a repeat drawn again (each kept tuple
    is then uniform over tuples of distinct indices); otherwise the first `size` of a random order."""
    if total < 2 * size * size:
        keys = rng.random((count, total), dtype=np.float32)
        return np.argpartition(keys, size - 1, axis=1)[:, :size]
    rows = rng.integers(0, total, (count, size))
    while (repeat := (np.diff(np.sort(rows, axis=1), axis=1) == 0).any(axis=1)).any():
        rows[repeat] = rng.integers(0, total, (int(repeat.sum()), size))
    return rows
