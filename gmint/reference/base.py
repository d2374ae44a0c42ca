"""What every membership attack on a reference folder shares: the task, the result, the registry and its options.

Every attack takes the signals of a reference folder (the audited model's and K reference models') and a task
(the rows it may fit on — the auditor's pool — and the rows it scores) and returns one score per scored row,
higher meaning "member", with the decision threshold its accuracy is read at and every parameter it used.
The attacks live one family to a module (`lira`, `rmia`, `calibrated`), each registering its scorers in
`ATTACKS` with the record of the options they take (gmint.reference.options); any other option, or a value
outside its range, is refused before anything runs.

The helpers below are the arithmetic the families share: finding the task's rows in the signals, the mean and
spread over the reference models that count for a row, and the thresholds read on the auditor's pool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gmint.assess.metrics import epsilon_threshold
from gmint.errors import InputError
from gmint.mint.threshold import best_threshold
from gmint.reference.options import AttackOptions, OptionsT
from gmint.reference.signals import ReferenceSignals
from gmint.registry import Registry

# Carlini et al.'s guard against a zero standard deviation (their reference code adds it to every σ).
SIGMA_FLOOR = 1e-30


class NotApplicable(InputError):
    """The attack cannot score with these reference models (too few out of a row, or no online models).

    Attributes:
        option: the attack's option that, given a value, would let it run ("" where none would): a caller
            that knows how the user gives options can say how.
    """

    def __init__(self, message: str, *, option: str = "") -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Task:
    """What an attack fits on and what it scores, by sample id.

    Attributes:
        fit: (n_fit,) sample ids the attack may fit on (the auditor's pool: membership known to the auditor).
        score: (n,) sample ids to score.
        seed: seeds everything random in the attack (MINT classifiers, subsampling).
        options: the attack's options record (see `Attack.parse_options`), or a mapping the attack parses into
            its own (a, gamma, kind, ...); what is not given keeps its default.
    """

    fit: np.ndarray
    score: np.ndarray
    seed: int = 0
    options: AttackOptions | Mapping[str, object] = field(default_factory=dict)

    def options_as(self, kind: type[OptionsT]) -> OptionsT:
        """The options as the record `kind` of the attack reading them.

        Raises:
            InputError: options outside `kind`'s (see AttackOptions.parse), or another attack's record.
        """
        if isinstance(self.options, kind):
            return self.options
        if isinstance(self.options, AttackOptions):
            raise InputError(f"{kind.who} reads {kind.__name__}, not {type(self.options).__name__}")
        return kind.parse(self.options)


@dataclass(frozen=True)
class Scored:
    """An attack's scores for the task's rows (higher: member), the threshold its accuracy is read at, and
    every parameter it used or fitted.

    `epsilon_threshold` is the decision threshold whose empirical ε lower bound is largest on the auditor's pool
    (`pool_epsilon_threshold`): the scored rows' ε bound is read at it, since a threshold chosen on the rows it
    bounds would overstate ε. None where the attack has no pool scores with both sides to choose it from.
    """

    score: np.ndarray
    threshold: float
    params: dict[str, object]
    epsilon_threshold: float | None = None


AttackFn = Callable[[ReferenceSignals, Task], Scored]


@dataclass(frozen=True)
class Attack:
    """A scorer with what it reads: `references` (False: the same for every K), `gradient` (Weight Modifiers),
    and the record of the options it takes."""

    run: AttackFn
    references: bool = True
    gradient: bool = False
    options: type[AttackOptions] = AttackOptions

    def __call__(self, signals: ReferenceSignals, task: Task) -> Scored:
        """Score the task's rows."""
        return self.run(signals, task)

    def parse_options(self, name: str, given: Mapping[str, object]) -> AttackOptions:
        """The options `given` to the attack registered as `name`, checked (see AttackOptions.parse)."""
        return self.options.parse(given, name)


ATTACKS: Registry[Attack] = Registry("attack")


def register_attack(name: str, *, references: bool = True, gradient: bool = False,
                    options: type[AttackOptions] = AttackOptions) -> Callable[[AttackFn], AttackFn]:
    """Decorator declaring a scorer in ATTACKS, with the record of the options it takes (default: none)."""
    def add(fn: AttackFn) -> AttackFn:
        ATTACKS.register(name)(Attack(fn, references, gradient, options))
        return fn

    return add


def attack_options(attacks: Sequence[str], given: Mapping[str, object] | None) -> dict[str, AttackOptions]:
    """Every chosen attack's options record, from `given` (attack name → its options; the rest at defaults).

    Raises:
        UnknownNameError: an attack not registered (chosen, or given options).
        InputError: no attack chosen, options for an attack not among those chosen (they would be ignored), or
            options an attack does not take (see AttackOptions.parse).
    """
    if not attacks:
        raise InputError(f"no attack chosen; choose from {ATTACKS.names()}")
    for name in [*attacks, *(given or {})]:
        ATTACKS.get(name)
    unused = [name for name in (given or {}) if name not in attacks]
    if unused:
        raise InputError(f"options are given for {', '.join(unused)}, which {'is' if len(unused) == 1 else 'are'} "
                         f"not among the attacks run ({', '.join(attacks)})")
    return {name: ATTACKS.get(name).parse_options(name, _mapping((given or {}).get(name, {}), name))
            for name in dict.fromkeys(attacks)}


def _mapping(value: object, name: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InputError(f"the options of attack '{name}' must be an object of option names and values, e.g. "
                         f"{{}}; it {ATTACKS.get(name).options.described()}")
    return value


def positions(sample_id: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Indices of `wanted` sample ids in `sample_id`.

    Raises:
        InputError: a wanted id the signals do not hold.
    """
    order = np.argsort(sample_id, kind="stable")
    where = np.searchsorted(sample_id, wanted, sorter=order).clip(0, len(sample_id) - 1)
    found = order[where]
    missing = sample_id[found] != wanted
    if missing.any():
        raise InputError(f"{int(missing.sum())} rows to score are not in the reference signals (e.g. sample "
                         f"{int(np.asarray(wanted)[missing][0])})")
    return found


def masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation (ddof 0) over the models where `mask` holds.

    Args:
        values: (K, N, ...) one value (or vector) per model and row.
        mask: (K, N) bool, which models count for each row.

    Returns:
        (mean, std, count): (N, ...), (N, ...), (N,); mean and std are NaN where no model counts.
    """
    weights = mask.reshape(mask.shape + (1,) * (values.ndim - 2)).astype(np.float64)
    count = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weights * values).sum(axis=0) / weights.sum(axis=0)
        var = (weights * (values - mean) ** 2).sum(axis=0) / weights.sum(axis=0)
    return mean, np.sqrt(var), count


def require_models(count: np.ndarray, needed: int, what: str) -> None:
    """Refuse rows with fewer than `needed` reference models `what` ("out of", "trained on") each of them.

    Raises:
        NotApplicable: naming the fewest a row has.
    """
    if len(count) and int(count.min()) < needed:
        raise NotApplicable(f"needs ≥ {needed} reference model{'s' if needed > 1 else ''} {what} each scored row, "
                            f"has {int(count.min())}")


def _pool_threshold(score_fit: np.ndarray, membership_fit: np.ndarray) -> float:
    """The balanced-accuracy threshold on the auditor's pool (0 where the pool lacks a side)."""
    if len(np.unique(membership_fit)) < 2:
        return 0.0
    return best_threshold(membership_fit, score_fit)


def pool_epsilon_threshold(membership_fit: np.ndarray, score_fit: np.ndarray) -> float | None:
    """The threshold whose ε lower bound is largest on the auditor's pool (None where the pool lacks a side)."""
    if len(np.unique(membership_fit)) < 2:
        return None
    return epsilon_threshold(membership_fit, score_fit)


def scored_on_pool(score_all: np.ndarray, membership: np.ndarray, fit: np.ndarray, rows: np.ndarray,
                   params: dict[str, object]) -> Scored:
    """The scores of the scored `rows`, with the balanced-accuracy and the ε thresholds read on the `fit` rows
    (the auditor's pool), from one score per row of the signals."""
    pool_score, pool_membership = score_all[fit], membership[fit]
    return Scored(score_all[rows], _pool_threshold(pool_score, pool_membership), params,
                  pool_epsilon_threshold(pool_membership, pool_score))
