"""LiRA (Carlini et al. 2022) and the loss threshold it calibrates, on the output signals of a reference folder.

- `loss`: −loss of the audited model (what the loss threshold ranks by); no references.
- `lira-offline` / `lira-offline-global` (offline LiRA): the logit-scaled confidence φ = log(p_y / (1 − p_y))
  of the audited model against a Gaussian N(μ_out, σ²_out) fitted to the same sample's φ under the reference
  models that did not train on it. The paper's score is Λ = Pr[Z ≤ φ] = Φ(z) with z = (φ − μ_out)/σ_out; gmint
  reports z itself, which ranks the rows identically and does not saturate at 1 for memorised members (Φ
  rounds every z > 8.3 to 1.0 in float64, making them ties). `-global` uses one σ_out for all samples (the
  paper's fixed variance, for few reference models): the standard deviation of all out observations of the
  candidates.
- `lira-online` / `lira-online-global` (online LiRA): log N(φ; μ_in, σ²_in) − log N(φ; μ_out, σ²_out), with
  the in-Gaussian fitted to the reference models that trained on the sample (online reference sets only).

None of them takes options.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expm1
from scipy.stats import norm

from gmint.reference.base import (
    SIGMA_FLOOR,
    NotApplicable,
    Scored,
    Task,
    masked_mean_std,
    positions,
    register_attack,
    require_models,
    scored_on_pool,
)
from gmint.reference.signals import ReferenceSignals

# The smallest positive float32: a loss stored as 0 (p_y rounded to 1) is read as this, so φ stays finite (≈103).
MIN_LOSS = float(np.nextafter(np.float32(0), np.float32(1)))

# The loss threshold's name in ATTACKS: the baseline every other attack of a comparison is set against.
LOSS_ATTACK = "loss"


def logit_confidence(loss: np.ndarray) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)) from the cross-entropy loss ℓ = −log p_y, without forming p_y:
    φ = −ℓ − log(1 − e^{−ℓ}), exact where p_y rounds to 1 (ℓ below MIN_LOSS is read as MIN_LOSS)."""
    loss = np.maximum(np.asarray(loss, np.float64), MIN_LOSS)
    return -loss - np.log(-expm1(-loss))


@register_attack(LOSS_ATTACK, references=False)
def loss_attack(signals: ReferenceSignals, task: Task) -> Scored:
    """−loss of the audited model."""
    o = signals.output
    fit, rows = positions(o.sample_id, task.fit), positions(o.sample_id, task.score)
    return scored_on_pool(-o.audited_loss, o.membership, fit, rows, {"score": "-loss"})


def _lira_offline(signals: ReferenceSignals, task: Task, *, global_variance: bool) -> Scored:
    o = signals.output
    fit, rows = positions(o.sample_id, task.fit), positions(o.sample_id, task.score)
    used = np.union1d(fit, rows)
    phi, phi_ref = logit_confidence(o.audited_loss), logit_confidence(o.reference_loss)
    out = ~o.inclusion
    mu, sigma, count = masked_mean_std(phi_ref, out)
    require_models(count[used], 1 if global_variance else 2, "out of")
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
    return scored_on_pool(z, o.membership, fit, rows, params)


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
    phi, phi_ref = logit_confidence(o.audited_loss), logit_confidence(o.reference_loss)
    mu_in, sigma_in, n_in = masked_mean_std(phi_ref, o.inclusion)
    mu_out, sigma_out, n_out = masked_mean_std(phi_ref, ~o.inclusion)
    needed = 1 if global_variance else 2
    if len(used) and int(n_in[used].min()) == 0:
        raise NotApplicable("needs reference models trained on each scored row: an online reference set "
                            "(reference models trained in online mode)")
    require_models(n_in[used], needed, "trained on")
    require_models(n_out[used], needed, "out of")
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
    return scored_on_pool(score_all, o.membership, fit, rows, params)


@register_attack("lira-online")
def lira_online(signals: ReferenceSignals, task: Task) -> Scored:
    """Online LiRA with per-sample variances (≥ 2 in and ≥ 2 out models per row)."""
    return _lira_online(signals, task, global_variance=False)


@register_attack("lira-online-global")
def lira_online_global(signals: ReferenceSignals, task: Task) -> Scored:
    """Online LiRA with one in-variance and one out-variance for all samples."""
    return _lira_online(signals, task, global_variance=True)
