"""Membership attacks that read reference models, beside the reference-free ones, each a scorer registered by name.

Every scorer takes the signals of a reference folder (the audited model's and K reference models') and a task
(the rows it may fit on — the auditor's pool — and the rows it scores) and returns one score per scored row,
higher meaning "member", with the decision threshold its accuracy is read at and every parameter it used.

- `loss`: −loss of the audited model (what the loss threshold ranks by); no references.
- `lira-offline` / `lira-offline-global` (Carlini et al. 2022, offline LiRA): the logit-scaled confidence
  φ = log(p_y / (1 − p_y)) of the audited model against a Gaussian N(μ_out, σ²_out) fitted to the same sample's
  φ under the reference models that did not train on it. The paper's score is Λ = Pr[Z ≤ φ] = Φ(z) with
  z = (φ − μ_out)/σ_out; gmint reports z itself, which ranks the rows identically and does not saturate at 1
  for memorised members (Φ rounds every z > 8.3 to 1.0 in float64, making them ties). `-global` uses one
  σ_out for all samples (the paper's fixed variance, for few reference models): the standard deviation of all
  out observations of the candidates.
- `lira-online` / `lira-online-global` (online LiRA): log N(φ; μ_in, σ²_in) − log N(φ; μ_out, σ²_out), with
  the in-Gaussian fitted to the reference models that trained on the sample (online reference sets only).
- `rmia` (Zarifzadeh et al. 2024, offline RMIA): Pr(x|θ) = p_y(x) under the audited model, Pr(x) =
  ½((1 + a)·Pr_out(x) + (1 − a)) with Pr_out the mean over reference models out of x, the likelihood ratio
  LR(x, z) = (Pr(x|θ)/Pr(x)) / (Pr(z|θ)/Pr(z)) against population samples z (the split's control rows, their
  Pr(z) by the same formula), and score(x) = the fraction of z with LR(x, z) > γ. `a` is fitted as the paper
  does: one reference model is taken as the target and the others as references, and the a in {0, 0.1, …, 1}
  with the highest AUC on population rows is kept; where no such fit exists (K < 3 halves in complementary
  pairs leave a pseudo-target's non-members without an out model) it is fitted the same way on the auditor's
  labelled pool of the audited model; the record says which. `rmia-online`: Pr(x) = the mean over all
  reference models (online reference sets only).
- `gmint`: the MINT classifier on the audited model's Weight Modifiers (no references).
- `gmint-calibrated`: Weight Modifiers standardised per sample against the same sample's Weight Modifiers under
  the reference models out of it: z = (w − μ_ref)/σ_ref per feature, σ_ref per sample where every row has at
  least `per_sample_min` out models (default 64, where Carlini et al. find a per-example variance starts to pay;
  measured here too: per-sample σ from 4 and 8 out models dropped CIFAR-10 small-CNN AUC to 0.858 and 0.790),
  else one σ per feature (the within-sample spread pooled over rows; with one model, its spread over rows). Fed
  to the MINT classifier.
- `gmint-calibrated-norms`: the low-dimensional, LiRA-style variant: per layer, the log-norm of the Weight
  Modifier, z-scored against the same sample's log-norms under the out reference models (σ as above). Norms
  do not depend on the order of a layer's filters, so it holds for reference models initialised apart.
- `gmint-concat` (ablation): the audited model's Weight Modifiers and each reference model's side by side.
- `negative-control`: the MINT classifier on reference model 0's Weight Modifiers, which trained on no
  candidate in offline mode: must sit near chance.

Each attack is registered with the record of the options it takes (gmint.reference.options): RMIA's a, γ and
population, the MINT attacks' classifier and its options, calibrated gMINT's per_sample_min; any other option,
or a value outside its range, is refused before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expm1
from scipy.stats import norm

from gmint.assess.metrics import auc
from gmint.data.split import one_sided_groups
from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS, Standardiser, input_dtype
from gmint.mint.threshold import best_threshold
from gmint.reference.options import AttackOptions, OptionsT, json_mapping, number, one_of, option, whole
from gmint.reference.signals import GradientSignals, OutputSignals, ReferenceSignals
from gmint.registry import Registry

# Carlini et al.'s guard against a zero standard deviation (their reference code adds it to every σ).
SIGMA_FLOOR = 1e-30
# The smallest positive float32: a loss stored as 0 (p_y rounded to 1) is read as this, so φ stays finite (≈103).
MIN_LOSS = float(np.nextafter(np.float32(0), np.float32(1)))
A_GRID = tuple(round(0.1 * i, 1) for i in range(11))
PER_SAMPLE_MIN = 64  # out models per row before calibrated gMINT uses each row's own σ (see the docstring)
# The MINT classifiers that read one flat vector of features per row, which is what every MINT attack here gives
# (the CNNs need unreduced per-layer shapes; the threshold classifier one column).
FLAT_MINT_KINDS = ("mlp", "logreg", "per_class")


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
class RmiaOnlineOptions(AttackOptions):
    """Online RMIA's options (Pr(x) is the mean over all reference models: there is no `a`).

    Attributes:
        gamma: the likelihood-ratio threshold; LR is a ratio of positive probabilities, so γ ≤ 0 counts every
            pair and scores every row 1.
        population: how many population rows serve as z (a seeded subset), or None: all of them.
    """

    who = "online RMIA"

    gamma: float = option(number(above=0), 1.0)
    population: int | None = option(whole(low=1, none="every population row"), None)


@dataclass(frozen=True)
class RmiaOptions(RmiaOnlineOptions):
    """Offline RMIA's options: online RMIA's and `a`.

    Attributes:
        a: Pr(x)'s offline scaling, in [0, 1] by its definition (½((1 + a)·Pr_out(x) + (1 − a)) is a
            probability only there), or "auto": fitted as the module docstring says.
    """

    who = "RMIA"

    a: float | str = option(number(low=0, high=1, also=("auto",)), "auto")


@dataclass(frozen=True)
class MintOptions(AttackOptions):
    """The MINT attacks' options: the classifier and its own options (refused here already where it does not
    take them, not after the features are computed)."""

    who = "the MINT attacks"

    kind: str = option(one_of(FLAT_MINT_KINDS), "mlp")
    mint_options: dict[str, object] = option(json_mapping("the MINT classifier's options"), factory=dict)

    def __post_init__(self) -> None:
        try:
            MINT_MODELS.get(self.kind)(1, **self.mint_options)
        except (TypeError, InputError) as exc:
            raise InputError(f"the {self.kind} MINT classifier does not take mint_options "
                             f"{sorted(self.mint_options)} ({exc})") from None


@dataclass(frozen=True)
class CalibratedOptions(MintOptions):
    """Calibrated gMINT's options: the MINT attacks', and how many out models a row needs before its own σ is
    used (≥ 2: the spread of one model's value is 0)."""

    who = "calibrated gMINT"

    per_sample_min: int = option(whole(low=2), PER_SAMPLE_MIN)


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
    every parameter it used or fitted."""

    score: np.ndarray
    threshold: float
    params: dict[str, object]


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


def logit_confidence(loss: np.ndarray) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)) from the cross-entropy loss ℓ = −log p_y, without forming p_y:
    φ = −ℓ − log(1 − e^{−ℓ}), exact where p_y rounds to 1 (ℓ below MIN_LOSS is read as MIN_LOSS)."""
    loss = np.maximum(np.asarray(loss, np.float64), MIN_LOSS)
    return -loss - np.log(-expm1(-loss))


def true_class_probability(loss: np.ndarray) -> np.ndarray:
    """p_y = e^{−ℓ}: the softmax probability of the true class, RMIA's Pr(x|θ)."""
    return np.exp(-np.asarray(loss, np.float64))


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


def _require(count: np.ndarray, needed: int, what: str) -> None:
    if len(count) and int(count.min()) < needed:
        raise NotApplicable(f"needs ≥ {needed} reference model{'s' if needed > 1 else ''} {what} each scored row, "
                            f"has {int(count.min())}")


def _pool_threshold(score_fit: np.ndarray, membership_fit: np.ndarray) -> float:
    """The balanced-accuracy threshold on the auditor's pool (0 where the pool lacks a side)."""
    if len(np.unique(membership_fit)) < 2:
        return 0.0
    return best_threshold(membership_fit, score_fit)


def _score_and_threshold(score_all: np.ndarray, o_membership: np.ndarray, fit: np.ndarray,
                         rows: np.ndarray) -> tuple[np.ndarray, float]:
    return score_all[rows], _pool_threshold(score_all[fit], o_membership[fit])


@register_attack("loss", references=False)
def loss_attack(signals: ReferenceSignals, task: Task) -> Scored:
    """−loss of the audited model."""
    o = signals.output
    fit, rows = positions(o.sample_id, task.fit), positions(o.sample_id, task.score)
    score, threshold = _score_and_threshold(-o.target_loss, o.membership, fit, rows)
    return Scored(score, threshold, {"score": "-loss"})


def _lira_offline(signals: ReferenceSignals, task: Task, *, global_variance: bool) -> Scored:
    o = signals.output
    fit, rows = positions(o.sample_id, task.fit), positions(o.sample_id, task.score)
    used = np.union1d(fit, rows)
    phi, phi_ref = logit_confidence(o.target_loss), logit_confidence(o.reference_loss)
    out = ~o.inclusion
    mu, sigma, count = masked_mean_std(phi_ref, out)
    _require(count[used], 1 if global_variance else 2, "out of")
    params: dict[str, object] = {"signal": "phi = log(p_y / (1 - p_y))", "mean": "mean over out models",
                                 "score": "z = (phi - mu_out) / sigma_out; the paper's Lambda = Phi(z)",
                                 "out_models_per_row": [int(count[used].min()), int(count[used].max())]}
    if global_variance:
        candidates = o.membership >= 0
        sigma = np.full_like(mu, float(phi_ref[out & candidates[None, :]].std()))
        params["variance"] = "global (std of all out observations of the candidates)"
        params["sigma_out"] = float(sigma[0])
    else:
        params["variance"] = "per sample"
    z = (phi - mu) / (sigma + SIGMA_FLOOR)
    score, threshold = _score_and_threshold(z, o.membership, fit, rows)
    return Scored(score, threshold, params)


@register_attack("lira-offline")
def lira_offline(signals: ReferenceSignals, task: Task) -> Scored:
    """Offline LiRA with a per-sample variance (≥ 2 out models per row)."""
    return _lira_offline(signals, task, global_variance=False)


@register_attack("lira-offline-global")
def lira_offline_global(signals: ReferenceSignals, task: Task) -> Scored:
    """Offline LiRA with one variance for all samples."""
    return _lira_offline(signals, task, global_variance=True)


def _lira_online(signals: ReferenceSignals, task: Task, *, global_variance: bool) -> Scored:
    o = signals.output
    fit, rows = positions(o.sample_id, task.fit), positions(o.sample_id, task.score)
    used = np.union1d(fit, rows)
    phi, phi_ref = logit_confidence(o.target_loss), logit_confidence(o.reference_loss)
    mu_in, sigma_in, n_in = masked_mean_std(phi_ref, o.inclusion)
    mu_out, sigma_out, n_out = masked_mean_std(phi_ref, ~o.inclusion)
    needed = 1 if global_variance else 2
    if len(used) and int(n_in[used].min()) == 0:
        raise NotApplicable("needs reference models trained on each scored row: an online reference set "
                            "(reference models trained in online mode)")
    _require(n_in[used], needed, "trained on")
    _require(n_out[used], needed, "out of")
    params: dict[str, object] = {"signal": "phi = log(p_y / (1 - p_y))",
                                 "score": "log N(phi; mu_in, sigma_in^2) - log N(phi; mu_out, sigma_out^2)",
                                 "in_models_per_row": [int(n_in[used].min()), int(n_in[used].max())],
                                 "out_models_per_row": [int(n_out[used].min()), int(n_out[used].max())]}
    if global_variance:
        candidates = (o.membership >= 0)[None, :]
        sigma_in = np.full_like(mu_in, float(phi_ref[o.inclusion & candidates].std()))
        sigma_out = np.full_like(mu_out, float(phi_ref[~o.inclusion & candidates].std()))
        params.update(variance="global", sigma_in=float(sigma_in[0]), sigma_out=float(sigma_out[0]))
    else:
        params["variance"] = "per sample"
    with np.errstate(over="ignore", invalid="ignore"):
        score_all = norm.logpdf(phi, mu_in, sigma_in + SIGMA_FLOOR) - norm.logpdf(phi, mu_out, sigma_out + SIGMA_FLOOR)
    # A zero σ (models that agree exactly, e.g. on a memorised sample) makes a log density ±inf: kept as the
    # largest finite values, and inf − inf (both Gaussians impossible) as 0, so the rows still rank.
    params["nonfinite_rows"] = int((~np.isfinite(score_all[used])).sum())
    score_all = np.nan_to_num(score_all, nan=0.0, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
    score, threshold = _score_and_threshold(score_all, o.membership, fit, rows)
    return Scored(score, threshold, params)


@register_attack("lira-online")
def lira_online(signals: ReferenceSignals, task: Task) -> Scored:
    """Online LiRA with per-sample variances (≥ 2 in and ≥ 2 out models per row)."""
    return _lira_online(signals, task, global_variance=False)


@register_attack("lira-online-global")
def lira_online_global(signals: ReferenceSignals, task: Task) -> Scored:
    """Online LiRA with one in-variance and one out-variance for all samples."""
    return _lira_online(signals, task, global_variance=True)


def rmia_probabilities(target_loss: np.ndarray, reference_loss: np.ndarray, inclusion: np.ndarray, *,
                       a: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(Pr(x|θ), Pr(x)) per row: Pr(x) = ½((1 + a)·Pr_out(x) + (1 − a)) offline (`a` given), or the mean over
    all reference models online (`a` None). Pr_out is NaN where no reference model is out of the row."""
    p_target, p_ref = true_class_probability(target_loss), true_class_probability(reference_loss)
    if a is None:
        return p_target, p_ref.mean(axis=0)
    p_out, _, _ = masked_mean_std(p_ref, ~inclusion)
    return p_target, 0.5 * ((1 + a) * p_out + (1 - a))


def rmia_scores(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float, chunk: int = 1024) -> np.ndarray:
    """score(x) = the fraction of z with LR(x, z) = ratio_x / ratio_z > γ (the pairwise test, as defined)."""
    out = np.empty(len(ratio_x))
    for start in range(0, len(ratio_x), chunk):
        block = ratio_x[start:start + chunk, None] / ratio_z[None, :]
        out[start:start + chunk] = (block > gamma).mean(axis=1)
    return out


def _population(o: OutputSignals, eligible: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of the population rows used as z: all eligible ones, or a seeded subset of `limit` rows."""
    z = np.flatnonzero((o.membership < 0) & eligible & o.finite)
    if len(z) == 0:
        raise NotApplicable("needs population rows (the split's control rows) with a reference model out of them")
    if limit is not None and limit < len(z):
        z = np.sort(np.random.default_rng(seed).choice(z, limit, replace=False))
    return z


def _rmia_once(target_loss: np.ndarray, reference_loss: np.ndarray, inclusion: np.ndarray, x: np.ndarray,
               z: np.ndarray, a: float | None, gamma: float) -> np.ndarray:
    p_target, pr = rmia_probabilities(target_loss, reference_loss, inclusion, a=a)
    ratio = p_target / pr
    return rmia_scores(ratio[x], ratio[z], gamma)


def fit_rmia_a(o: OutputSignals, task: Task, gamma: float, z: np.ndarray, fit: np.ndarray
               ) -> tuple[float, dict[str, object]]:
    """RMIA's offline `a`, as the paper fits it: reference model 0 as the target, the others as its references,
    the a in A_GRID with the highest AUC on population rows (pseudo-members: those model 0 trained on). Where no
    population row out of model 0 has an out model among the others, the same search runs on the auditor's
    labelled pool of the audited model."""
    auc_by_a: dict[str, float] = {}
    if o.k >= 2:
        others = o.inclusion[1:]
        population = np.flatnonzero((o.membership < 0) & o.finite & (~others).any(axis=0))
        pseudo = o.inclusion[0, population]
        if pseudo.any() and (~pseudo).any():
            rng = np.random.default_rng(task.seed)
            outs = population[~pseudo]
            z_fit = np.sort(rng.choice(outs, len(outs) // 2, replace=False))  # reference points, out of model 0
            x_fit = np.setdiff1d(population, z_fit)
            y = o.inclusion[0, x_fit].astype(int)
            if len(np.unique(y)) == 2 and len(z_fit):
                for a in A_GRID:
                    s = _rmia_once(o.reference_loss[0], o.reference_loss[1:], others, x_fit, z_fit, a, gamma)
                    auc_by_a[str(a)] = auc(y, s)
                best = max(A_GRID, key=lambda a: auc_by_a[str(a)])
                return best, {"a_fitted_on": "reference model 0 as target, models 1..K-1 as references",
                              "a_fit_rows": int(len(x_fit)), "a_fit_population": int(len(z_fit)),
                              "a_fit_auc": auc_by_a}
    y = o.membership[fit].astype(int)
    if len(np.unique(y)) < 2:
        raise NotApplicable("cannot fit RMIA's a: no reference model can serve as a target and the auditor's pool "
                            "lacks a side; give its option a (a number in [0, 1])", option="a")
    for a in A_GRID:
        auc_by_a[str(a)] = auc(y, _rmia_once(o.target_loss, o.reference_loss, o.inclusion, fit, z, a, gamma))
    best = max(A_GRID, key=lambda a: auc_by_a[str(a)])
    return best, {"a_fitted_on": "the auditor's pool of the audited model (no reference model could serve as a "
                                 "target: each pool row is in exactly one model of a pair)",
                  "a_fit_rows": int(len(fit)), "a_fit_auc": auc_by_a}


def _rmia(signals: ReferenceSignals, task: Task, *, online: bool) -> Scored:
    o = signals.output
    fit, rows = positions(o.sample_id, task.fit), positions(o.sample_id, task.score)
    used = np.union1d(fit, rows)
    options: RmiaOnlineOptions = task.options_as(RmiaOnlineOptions) if online else task.options_as(RmiaOptions)
    gamma = options.gamma
    out_count = (~o.inclusion).sum(axis=0)
    params: dict[str, object] = {"signal": "Pr(x|theta) = p_y", "gamma": gamma,
                                 "score": "fraction of population z with LR(x, z) > gamma"}
    if online:
        if len(used) and int(o.inclusion[:, used].sum(axis=0).min()) == 0:
            raise NotApplicable("needs reference models trained on each scored row: an online reference set "
                                "(reference models trained in online mode)")
        z = _population(o, np.ones(len(o.sample_id), bool), options.population, task.seed)
        a: float | None = None
        params["pr_x"] = "mean over all reference models"
    else:
        assert isinstance(options, RmiaOptions)
        _require(out_count[used], 1, "out of")
        z = _population(o, out_count > 0, options.population, task.seed)
        if isinstance(options.a, str):  # "auto"
            a, fitted = fit_rmia_a(o, task, gamma, z, fit)
            params.update(fitted)
        else:
            a = options.a
            params["a_fitted_on"] = "given"
        params.update(a=a, pr_x="0.5 * ((1 + a) * Pr_out(x) + (1 - a))")
    params["population"] = int(len(z))
    p_target, pr = rmia_probabilities(o.target_loss, o.reference_loss, o.inclusion, a=a)
    ratio = p_target / pr
    score = rmia_scores(ratio[used], ratio[z], gamma)
    score_all = np.zeros(len(o.sample_id))
    score_all[used] = score
    score, threshold = _score_and_threshold(score_all, o.membership, fit, rows)
    return Scored(score, threshold, params)


@register_attack("rmia", options=RmiaOptions)
def rmia(signals: ReferenceSignals, task: Task) -> Scored:
    """Offline RMIA (reference models out of the scored rows, `a` fitted)."""
    return _rmia(signals, task, online=False)


@register_attack("rmia-online", options=RmiaOnlineOptions)
def rmia_online(signals: ReferenceSignals, task: Task) -> Scored:
    """Online RMIA (Pr(x) over all reference models)."""
    return _rmia(signals, task, online=True)


def _gradient(signals: ReferenceSignals) -> GradientSignals:
    if signals.gradient is None:
        raise NotApplicable("needs the reference set's gradient stores, extracted from its models")
    return signals.gradient


def fit_mint_scores(x: np.ndarray, g: GradientSignals, fit: np.ndarray, rows: np.ndarray, task: Task
                    ) -> tuple[np.ndarray, dict[str, object]]:
    """Fit a MINT classifier (option `kind`, default mlp; `mint_options`) on the fit rows of `x`, standardised
    on them, as `gmint train` does; return P(member) of the scored rows and the fit's record."""
    chosen = task.options_as(MintOptions)
    kind, options = chosen.kind, dict(chosen.mint_options)
    fit = fit[g.finite[fit]]
    y = g.membership[fit].astype(np.int64)
    if len(np.unique(y)) < 2:
        raise InputError("the auditor's pool has only one side (members or external); cannot fit a MINT classifier")
    scaler = Standardiser.fit(x[fit])
    model = MINT_MODELS.get(kind)(x.shape[1], **options)
    groups = None if g.group is None else one_sided_groups(y, g.group[fit])
    dtype = input_dtype(model)
    record = model.fit(scaler(x[fit], dtype), y, seed=task.seed, labels=g.label[fit], groups=groups)
    score = model.predict_proba(scaler(x[rows], dtype), g.label[rows])
    return score, {"kind": kind, "mint_options": options, "fit_rows": int(len(fit)), "features": int(x.shape[1]),
                   "fit": {k: v for k, v in record.items() if isinstance(v, int | float | str)}}


def _mint_attack(signals: ReferenceSignals, task: Task, features: Callable[[GradientSignals, np.ndarray], tuple[
        np.ndarray, dict[str, object]]]) -> Scored:
    g = _gradient(signals)
    fit, rows = positions(g.sample_id, task.fit), positions(g.sample_id, task.score)
    x, params = features(g, np.union1d(fit, rows))
    score, record = fit_mint_scores(x, g, fit, rows, task)
    return Scored(score, 0.5, {**params, **record})


@register_attack("gmint", references=False, gradient=True, options=MintOptions)
def gmint_plain(signals: ReferenceSignals, task: Task) -> Scored:
    """The MINT classifier on the audited model's Weight Modifiers."""
    return _mint_attack(signals, task, lambda g, used: (g.target, {"features_from": "audited model"}))


def calibrate(target: np.ndarray, reference: np.ndarray, out: np.ndarray, used: np.ndarray, per_sample_min: int
              ) -> tuple[np.ndarray, dict[str, object]]:
    """(target − μ)/σ per row and column, μ and σ over the reference models out of the row.

    σ is per row where every used row has ≥ `per_sample_min` out models; else one σ per column: the
    within-row spread pooled over the used rows (≥ 2 out models), or the spread over rows of the one out
    model's values. A zero σ gives 0 where the target equals μ (reference models identical to the audited one
    calibrate everything away).

    Args:
        target: (N, d).
        reference: (K, N, d).
        out: (K, N) bool, the reference models out of each row.
        used: the rows the attack fits on or scores.
        per_sample_min: out models a row needs for its own σ.
    """
    mean, std, count = masked_mean_std(reference, out)
    _require(count[used], 1, "out of")
    low = int(count[used].min())
    if low >= per_sample_min:
        sigma, how = std, "per sample"
    elif low >= 2:
        weights = out[:, used].astype(np.float64)[:, :, None]
        spread = (weights * (reference[:, used] - mean[used]) ** 2).sum(axis=(0, 1)) / weights.sum(axis=(0, 1))
        sigma, how = np.broadcast_to(np.sqrt(spread), target.shape), "pooled within-sample, per feature"
    else:
        sigma, how = np.broadcast_to(mean[used].std(axis=0), target.shape), "spread over rows, per feature"
    diff = target - mean
    z = np.where(sigma > 0, diff / np.where(sigma > 0, sigma, 1.0), np.where(diff == 0, 0.0, diff / SIGMA_FLOOR))
    return z, {"variance": how, "out_models_per_row": [low, int(count[used].max())], "per_sample_min": per_sample_min}


@register_attack("gmint-calibrated", gradient=True, options=CalibratedOptions)
def gmint_calibrated(signals: ReferenceSignals, task: Task) -> Scored:
    """Per-feature z-scores of the audited Weight Modifiers against the reference models', to the MINT classifier."""
    per_sample_min = task.options_as(CalibratedOptions).per_sample_min

    def features(g: GradientSignals, used: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        z, params = calibrate(g.target.astype(np.float64), g.reference.astype(np.float64), ~g.inclusion, used,
                              per_sample_min)
        return z, {"features_from": "per-feature z-scores against the reference models", **params}

    return _mint_attack(signals, task, features)


def layer_log_norms(features: np.ndarray, dims: list[int]) -> np.ndarray:
    """(..., L): per layer, log of the Weight Modifier's L2 norm over its columns (floored at 1e-30)."""
    edges = np.cumsum([0, *dims])
    norms = [np.sqrt((features[..., lo:hi].astype(np.float64) ** 2).sum(axis=-1)) for lo, hi in
             zip(edges[:-1], edges[1:], strict=True)]
    return np.log(np.maximum(np.stack(norms, axis=-1), 1e-30))


@register_attack("gmint-calibrated-norms", gradient=True, options=CalibratedOptions)
def gmint_calibrated_norms(signals: ReferenceSignals, task: Task) -> Scored:
    """Per-layer Weight-Modifier log-norms, z-scored against the reference models', to the MINT classifier."""
    per_sample_min = task.options_as(CalibratedOptions).per_sample_min

    def features(g: GradientSignals, used: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        z, params = calibrate(layer_log_norms(g.target, g.dims), layer_log_norms(g.reference, g.dims),
                              ~g.inclusion, used, per_sample_min)
        return z, {"features_from": "per-layer log-norm z-scores against the reference models",
                   "layers": g.layers, **params}

    return _mint_attack(signals, task, features)


@register_attack("gmint-concat", gradient=True, options=MintOptions)
def gmint_concat(signals: ReferenceSignals, task: Task) -> Scored:
    """The audited and every reference model's Weight Modifiers side by side (ablation)."""
    def features(g: GradientSignals, used: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        return np.concatenate([g.target, *g.reference], axis=1), {"features_from": "audited and references, "
                                                                                   "concatenated"}

    return _mint_attack(signals, task, features)


@register_attack("negative-control", references=False, gradient=True, options=MintOptions)
def negative_control(signals: ReferenceSignals, task: Task) -> Scored:
    """The MINT classifier on reference model 0's Weight Modifiers (it saw no candidate: must be ~chance)."""
    def features(g: GradientSignals, used: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        if g.inclusion[0, used].any():
            raise NotApplicable("reference model 0 trained on candidates (online set): it is no negative control")
        return g.reference[0], {"features_from": "reference model 0"}

    return _mint_attack(signals, task, features)


def describe(name: str) -> str:
    """The first line of a registered attack's docstring."""
    doc = ATTACKS.get(name).run.__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else name


