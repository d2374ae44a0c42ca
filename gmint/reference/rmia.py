"""RMIA (Zarifzadeh et al. 2024): the audited model's likelihood ratio of a row against population rows.

- `rmia` (offline RMIA): Pr(x|θ) = p_y(x) under the audited model, Pr(x) = ½((1 + a)·Pr_out(x) + (1 − a)) with
  Pr_out the mean over reference models out of x, the likelihood ratio LR(x, z) = (Pr(x|θ)/Pr(x)) /
  (Pr(z|θ)/Pr(z)) against population samples z (the split's control rows, their Pr(z) by the same formula),
  and score(x) = the fraction of z with LR(x, z) > γ. `a` is fitted as the paper does: one reference model
  stands in for the audited model and the others serve as its references, and the a in {0, 0.1, …, 1} with the
  highest AUC on population rows is kept; where no such fit exists (K < 3 halves in complementary pairs leave
  the stand-in's non-members without an out model) it is fitted the same way on the auditor's labelled pool of
  the audited model; the record says which.
- `rmia-online`: Pr(x) = the mean over all reference models (online reference sets only).

Options (`RmiaOptions`, `RmiaOnlineOptions`): γ, the population's size and, offline, `a`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmint.assess.metrics import auc
from gmint.reference.base import (
    NotApplicable,
    Scored,
    Task,
    masked_mean_std,
    positions,
    register_attack,
    require_models,
    scored_on_pool,
)
from gmint.reference.options import AttackOptions, number, option, whole
from gmint.reference.signals import OutputSignals, ReferenceSignals

A_GRID = tuple(round(0.1 * i, 1) for i in range(11))


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


def true_class_probability(loss: np.ndarray) -> np.ndarray:
    """p_y = e^{−ℓ}: the softmax probability of the true class, RMIA's Pr(x|θ)."""
    return np.exp(-np.asarray(loss, np.float64))


def rmia_probabilities(audited_loss: np.ndarray, reference_loss: np.ndarray, inclusion: np.ndarray, *,
                       a: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(Pr(x|θ), Pr(x)) per row: Pr(x) = ½((1 + a)·Pr_out(x) + (1 − a)) offline (`a` given), or the mean over
    all reference models online (`a` None). Pr_out is NaN where no reference model is out of the row."""
    p_audited, p_ref = true_class_probability(audited_loss), true_class_probability(reference_loss)
    if a is None:
        return p_audited, p_ref.mean(axis=0)
    p_out, _, _ = masked_mean_std(p_ref, ~inclusion)
    return p_audited, 0.5 * ((1 + a) * p_out + (1 - a))


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


def _rmia_once(audited_loss: np.ndarray, reference_loss: np.ndarray, inclusion: np.ndarray, x: np.ndarray,
               z: np.ndarray, a: float | None, gamma: float) -> np.ndarray:
    p_audited, pr = rmia_probabilities(audited_loss, reference_loss, inclusion, a=a)
    ratio = p_audited / pr
    return rmia_scores(ratio[x], ratio[z], gamma)


def fit_rmia_a(o: OutputSignals, task: Task, gamma: float, z: np.ndarray, fit: np.ndarray
               ) -> tuple[float, dict[str, object]]:
    """RMIA's offline `a`, as the paper fits it: reference model 0 standing in for the audited model, the others
    as its references, the a in A_GRID with the highest AUC on population rows (pseudo-members: those model 0
    trained on). Where no population row out of model 0 has an out model among the others, the same search
    runs on the auditor's labelled pool of the audited model."""
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
                return best, {"a_fitted_on": "reference model 0 standing in for the audited model, models "
                                             "1..K-1 as its references",
                              "a_fit_rows": int(len(x_fit)), "a_fit_population": int(len(z_fit)),
                              "a_fit_auc": auc_by_a}
    y = o.membership[fit].astype(int)
    if len(np.unique(y)) < 2:
        raise NotApplicable("cannot fit RMIA's a: no reference model can stand in for the audited model and the "
                            "auditor's pool lacks a side; give its option a (a number in [0, 1])", option="a")
    for a in A_GRID:
        auc_by_a[str(a)] = auc(y, _rmia_once(o.audited_loss, o.reference_loss, o.inclusion, fit, z, a, gamma))
    best = max(A_GRID, key=lambda a: auc_by_a[str(a)])
    return best, {"a_fitted_on": "the auditor's pool of the audited model (no reference model could stand in for "
                                 "the audited model: each pool row is in exactly one model of a pair)",
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
        require_models(out_count[used], 1, "out of")
        z = _population(o, out_count > 0, options.population, task.seed)
        if isinstance(options.a, str):  # "auto"
            a, fitted = fit_rmia_a(o, task, gamma, z, fit)
            params.update(fitted)
        else:
            a = options.a
            params["a_fitted_on"] = "given"
        params.update(a=a, pr_x="0.5 * ((1 + a) * Pr_out(x) + (1 - a))")
    params["population"] = int(len(z))
    p_audited, pr = rmia_probabilities(o.audited_loss, o.reference_loss, o.inclusion, a=a)
    ratio = p_audited / pr
    score = rmia_scores(ratio[used], ratio[z], gamma)
    score_all = np.zeros(len(o.sample_id))
    score_all[used] = score
    return scored_on_pool(score_all, o.membership, fit, rows, params)


@register_attack("rmia", options=RmiaOptions)
def rmia(signals: ReferenceSignals, task: Task) -> Scored:
    """Offline RMIA (reference models out of the scored rows, `a` fitted)."""
    return _rmia(signals, task, online=False)


@register_attack("rmia-online", options=RmiaOnlineOptions)
def rmia_online(signals: ReferenceSignals, task: Task) -> Scored:
    """Online RMIA (Pr(x) over all reference models)."""
    return _rmia(signals, task, online=True)
