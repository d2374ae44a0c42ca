"""Attacks side by side: every chosen attack at every K on the same held-out rows, with the same metrics.

The rows are those `gmint eval` scores: the held-out candidates (role 1) whose signals are finite under every
model, balanced by the same seeded subsampling; attacks fit only on the auditor's pool. Each figure is an
`Estimate` of gmint.assess.metrics (bootstrap 95% interval; a TPR at an FPR only where the externals resolve
it). An attack that cannot run with K models (too few out of a row, an online attack on an offline set) is
kept in the table with the reason. Every other attack is also set against the loss threshold (`loss`, which reads
no reference model) on the same rows: AUC(attack) − AUC(loss threshold) with a paired bootstrap interval, the
figure that says whether an attack reads more than the one-line baseline beyond noise. And each attack's held-out
error rates bound ε empirically (`EpsilonBound`, as `gmint eval` gives it for a MINT classifier), at the decision
threshold the attack chose on the auditor's pool.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gmint.assess.metrics import (
    EpsilonBound,
    Estimate,
    balance,
    epsilon_lower_bound,
    membership_metrics,
    paired_auc_difference,
    resampling_unit,
)
from gmint.data.split import HOLDOUT, POOL, one_sided_groups
from gmint.errors import InputError
from gmint.reference.base import ATTACKS, NotApplicable, Task, attack_options, positions
from gmint.reference.lira import LOSS_ATTACK
from gmint.reference.signals import ReferenceSignals


@dataclass(frozen=True)
class AttackResult:
    """One attack at one K: its metrics (None with `unresolved` where it could not run, and `needs_option` where
    one of its options, given, would let it run), its parameters, the seconds it took and its scores on the
    evaluation rows. K is 0 for attacks that read no reference model. `versus_loss` is AUC(attack) − AUC(loss
    threshold) on the same resampled rows (None for the loss threshold itself and where the attack could not
    run), and `epsilon` the empirical ε lower bound of the attack's error rates on those rows at the threshold it
    chose on the pool (None where it could not run or had no pool scores to choose one from)."""

    attack: str
    k: int
    metrics: dict[str, Estimate] | None
    params: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    score: np.ndarray | None = None
    unresolved: str = ""
    needs_option: str = ""
    versus_loss: Estimate | None = None
    epsilon: EpsilonBound | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON form (without the per-row scores)."""
        result: dict[str, object] = {"attack": self.attack, "k": self.k, "params": self.params,
                                     "seconds": self.seconds}
        if self.metrics is not None:
            result["metrics"] = {name: est.to_dict() for name, est in self.metrics.items()}
            if self.versus_loss is not None:
                result["auc_minus_loss_threshold"] = self.versus_loss.to_dict()
            if self.epsilon is not None:
                result["epsilon"] = self.epsilon.to_dict()
        else:
            result["unresolved"] = self.unresolved
            if self.needs_option:
                result["needs_option"] = self.needs_option
        return result


@dataclass(frozen=True)
class Comparison:
    """Every attack's result on one reference folder's evaluation rows."""

    mode: str
    sample_id: np.ndarray
    membership: np.ndarray
    results: tuple[AttackResult, ...]
    fit_rows: int
    seed: int
    intervals: str = "rows"  # what the bootstrap resampled: rows, or whole groups

    def to_dict(self) -> dict[str, object]:
        """The JSON of comparison.json."""
        return {"mode": self.mode, "rows": {"members": int(self.membership.sum()),
                                            "external": int((self.membership == 0).sum()),
                                            "fit_rows": self.fit_rows},
                "seed": self.seed, "intervals": self.intervals, "results": [r.to_dict() for r in self.results]}


def evaluation_rows(signals: ReferenceSignals, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit ids, scored ids, their membership): the pool rows, and the balanced held-out rows `gmint eval` scores.

    Raises:
        InputError: no held-out member or external with finite signals.
    """
    o = signals.output
    finite = o.finite.copy()
    if signals.gradient is not None:
        g = signals.gradient
        bad = g.sample_id[~g.finite]
        finite &= ~np.isin(o.sample_id, bad)
    labelled = np.isin(o.membership, (0, 1)) & finite
    fit = o.sample_id[labelled & (o.role == POOL)]
    held = np.flatnonzero(labelled & (o.role == HOLDOUT))
    if len(held) == 0 or len(np.unique(o.membership[held])) < 2:
        raise InputError("the reference signals hold no held-out members and externals to score")
    held = held[balance(o.membership[held], seed)]
    return fit, o.sample_id[held], o.membership[held].astype(np.int64)


def compare_attacks(signals: ReferenceSignals, attacks: Sequence[str], ks: Sequence[int], *, n_boot: int = 1000,
                    seed: int = 0, options: Mapping[str, Mapping[str, object]] | None = None) -> Comparison:
    """Run each attack at each K (once for attacks that read no reference model) on the same rows, each set
    against the loss threshold on those rows (`AttackResult.versus_loss`; the bootstrap as the metrics') and its
    ε lower bound read at the threshold it chose on the pool (`AttackResult.epsilon`).

    Args:
        signals: the folder's signals with at least max(ks) reference models.
        attacks: names in ATTACKS.
        ks: numbers of reference models; each uses the set's first K models.
        n_boot: bootstrap replicates of the intervals.
        seed: seeds the balancing, the bootstrap and the attacks.
        options: attack name → its options (e.g. {"rmia": {"a": 0.3}}), each checked against the options the
            attack takes before any attack runs.

    Raises:
        UnknownNameError: an unknown attack.
        InputError: no attack or no K, a K outside 1 to the signals' number of reference models, or options an
            attack does not take (see `attack_options`).
    """
    chosen = attack_options(attacks, options)
    if not ks:
        raise InputError("no number of reference models chosen")
    for k in ks:
        if not 1 <= k <= signals.k:
            raise InputError(f"K = {k} reference models asked for; the signals hold {signals.k} (K from 1 to "
                             f"{signals.k})")
    fit, ids, membership = evaluation_rows(signals, seed)
    o = signals.output
    groups = None if o.group is None else one_sided_groups(membership, o.group[positions(o.sample_id, ids)])
    # the baseline every attack is set against: it reads no reference model, so it is scored whether chosen or not
    loss = ATTACKS.get(LOSS_ATTACK)(signals.first(1), Task(fit, ids, seed)).score
    results = []
    for name in attacks:
        attack = ATTACKS.get(name)
        for k in sorted(set(ks)) if attack.references else [0]:
            task = Task(fit, ids, seed, chosen[name])
            t0 = time.perf_counter()
            try:
                scored = attack(signals.first(k) if k else signals.first(1), task)
            except NotApplicable as exc:
                results.append(AttackResult(name, k, None, unresolved=str(exc), needs_option=exc.option))
                continue
            metrics = membership_metrics(membership, scored.score, threshold=scored.threshold, n_boot=n_boot,
                                         seed=seed, groups=groups)
            versus = None if name == LOSS_ATTACK else paired_auc_difference(
                membership, scored.score, loss, n_boot=n_boot, seed=seed, groups=groups)
            # the pool's threshold, never one chosen on the rows it bounds (that would overstate ε)
            epsilon = None if scored.epsilon_threshold is None else epsilon_lower_bound(
                membership, scored.score, scored.epsilon_threshold, groups=groups)
            results.append(AttackResult(name, k, metrics, {**scored.params, "threshold": scored.threshold},
                                        round(time.perf_counter() - t0, 3), scored.score, versus_loss=versus,
                                        epsilon=epsilon))
    intervals = resampling_unit(groups)
    return Comparison(signals.mode, ids, membership, tuple(results), len(fit), seed, intervals)
