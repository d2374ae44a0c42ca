"""What every MINT classifier shares: the feature spec it was fitted on, standardisation, save/load.

A classifier file is a dict of tensors plus one JSON string, loaded with `torch.load(weights_only=True)`.
It records its feature spec (the store's feature names and their widths, reduction, audited model, split)
so `eval` can refuse a store it does not fit, and the sample ids it was fitted on so no fitted row is ever
scored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from gmint.errors import GmintError, InputError, StoreMismatchError
from gmint.features.provenance import Provenance
from gmint.files import atomic_write
from gmint.models.io import what_file
from gmint.registry import Registry


def check_scores(membership: np.ndarray, score: np.ndarray) -> None:
    """Refuse membership labels and scores that cannot be fitted or evaluated: unequal or not 1-D, labels
    other than 0 and 1 or one side missing, NaN or Inf scores."""
    if membership.shape != score.shape or membership.ndim != 1:
        raise InputError(f"membership {membership.shape} and scores {score.shape} must be equal 1-D arrays")
    if not np.isin(membership, (0, 1)).all() or len(np.unique(membership)) < 2:
        raise InputError("evaluation needs both members (1) and external samples (0), and only those")
    if not np.isfinite(score).all():
        raise InputError("scores contain NaN or Inf")


class CollapsedFitError(GmintError):
    """A MINT classifier that scores every row (nearly) alike however it is refitted: it would rank rows by
    how ties break, not by membership."""


# A fit has collapsed when its logits on its own rows spread less than this (probabilities within about 2.5e-4
# of each other: no threshold separates anything) ...
MIN_LOGIT_STD = 1e-3
# ... or when this share of its rows get one identical score (a ReLU network whose units are dead on most
# inputs maps them all to its last bias; rounded at SPREAD_DECIMALS so float noise does not hide the tie).
MAX_TIED_SHARE, SPREAD_DECIMALS = 0.5, 6


def score_spread(logits: np.ndarray, inputs: np.ndarray | None = None) -> str | None:
    """Why a classifier's logits on its own training rows show a collapsed fit, or None where they spread.

    Rows whose `inputs` are all alike carry nothing to tell apart: one score for all of them is the right reading
    (chance), not a collapse, and is accepted.
    """
    logits = np.asarray(logits, np.float64)
    if inputs is not None and len(inputs) and not np.ptp(np.asarray(inputs, np.float64), axis=0).any():
        return None
    if not np.isfinite(logits).all():
        return "its scores contain NaN or Inf"
    std = float(logits.std())
    if std < MIN_LOGIT_STD:
        return f"its logits' standard deviation is {std:.2g} (< {MIN_LOGIT_STD:g})"
    _, counts = np.unique(np.round(logits, SPREAD_DECIMALS), return_counts=True)
    share = counts.max() / len(logits)
    if share >= MAX_TIED_SHARE:
        return f"{share:.0%} of the rows get one identical score (>= {MAX_TIED_SHARE:.0%})"
    return None


@dataclass(frozen=True)
class FeatureSpec:
    """What a classifier's input columns mean; a store must match it to be scored.

    `layers` are feature names (the store's datasets, in column order; the field keeps its name, a key of
    saved classifier files) and `dims` their widths; `setup` is the layer setup they were chosen with (what
    the user wrote, e.g. `combined`). `dataset_root` and `dataset_files_sha256` are the store's record of the
    folder its rows were read from (`ImageSet.root`, `ImageSet.files_sha256`; "" where there is none): what
    its fitted sample ids are rows of. None in classifiers saved before gmint recorded them. `signals` are
    the per-row signals (`ROW_SIGNALS`) a classifier reads after the features, one column each (none in
    classifiers saved before there were any).
    """

    layers: list[str]
    dims: list[int]
    reduction: str
    model_fingerprint: str
    split_sha256: str
    dataset: str
    setup: str = ""
    source: str = "gradient"
    dataset_root: str | None = None
    dataset_files_sha256: str | None = None
    signals: list[str] = field(default_factory=list)

    def check(self, provenance: Provenance, dims: dict[str, int], where: str) -> None:
        """Raise StoreMismatchError naming the first difference between this spec and a store.

        Args:
            provenance: the store's provenance.
            dims: the store's feature names → widths.
            where: the store, as the message names it.
        """
        expected = {"source": (self.source, provenance.source), "reduction": (self.reduction, provenance.reduction),
                    "model_fingerprint": (self.model_fingerprint, provenance.model_fingerprint),
                    "dataset": (self.dataset, provenance.dataset)}
        for key, (value, recorded) in expected.items():
            if recorded != value:
                raise StoreMismatchError(f"{where} has {key}={str(recorded)[:16]!r}, the MINT "
                                         f"classifier was trained on {str(value)[:16]!r}")
        missing = [n for n in self.layers if n not in dims]
        if missing:
            raise StoreMismatchError(f"{where} has no features for layers {missing}")
        for name, d in zip(self.layers, self.dims, strict=True):
            if dims[name] != d:
                raise StoreMismatchError(f"{where}: layer {name} has {dims[name]} features, the classifier "
                                         f"expects {d}")


class RowReader(Protocol):
    """What a per-row signal is read from: a feature store's row columns."""

    def column(self, name: str) -> np.ndarray:
        """One row column of the store, all rows."""


class FeatureReader(RowReader, Protocol):
    """A feature store as a classifier reads it: row columns and features."""

    def features(self, layers: list[str] | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, Σ d) features of `layers` for the rows of a boolean mask."""


# Per-row signals every store holds beside its features, by name: a classifier that declares `row_signals`
# reads them as extra columns (what a loss threshold reads, beside the Weight Modifiers).
ROW_SIGNALS: Registry[Callable[[RowReader], np.ndarray]] = Registry("row signal")


@ROW_SIGNALS.register("loss")
def _loss(store: RowReader) -> np.ndarray:
    """The audited model's loss on the row."""
    return store.column("loss").astype(np.float32)


@ROW_SIGNALS.register("correct")
def _correct(store: RowReader) -> np.ndarray:
    """1 where the audited model classified the row correctly, else 0."""
    return (store.column("pred") == store.column("label")).astype(np.float32)


def read_inputs(store: FeatureReader, layers: list[str], signals: list[str], rows: np.ndarray) -> np.ndarray:
    """(n, d) a classifier's raw inputs for a store's `rows` (a boolean mask): features, then row signals."""
    features = store.features(layers, rows)
    if not signals:
        return features
    columns = [ROW_SIGNALS.get(name)(store)[rows][:, None] for name in signals]
    return np.concatenate([features, *columns], axis=1)


@dataclass
class Standardiser:
    """Per-column (x - mean) / std, fitted on the classifier's training rows only."""

    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    std: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        """Column means and standard deviations of (n, d) training rows."""
        std = x.std(axis=0)
        # Constant columns (e.g. a filter that never receives gradient) would divide by zero.
        std = np.where(std > 0, std, 1.0)
        return cls(x.mean(axis=0).astype(np.float32), std.astype(np.float32))

    @classmethod
    def identity(cls, width: int) -> Standardiser:
        """Columns passed on as they are: for a classifier that fits its own representation per fold."""
        return cls(np.zeros(width, np.float32), np.ones(width, np.float32))

    def __call__(self, x: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
        """(n, d) raw features → (n, d) standardised, as `dtype`: a network's float32, or float64 for a classifier
        that ranks one signal as it is (see `input_dtype`), computed at that precision or the features' own."""
        work = np.asarray(x)
        work = work.astype(np.promote_types(work.dtype, dtype), copy=False)  # float32 rows stay float32 for a net
        return ((work - self.mean) / self.std).astype(dtype)


def input_dtype(model: object) -> type[np.floating]:
    """The dtype a classifier takes its standardised features in: float32 unless it declares `input_dtype`
    (the threshold classifier does: float32 would round close values of one signal, such as the tiny losses
    of memorised members, into ties its ranking then depends on)."""
    return getattr(model, "input_dtype", np.float32)


class MintClassifier(Protocol):
    """fit on features + membership; predict P(member); state as tensors + JSON config.

    `labels` (the audited model's true class of each row) are passed to every call; only class-specific
    classifiers use them.
    """

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int, labels: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> dict[str, object]:
        """Fit on (n, d) standardised features and membership y (1 member, 0 external).

        Args:
            x: (n, d) standardised features.
            y: (n,) membership, 1 member, 0 external.
            seed: seeds everything random in the fit, so one seed gives one classifier.
            labels: (n,) the audited model's true class of each row.
            groups: (n,) each row's group where rows come in groups on one side (see
                `gmint.data.split.one_sided_groups`), else None: a classifier that holds out rows to stop
                its training holds out whole groups, so it stops on how it does on groups it never saw.

        Returns:
            The fit's record (epochs, iterations, rows, ...), saved with the classifier.
        """

    def predict_proba(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(n,) P(member) for (n, d) standardised features and the rows' true classes."""

    def state(self) -> dict[str, torch.Tensor]:
        """The fitted parameters as tensors: what a classifier file stores (never a pickle)."""

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put back the fitted parameters `state` returned, into a classifier built from `config`."""

    def config(self) -> dict[str, object]:
        """The keyword arguments that build this classifier again (JSON values)."""


# A builder makes an unfitted classifier: builder(input_dim, **config); loading one calls it with the saved
# config, then `load_state`.
MintBuilder = Callable[..., MintClassifier]
MINT_MODELS: Registry[MintBuilder] = Registry("MINT classifier")


@dataclass
class TrainedMint:
    """A fitted classifier with the spec, scaler and record of how it was fitted."""

    kind: str
    model: MintClassifier
    spec: FeatureSpec
    scaler: Standardiser
    fitted_ids: np.ndarray
    record: dict[str, object]

    def inputs(self, store: FeatureReader, rows: np.ndarray) -> np.ndarray:
        """(n, d) raw inputs of a store's `rows` (a boolean mask): the spec's features, then its row signals."""
        return read_inputs(store, self.spec.layers, self.spec.signals, rows)

    def predict_proba(self, features: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(n,) P(member) for raw (unstandardised) inputs in the spec's column order (`inputs`), and the rows'
        true classes (needed by class-specific classifiers)."""
        return self.model.predict_proba(self.scaler(features, input_dtype(self.model)), labels)

    def save(self, path: Path) -> None:
        """Write the classifier, its spec, scaler, fitted ids and record to `path`, whole or not at all."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "config": self.model.config(), "spec": asdict(self.spec),
                "record": self.record, "format": "gmint-mint/1"}
        payload = {"meta": json.dumps(meta), "state": self.model.state(),
                   "scaler_mean": torch.from_numpy(self.scaler.mean),
                   "scaler_std": torch.from_numpy(self.scaler.std),
                   "fitted_ids": torch.from_numpy(self.fitted_ids.astype(np.int64))}
        with atomic_write(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: Path) -> TrainedMint:
        """Read a classifier file written by `save`, with `torch.load(weights_only=True)`.

        Raises:
            InputError: a missing file, or one that is not a gmint MINT classifier.
        """
        path = Path(path)
        if not path.exists():
            raise InputError(f"MINT classifier {path} not found")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(payload["meta"])
        except Exception:  # corrupt or foreign file: many exception types; say what the file is instead
            raise InputError(f"{path} is not a gmint MINT classifier: it is {what_file(path)}") from None
        if not isinstance(meta, dict) or meta.get("format") != "gmint-mint/1":
            raise InputError(f"{path} is not a gmint MINT classifier: it is {what_file(path)}")
        spec = FeatureSpec(**meta["spec"])
        model = MINT_MODELS.get(meta["kind"])(sum(spec.dims) + len(spec.signals), **meta["config"])
        model.load_state(payload["state"])
        scaler = Standardiser(payload["scaler_mean"].numpy(), payload["scaler_std"].numpy())
        return cls(meta["kind"], model, spec, scaler, payload["fitted_ids"].numpy(), meta["record"])
