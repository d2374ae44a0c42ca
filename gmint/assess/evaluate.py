"""Scoring a store's held-out rows with a MINT classifier, beside what explains or bounds the result.

Next to the MINT metrics every evaluation reports the audited model's own accuracy and loss on the
same members and externals (its generalisation gap) and a loss-threshold baseline whose threshold
is fitted on the auditor's pool — never on the rows being scored.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from gmint.assess.metrics import balance, best_threshold, membership_metrics, score_collapse
from gmint.data.split import HOLDOUT, POOL
from gmint.errors import InputError, StoreMismatchError
from gmint.features.store import FeatureStore
from gmint.mint.base import TrainedMint
from gmint.mint.train import train_mint


def evaluate_store(mint: TrainedMint, store_path: Path, *, n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """Metrics of `mint` on the held-out rows of a complete store (balanced by subsampling if needed).

    Raises:
        StoreMismatchError: the store was made from another model, reduction, dataset or layer dims.
        InputError: the evaluated rows include rows the classifier was fitted on, or one side is empty.
    """
    with FeatureStore.open(store_path) as store:
        store.require_complete()
        prov = store.provenance
        mint.spec.check(prov, store.dims, str(store_path))
        role, membership = store.column("role"), store.column("membership")
        ids, loss = store.column("sample_id"), store.column("loss").astype(np.float64)
        labels = store.column("label")
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
        features = store.features(mint.spec.layers, np.isin(np.arange(len(role)), held))
        pool = role == POOL
    score = mint.predict_proba(features, labels[held])
    threshold = best_threshold(membership[pool], -loss[pool]) if len(np.unique(membership[pool])) == 2 else 0.0
    members, external = y == 1, y == 0
    collapsed = {"MINT classifier": score_collapse(score), "loss threshold": score_collapse(-loss[held])}
    return {
        "store": str(store_path),
        "rows": {"members": int(members.sum()), "external": int(external.sum()), "excluded_nonfinite": nonfinite},
        "protocol": {"split_sha256": prov.get("split_sha256"), "dataset": prov.get("dataset"),
                     "architecture": prov.get("architecture"), "reduction": prov.get("reduction"),
                     "engine": prov.get("engine"), "source": prov.get("source"), "layers": mint.spec.layers,
                     "setup": mint.spec.setup,
                     "classifier": mint.kind, "fraction": mint.record.get("fraction")},
        "mint": {k: v.as_dict() for k, v in membership_metrics(y, score, n_boot=n_boot, seed=seed).items()},
        "loss_threshold": {k: v.as_dict() for k, v in membership_metrics(
            y, -loss[held], threshold=threshold, n_boot=n_boot, seed=seed).items()},
        "audited_model": {
            "members_accuracy": float(correct[held][members].mean()),
            "external_accuracy": float(correct[held][external].mean()),
            "members_loss": float(loss[held][members].mean()),
            "external_loss": float(loss[held][external].mean()),
            "accuracy_gap": float(correct[held][members].mean() - correct[held][external].mean()),
        },
        "warnings": [f"{name}: {text}" for name, text in collapsed.items() if text],
        "scores": {"sample_id": ids[held].tolist(), "membership": y.tolist(), "score": score.tolist()},
    }


def evaluate_with_control(mint: TrainedMint, store_path: Path, control_store: Path, *, n_boot: int = 1000,
                          seed: int = 0) -> dict[str, object]:
    """`evaluate_store`, plus the negative control: the same recipe (classifier kind, options, layer
    setup, data fraction, seed) fitted and scored on a store extracted from a model that saw neither
    members nor externals, on the same split. It must come out near chance.

    Raises:
        StoreMismatchError: the control store is from another split, or from the audited model itself.
    """
    result = evaluate_store(mint, store_path, n_boot=n_boot, seed=seed)
    with FeatureStore.open(control_store) as store:
        prov = store.provenance
    if prov.get("split_sha256") != mint.spec.split_sha256:
        raise StoreMismatchError(f"{control_store} was extracted on another split; the negative control must "
                                 "use the audited model's split")
    if prov.get("model_fingerprint") == mint.spec.model_fingerprint:
        raise StoreMismatchError(f"{control_store} comes from the audited model itself, not from a control model")
    control = train_mint(control_store, kind=mint.kind, setup=mint.spec.setup,
                         fraction=str(mint.record.get("fraction", "D100")),
                         seed=int(mint.record.get("seed", seed)), options=mint.model.config())  # type: ignore[arg-type]
    checked = evaluate_store(control, control_store, n_boot=n_boot, seed=seed)
    collapsed = score_collapse(np.asarray(checked["scores"]["score"]))  # type: ignore[index]
    return {**result, "negative_control": checked["mint"], "negative_control_model": checked["audited_model"],
            "negative_control_store": str(control_store),
            "warnings": [*result["warnings"], *([f"negative control: {collapsed}"] if collapsed else [])]}  # type: ignore[misc]
