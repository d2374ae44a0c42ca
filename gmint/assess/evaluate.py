"""Scoring a store's held-out rows with a MINT classifier, beside what explains or bounds the result.

Next to the MINT metrics every evaluation reports the audited model's own accuracy and loss on the
same members and externals (its generalisation gap) and a loss-threshold baseline whose threshold
is fitted on the auditor's pool — never on the rows being scored. The classifier is compared with that
baseline on the same rows (a paired bootstrap interval of the AUC difference), and its error rates bound
ε from below at a threshold chosen on the pool.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from gmint.assess.metrics import (
    EpsilonBound,
    Estimate,
    balance,
    control_off_chance,
    epsilon_lower_bound,
    epsilon_threshold,
    membership_metrics,
    paired_auc_difference,
    resampling_unit,
    score_collapse,
)
from gmint.data.split import HOLDOUT, POOL, one_sided_groups
from gmint.errors import InputError, StoreMismatchError
from gmint.features.provenance import Provenance
from gmint.features.store import FeatureStore
from gmint.mint.base import TrainedMint
from gmint.mint.threshold import best_threshold
from gmint.mint.train import train_mint
from gmint.models.check import ModelCheck
from gmint.models.record import TrainingRecord


@dataclass(frozen=True)
class RowCounts:
    """The held-out rows scored on each side, and those left out because their features are NaN/Inf."""

    members: int
    external: int
    excluded_nonfinite: int = 0


@dataclass(frozen=True)
class ModelGap:
    """The audited model's own accuracy and mean loss on the evaluated members and externals: the
    generalisation gap that explains most of any membership signal."""

    members_accuracy: float
    external_accuracy: float
    members_loss: float
    external_loss: float

    @classmethod
    def of(cls, measured: TrainingRecord | ModelCheck) -> ModelGap:
        """The gap as gmint measured it on both sides: when it trained the model (its training record), or
        before extracting the features of a model from outside (the model check)."""
        members, external = measured.members, measured.external
        return cls(members.accuracy, external.accuracy, members.loss, external.loss)

    @property
    def accuracy_gap(self) -> float:
        """Members' accuracy minus externals' accuracy."""
        return self.members_accuracy - self.external_accuracy

    def to_dict(self) -> dict[str, float]:
        """The JSON form, with the accuracy gap."""
        return {"members_accuracy": self.members_accuracy, "external_accuracy": self.external_accuracy,
                "members_loss": self.members_loss, "external_loss": self.external_loss,
                "accuracy_gap": self.accuracy_gap}


@dataclass(frozen=True)
class RowScores:
    """Each evaluated row's sample id, membership (1 member, 0 external) and MINT score P(member)."""

    sample_id: np.ndarray
    membership: np.ndarray
    score: np.ndarray


@dataclass(frozen=True)
class NegativeControl:
    """The same recipe fitted and scored on a store of a model that saw neither side: must sit near chance."""

    store: Path
    metrics: dict[str, Estimate]
    model: ModelGap


@dataclass(frozen=True)
class Evaluation:
    """A MINT classifier's metrics on held-out rows, beside the loss threshold and the audited model's gap.

    `protocol` records what was evaluated (split hash, dataset, architecture, reduction, engine, source,
    layers, setup, classifier, data fraction), as the store's provenance and the classifier give them.
    `intervals` says what the bootstrap resampled: rows, or whole groups where rows come in groups.
    `versus_loss` is AUC(classifier) − AUC(loss threshold) on the same resampled rows, and `epsilon` the
    empirical ε lower bound of the classifier's held-out error rates (None in results read from before).
    """

    store: Path
    rows: RowCounts
    protocol: dict[str, object]
    mint: dict[str, Estimate]
    loss_threshold: dict[str, Estimate]
    audited_model: ModelGap
    scores: RowScores
    warnings: tuple[str, ...] = ()
    negative_control: NegativeControl | None = None
    intervals: str = "rows"
    versus_loss: Estimate | None = None
    epsilon: EpsilonBound | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON of report.json and `gmint eval --json`: everything but the per-row scores (scores.csv)."""
        result: dict[str, object] = {
            "store": str(self.store), "rows": asdict(self.rows), "protocol": dict(self.protocol),
            "mint": _metrics_dict(self.mint), "loss_threshold": _metrics_dict(self.loss_threshold),
            "audited_model": self.audited_model.to_dict(), "intervals": self.intervals,
            "warnings": list(self.warnings)}
        if self.versus_loss is not None:
            result["auc_minus_loss_threshold"] = self.versus_loss.to_dict()
        if self.epsilon is not None:
            result["epsilon"] = self.epsilon.to_dict()
        if self.negative_control is not None:
            result.update(negative_control=_metrics_dict(self.negative_control.metrics),
                          negative_control_model=self.negative_control.model.to_dict(),
                          negative_control_store=str(self.negative_control.store))
        return result


def _metrics_dict(metrics: dict[str, Estimate]) -> dict[str, object]:
    return {name: est.to_dict() for name, est in metrics.items()}


def evaluate_store(mint: TrainedMint, store_path: Path, *, n_boot: int = 1000, seed: int = 0) -> Evaluation:
    """Metrics of `mint` on the held-out rows of a complete store (balanced by subsampling if needed).

    Args:
        mint: the MINT classifier.
        store_path: a complete feature store of the classifier's audited model, layers and reduction.
        n_boot: bootstrap replicates of the 95% intervals.
        seed: seeds the bootstrap and the balancing of the held-out rows.

    Raises:
        StoreMismatchError: the store was made from another model, reduction, dataset or layer dims.
        InputError: the evaluated rows include rows the classifier was fitted on, or one side is empty.
    """
    with FeatureStore.open(store_path) as store:
        store.require_complete()
        prov = Provenance.read(store.provenance)
        mint.spec.check(prov, store.dims, str(store_path))
        role, membership = store.column("role"), store.column("membership")
        ids, loss = store.column("sample_id"), store.column("loss").astype(np.float64)
        labels, groups = store.column("label"), store.column("group")
        correct = store.column("pred") == store.column("label")
        finite = store.column("finite")
        nonfinite = int(((role == HOLDOUT) & ~finite).sum())
        if nonfinite:
            warnings.warn(f"{nonfinite} held-out rows of {store_path} have NaN/Inf features and are not scored",
                          stacklevel=2)
        held = np.flatnonzero((role == HOLDOUT) & np.isin(membership, (0, 1)) & finite)
        if len(held) == 0:
            raise InputError(f"{store_path} has no held-out rows (role 1) labelled member/external")
        # By sample id, whatever split the store was extracted with: another split holds out other rows.
        overlap = np.isin(ids[held], mint.fitted_ids)
        if overlap.any():
            raise InputError(f"{int(overlap.sum())} of the {len(held)} evaluation rows of {store_path} were used to "
                             "fit the MINT classifier; evaluate on rows it was never fitted on")
        held = held[balance(membership[held], seed)]
        y = membership[held]
        inputs = mint.inputs(store, np.isin(np.arange(len(role)), held))
        pool = role == POOL
        scored_pool = pool & finite & np.isin(membership, (0, 1))
        pool_inputs = mint.inputs(store, scored_pool)
    score = mint.predict_proba(inputs, labels[held])
    both_sides = len(np.unique(membership[pool])) == 2
    threshold = best_threshold(membership[pool], -loss[pool]) if both_sides else 0.0
    members, external = y == 1, y == 0
    units = one_sided_groups(y, groups[held])
    collapsed = {"MINT classifier": score_collapse(score), "loss threshold": score_collapse(-loss[held])}
    epsilon = None
    if len(np.unique(membership[scored_pool])) == 2:  # the decision threshold is the pool's, never the rows'
        pool_score = mint.predict_proba(pool_inputs, labels[scored_pool])
        epsilon = epsilon_lower_bound(y, score, epsilon_threshold(membership[scored_pool], pool_score), groups=units)
    return Evaluation(
        store=Path(store_path),
        rows=RowCounts(int(members.sum()), int(external.sum()), nonfinite),
        protocol={"split_sha256": prov.split_sha256, "dataset": prov.dataset,
                  "architecture": prov.architecture, "reduction": prov.reduction,
                  "engine": prov.engine, "source": prov.source, "layers": mint.spec.layers,
                  "setup": mint.spec.setup, "classifier": mint.kind, "fraction": mint.record.get("fraction"),
                  **_selection(mint.record)},
        mint=membership_metrics(y, score, n_boot=n_boot, seed=seed, groups=units),
        loss_threshold=membership_metrics(y, -loss[held], threshold=threshold, n_boot=n_boot, seed=seed,
                                          groups=units),
        audited_model=ModelGap(float(correct[held][members].mean()), float(correct[held][external].mean()),
                               float(loss[held][members].mean()), float(loss[held][external].mean())),
        scores=RowScores(ids[held], y, score),
        warnings=(*model_check_warnings(prov), *(f"{name}: {text}" for name, text in collapsed.items() if text)),
        intervals=resampling_unit(units),
        versus_loss=paired_auc_difference(y, score, -loss[held], n_boot=n_boot, seed=seed, groups=units),
        epsilon=epsilon,
    )


def _selection(record: Mapping[str, object]) -> dict[str, object]:
    """The classifier's model selection on the pool (chosen candidate, cross-validation scores), where it made
    one, and the refits of a fit that collapsed; empty for classifiers that record neither."""
    keys = ("chosen", "cv_auc", "rule", "min_gain", "folds", "fold_unit", "cv")
    selection = {key: record[key] for key in keys if key in record}
    refits = record.get("refits")
    return {**({"model_selection": selection} if selection else {}), **({"refits": refits} if refits else {})}


def model_check_warnings(provenance: Provenance) -> tuple[str, ...]:
    """What the check before extraction found wrong with the audited model's description (`model_check`), so
    every result read from the store says it again: its numbers may be of inputs the model never saw."""
    check = provenance.model_check
    return tuple(f"audited model: {text}" for text in check.warnings) if check is not None else ()


def evaluate_with_control(mint: TrainedMint, store_path: Path, control_store: Path, *, n_boot: int = 1000,
                          seed: int = 0) -> Evaluation:
    """`evaluate_store`, plus the negative control: the same recipe (classifier kind, options, layer
    setup, data fraction, seed) fitted and scored on a store extracted from a model that saw neither
    members nor externals, on the same split. It must come out near chance.

    Args:
        mint: the MINT classifier.
        store_path: its store, as for `evaluate_store`.
        control_store: a complete store of the negative-control model on the same split.
        n_boot: bootstrap replicates of the 95% intervals.
        seed: seeds the bootstrap, the balancing, and the control's fit where the classifier records none.

    Raises:
        StoreMismatchError: the control store is from another split, or from the audited model itself.
    """
    result = evaluate_store(mint, store_path, n_boot=n_boot, seed=seed)
    with FeatureStore.open(control_store) as store:
        prov = Provenance.read(store.provenance)
    if prov.split_sha256 != mint.spec.split_sha256:
        raise StoreMismatchError(f"{control_store} was extracted on another split; the negative control must "
                                 "use the audited model's split")
    if prov.model_fingerprint == mint.spec.model_fingerprint:
        raise StoreMismatchError(f"{control_store} comes from the audited model itself, not from a control model")
    fitted_seed = mint.record.get("seed", seed)
    control = train_mint(control_store, kind=mint.kind, setup=mint.spec.setup,
                         fraction=str(mint.record.get("fraction", "D100")),
                         seed=fitted_seed if isinstance(fitted_seed, int) else seed, options=mint.model.config())
    checked = evaluate_store(control, control_store, n_boot=n_boot, seed=seed)
    problems = [text for text in (score_collapse(checked.scores.score), control_off_chance(checked.mint["auc"]))
                if text]
    return replace(result, negative_control=NegativeControl(Path(control_store), checked.mint, checked.audited_model),
                   warnings=(*result.warnings, *(f"negative control: {text}" for text in problems)))
