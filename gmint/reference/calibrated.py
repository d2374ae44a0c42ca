"""Calibrated gMINT, and the MINT attacks it is measured against, on the Weight Modifiers of a reference folder.

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

Options (`MintOptions`, `CalibratedOptions`): the MINT classifier and its own options; calibrated gMINT's
per_sample_min.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from gmint.data.split import one_sided_groups
from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS, Standardiser, input_dtype
from gmint.reference.base import (
    SIGMA_FLOOR,
    NotApplicable,
    Scored,
    Task,
    masked_mean_std,
    pool_epsilon_threshold,
    positions,
    register_attack,
    require_models,
)
from gmint.reference.options import AttackOptions, json_mapping, one_of, option, whole
from gmint.reference.signals import GradientSignals, ReferenceSignals

PER_SAMPLE_MIN = 64  # out models per row before calibrated gMINT uses each row's own σ (see the docstring)
# The MINT classifiers that read one flat vector of features per row, which is what every MINT attack here gives
# (the CNNs need unreduced per-layer shapes; the threshold classifier one column).
FLAT_MINT_KINDS = ("mlp", "logreg", "per_class")

# What a MINT attack feeds its classifier: from the gradient signals and the rows used (fit ∪ scored), the
# (N, d) features of every row and what they are, for the record.
Features = Callable[[GradientSignals, np.ndarray], tuple[np.ndarray, dict[str, object]]]


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


def _gradient(signals: ReferenceSignals) -> GradientSignals:
    if signals.gradient is None:
        raise NotApplicable("needs the reference set's gradient stores, extracted from its models")
    return signals.gradient


def fit_mint_scores(x: np.ndarray, g: GradientSignals, fit: np.ndarray, rows: np.ndarray, task: Task) -> Scored:
    """Fit a MINT classifier (option `kind`, default mlp; `mint_options`) on the fit rows of `x`, standardised
    on them, as `gmint train` does; return P(member) of the scored rows, read at 0.5, with the fit's record.

    Its ε threshold is chosen on its P(member) of the pool rows it was fitted on, as `gmint eval` chooses it:
    those rows are not the scored ones, so the scored rows' Clopper–Pearson bound holds (a classifier that fits
    its pool too closely may be given a poorer threshold, and so a smaller bound, never an overstated one).
    """
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
    pool_score = model.predict_proba(scaler(x[fit], dtype), g.label[fit])
    return Scored(score, 0.5, {"kind": kind, "mint_options": options, "fit_rows": int(len(fit)),
                               "features": int(x.shape[1]),
                               "fit": {k: v for k, v in record.items() if isinstance(v, int | float | str)}},
                  pool_epsilon_threshold(y, pool_score))


def _mint_attack(signals: ReferenceSignals, task: Task, features: Features) -> Scored:
    g = _gradient(signals)
    fit, rows = positions(g.sample_id, task.fit), positions(g.sample_id, task.score)
    x, params = features(g, np.union1d(fit, rows))
    scored = fit_mint_scores(x, g, fit, rows, task)
    return replace(scored, params={**params, **scored.params})


@register_attack("gmint", references=False, gradient=True, options=MintOptions)
def gmint_plain(signals: ReferenceSignals, task: Task) -> Scored:
    """The MINT classifier on the audited model's Weight Modifiers."""
    return _mint_attack(signals, task, lambda g, used: (g.audited, {"features_from": "audited model"}))


def calibrate(audited: np.ndarray, reference: np.ndarray, out: np.ndarray, used: np.ndarray, per_sample_min: int
              ) -> tuple[np.ndarray, dict[str, object]]:
    """(audited − μ)/σ per row and column, μ and σ over the reference models out of the row.

    σ is per row where every used row has ≥ `per_sample_min` out models; else one σ per column: the
    within-row spread pooled over the used rows (≥ 2 out models), or the spread over rows of the one out
    model's values. A zero σ gives 0 where the audited value equals μ (reference models identical to the
    audited one calibrate everything away).

    Args:
        audited: (N, d) the audited model's values.
        reference: (K, N, d).
        out: (K, N) bool, the reference models out of each row.
        used: the rows the attack fits on or scores.
        per_sample_min: out models a row needs for its own σ.
    """
    mean, std, count = masked_mean_std(reference, out)
    require_models(count[used], 1, "out of")
    low = int(count[used].min())
    if low >= per_sample_min:
        sigma, how = std, "per sample"
    elif low >= 2:
        weights = out[:, used].astype(np.float64)[:, :, None]
        spread = (weights * (reference[:, used] - mean[used]) ** 2).sum(axis=(0, 1)) / weights.sum(axis=(0, 1))
        sigma, how = np.broadcast_to(np.sqrt(spread), audited.shape), "pooled within-sample, per feature"
    else:
        sigma, how = np.broadcast_to(mean[used].std(axis=0), audited.shape), "spread over rows, per feature"
    diff = audited - mean
    z = np.where(sigma > 0, diff / np.where(sigma > 0, sigma, 1.0), np.where(diff == 0, 0.0, diff / SIGMA_FLOOR))
    return z, {"variance": how, "out_models_per_row": [low, int(count[used].max())], "per_sample_min": per_sample_min}


@register_attack("gmint-calibrated", gradient=True, options=CalibratedOptions)
def gmint_calibrated(signals: ReferenceSignals, task: Task) -> Scored:
    """Per-feature z-scores of the audited Weight Modifiers against the reference models', to the MINT classifier."""
    per_sample_min = task.options_as(CalibratedOptions).per_sample_min

    def features(g: GradientSignals, used: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        z, params = calibrate(g.audited.astype(np.float64), g.reference.astype(np.float64), ~g.inclusion, used,
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
        z, params = calibrate(layer_log_norms(g.audited, g.dims), layer_log_norms(g.reference, g.dims),
                              ~g.inclusion, used, per_sample_min)
        return z, {"features_from": "per-layer log-norm z-scores against the reference models",
                   "layers": g.layers, **params}

    return _mint_attack(signals, task, features)


@register_attack("gmint-concat", gradient=True, options=MintOptions)
def gmint_concat(signals: ReferenceSignals, task: Task) -> Scored:
    """The audited and every reference model's Weight Modifiers side by side (ablation)."""
    def features(g: GradientSignals, used: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        return np.concatenate([g.audited, *g.reference], axis=1), {"features_from": "audited and references, "
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
