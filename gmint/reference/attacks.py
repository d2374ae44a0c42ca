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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expm1
from scipy.stats import norm

from gmint.assess.metrics import auc
from gmint.data.split import one_sided_groups
from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS, Standardiser, input_dtype
from gmint.mint.threshold import best_threshold
from gmint.reference.signals import GradientSignals, OutputSignals, ReferenceSignals
from gmint.registry import Registry

# Carlini et al.'s guard against a zero standard deviation (their reference code adds it to every σ).
SIGMA_FLOOR = 1e-30
# The smallest positive float32: a loss stored as 0 (p_y rounded to 1) is read as this, so φ stays finite (≈103).
MIN_LOSS = float(np.nextafter(np.float32(0), np.float32(1)))
A_GRID = tuple(round(0.1 * i, 1) for i in range(11))
PER_SAMPLE_MIN = 64  # out models per row before calibrated gMINT uses each row's own σ (see the docstring)


class NotApplicable(InputError):
    """The attack cannot score with these reference models (too few out of a row, or no online models)."""


@dataclass(frozen=True)
class Task:
    """What an attack fits on and what it scores, by sample id.

    Attributes:
        fit: (n_fit,) sample ids the attack may fit on (the auditor's pool: membership known to the auditor).
        score: (n,) sample ids to score.
        seed: seeds everything random in the attack (MINT classifiers, subsampling).
        options: the attack's options (a, gamma, kind, ...), each with a default.
    """

    fit: np.ndarray
    score: np.ndarray
    seed: int = 0
    options: Mapping[str, object] = field(default_factory=dict)


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
    """A scorer with what it reads: `references` (False: the same for every K) and `gradient` (Weight Modifiers)."""

    run: AttackFn
    references: bool = True
    gradient: bool = False

    def __call__(self, signals: ReferenceSignals, task: Task) -> Scored:
        """Score the task's rows."""
        return self.run(signals, task)


ATTACKS: Registry[Attack] = Registry("attack")


def register_attack(name: str, *, references: bool = True, gradient: bool = False) -> Callable[[AttackFn], AttackFn]:
    """Decorator declaring a scorer in ATTACKS."""
    def add(fn: AttackFn) -> AttackFn:
        ATTACKS.register(name)(Attack(fn, references, gradient))
        return fn

    return add


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


def _option(task: Task, name: str, default: object) -> object:
    return task.options.get(name, default)


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
                            "(`gmint reference train --mode online`)")
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


def _population(o: OutputSignals, eligible: np.ndarray, task: Task) -> np.ndarray:
    """Indices of the population rows used as z: all eligible ones, or a seeded subset of `population` rows."""
    z = np.flatnonzero((o.membership < 0) & eligible & o.finite)
    if len(z) == 0:
        raise NotApplicable("needs population rows (the split's control rows) with a reference model out of them")
    limit = _option(task, "population", None)
    if isinstance(limit, int) and 0 < limit < len(z):
        z = np.sort(np.random.default_rng(task.seed).choice(z, limit, replace=False))
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
                            "lacks a side; pass a value with --option a=0.3")
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
    gamma = float(_option(task, "gamma", 1.0))  # type: ignore[arg-type]
    out_count = (~o.inclusion).sum(axis=0)
    params: dict[str, object] = {"signal": "Pr(x|theta) = p_y", "gamma": gamma,
                                 "score": "fraction of population z with LR(x, z) > gamma"}
    if online:
        if len(used) and int(o.inclusion[:, used].sum(axis=0).min()) == 0:
            raise NotApplicable("needs reference models trained on each scored row: an online reference set "
                                "(`gmint reference train --mode online`)")
        z = _population(o, np.ones(len(o.sample_id), bool), task)
        a: float | None = None
        params["pr_x"] = "mean over all reference models"
    else:
        _require(out_count[used], 1, "out of")
        z = _population(o, out_count > 0, task)
        chosen = _option(task, "a", "auto")
        if chosen == "auto":
            a, fitted = fit_rmia_a(o, task, gamma, z, fit)
            params.update(fitted)
        else:
            a = float(chosen)  # type: ignore[arg-type]
            if not 0.0 <= a <= 1.0:
                raise InputError(f"RMIA's a must lie in [0, 1], got {a}")
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


@register_attack("rmia")
def rmia(signals: ReferenceSignals, task: Task) -> Scored:
    """Offline RMIA (reference models out of the scored rows, `a` fitted)."""
    return _rmia(signals, task, online=False)


@register_attack("rmia-online")
def rmia_online(signals: ReferenceSignals, task: Task) -> Scored:
    """Online RMIA (Pr(x) over all reference models)."""
    return _rmia(signals, task, online=True)


def _gradient(signals: ReferenceSignals) -> GradientSignals:
    if signals.gradient is None:
        raise NotApplicable("needs the gradient stores (`gmint reference extract`)")
    return signals.gradient


def fit_mint_scores(x: np.ndarray, g: GradientSignals, fit: np.ndarray, rows: np.ndarray, task: Task
                    ) -> tuple[np.ndarray, dict[str, object]]:
    """Fit a MINT classifier (option `kind`, default mlp; `mint_options`) on the fit rows of `x`, standardised
    on them, as `gmint train` does; return P(member) of the scored rows and the fit's record."""
    kind = str(_option(task, "kind", "mlp"))
    options = dict(_option(task, "mint_options", {}) or {})  # type: ignore[call-overload]
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


@register_attack("gmint", references=False, gradient=True)
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


@register_attack("gmint-calibrated", gradient=True)
def gmint_calibrated(signals: ReferenceSignals, task: Task) -> Scored:
    """Per-feature z-scores of the audited Weight Modifiers against the reference models', to the MINT classifier."""
    per_sample_min = int(_option(task, "per_sample_min", PER_SAMPLE_MIN))  # type: ignore[call-overload]

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


@register_attack("gmint-calibrated-norms", gradient=True)
def gmint_calibrated_norms(signals: ReferenceSignals, task: Task) -> Scored:
    """Per-layer Weight-Modifier log-norms, z-scored against the reference models', to the MINT classifier."""
    per_sample_min = int(_option(task, "per_sample_min", PER_SAMPLE_MIN))  # type: ignore[call-overload]

    def features(g: GradientSignals, used: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        z, params = calibrate(layer_log_norms(g.target, g.dims), layer_log_norms(g.reference, g.dims),
                              ~g.inclusion, used, per_sample_min)
        return z, {"features_from": "per-layer log-norm z-scores against the reference models",
                   "layers": g.layers, **params}

    return _mint_attack(signals, task, features)


@register_attack("gmint-concat", gradient=True)
def gmint_concat(signals: ReferenceSignals, task: Task) -> Scored:
    """The audited and every reference model's Weight Modifiers side by side (ablation)."""
    def features(g: GradientSignals, used: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        return np.concatenate([g.target, *g.reference], axis=1), {"features_from": "audited and references, "
                                                                                   "concatenated"}

    return _mint_attack(signals, task, features)


@register_attack("negative-control", references=False, gradient=True)
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


