"""Fitting a MINT classifier on a feature store: choose the layer setup and the data fraction.

Only rows of the auditor's pool (role 0) are used; D10/D1 are the same nested, class-balanced
subsets the split manifest lists, recomputed from the store's columns.

Three kinds of names meet here: the layer *setup* the user writes (`combined`, `entry,fc.*`), the
*feature names* it selects (the store's datasets, the classifier's input blocks) and the *parameter names*
of the audited model those were extracted from (equal to the feature names for gradient stores).
"""

from __future__ import annotations

import inspect
import time
import warnings
from pathlib import Path

import numpy as np

from gmint.data.split import FRACTIONS, POOL, one_sided_groups, subpool_mask
from gmint.errors import InputError, UnknownNameError
from gmint.features.layers import match_setup
from gmint.features.provenance import Provenance
from gmint.features.store import FeatureStore
from gmint.mint.base import MINT_MODELS, FeatureSpec, MintBuilder, Standardiser, TrainedMint, input_dtype, read_inputs


def setup_features(store: FeatureStore, setup: str) -> list[str]:
    """The store's feature names a layer setup selects, in the store's order.

    The setup reads as at extraction (`gmint.features.layers.match_setup`), against the store: `all` (every
    feature), a preset as recorded at extraction, feature names or globs over them.

    Raises:
        UnknownNameError: an item that selects nothing, or a preset whose layers were not extracted.
    """
    features = store.layers
    matches = match_setup(setup, features, {"all": features, **_recorded_presets(store)})
    for item, found in matches.items():
        if not found or not set(found) <= set(features):
            raise UnknownNameError(f"layer setup '{item}' is not in {store.path} (it holds {features}; "
                                   f"extract it with layers {item} or combined)")
    order = {n: i for i, n in enumerate(features)}
    return sorted(dict.fromkeys(n for found in matches.values() for n in found), key=order.__getitem__)


def _recorded_presets(store: FeatureStore) -> dict[str, list[str]]:
    """Preset → feature names, as recorded at extraction for the audited model (none in older stores)."""
    return Provenance.read(store.provenance).layer_presets


def _parameter_shapes(store: FeatureStore, features: list[str]) -> list[list[int]]:
    """The recorded shape behind each feature name, for classifiers that read a feature's structure: a
    Weight Modifier's parameter shape, or an activation map's (C, h, w) for an `activation-maps` store (stores
    without `parameters` are older gradient stores: feature = parameter name)."""
    prov = Provenance.read(store.provenance)
    shapes, parameters = prov.layer_shapes, prov.parameters or store.layers
    parameter_of = dict(zip(store.layers, parameters, strict=True))
    missing = [n for n in features if parameter_of[n] not in shapes]
    if missing:
        raise InputError(f"{store.path} records no shape for {missing[0]}; this classifier reads the features' "
                         "structure (Weight Modifiers extracted with reduction flat, or source activation-maps)")
    return [list(shapes[parameter_of[n]]) for n in features]


# The classifier `gmint train` fits when none is named. Measured over 5 seeds on the same held-out rows (combined
# layers): on an MNIST MobileNet cell (1,000 members) gmint reached median AUC 0.981 (range 0.979-0.984) where
# the paper's form (mlp) reached 0.873 (0.864-0.886) and the loss threshold 0.961; on digits, gmint 0.568 (all
# seeds), mlp 0.561 (0.549-0.565), the loss threshold 0.568.
DEFAULT_KIND = "gmint"


# A data fraction kept at one row per stratum may hold several times the rows it names; past this ratio it says so.
FLOOR_WARNING = 1.5


def pool_rows(store: FeatureStore, fraction: str, split_seed: int) -> np.ndarray:
    """Boolean mask of the store's rows a classifier may be fitted on, for D100 / D10 / D1."""
    if fraction not in FRACTIONS:
        raise UnknownNameError(f"unknown data fraction '{fraction}'; choose from {list(FRACTIONS)}")
    role, membership = store.column("role"), store.column("membership")
    pool = role == POOL
    if not pool.any():
        raise InputError(f"{store.path} has no auditor's-pool rows (role 0) to fit a MINT classifier on")
    if np.isin(membership[pool], (0, 1), invert=True).any():
        raise InputError(f"{store.path}: pool rows must be labelled member (1) or external (0)")
    if FRACTIONS[fraction] >= 1.0:
        return pool
    idx = np.flatnonzero(pool)
    idx = idx[np.argsort(store.column("sample_id")[idx], kind="stable")]  # the manifest's order
    labels = store.column("label")[idx]
    keep = subpool_mask(membership[idx], labels, FRACTIONS[fraction], split_seed)
    asked = FRACTIONS[fraction] * len(idx)
    if keep.sum() > FLOOR_WARNING * asked:  # e.g. D1 of 1,000 rows over 200 classes: as many rows as D10
        strata = len(np.unique(np.stack([membership[idx], labels]), axis=1)[1])
        warnings.warn(f"{fraction} asks for {FRACTIONS[fraction]:.0%} of the {len(idx)} pool rows (about "
                      f"{asked:.0f}), but one row of each of the {strata} (member/external, class) strata gives "
                      f"{int(keep.sum())}: its figures are for that many rows", stacklevel=2)
    mask = np.zeros(len(role), dtype=bool)
    mask[idx[keep]] = True
    return mask


def train_mint(store_path: Path, *, kind: str = DEFAULT_KIND, setup: str = "all", fraction: str = "D100",
               seed: int = 0, options: dict[str, object] | None = None) -> TrainedMint:
    """Fit a MINT classifier of `kind` on the pool rows of a complete store.

    Args:
        store_path: a complete feature store.
        kind: a name in MINT_MODELS (`gmint`, `mlp`, `logreg`, ...).
        setup: which of the store's features feed the classifier (see `setup_features`).
        fraction: D100 / D10 / D1 of the auditor's pool.
        seed: seeds initialisation, validation split and shuffling; recorded.
        options: classifier hyper-parameters.
    """
    builder = MINT_MODELS.get(kind)
    options = dict(options or {})
    with FeatureStore.open(store_path) as store:
        store.require_complete()
        features = setup_features(store, setup)
        prov = Provenance.read(store.provenance)
        split_seed = prov.split_seed if prov.split_seed is not None else 0
        rows = pool_rows(store, fraction, split_seed)
        nonfinite = rows & ~store.column("finite")
        if nonfinite.any():
            warnings.warn(f"{int(nonfinite.sum())} pool rows of {store_path} have NaN/Inf features and are left "
                          "out of the fit", stacklevel=2)
        rows &= ~nonfinite
        signals = [str(name) for name in getattr(builder, "row_signals", ())]  # e.g. the loss, beside the features
        x = read_inputs(store, features, signals, rows)
        y = store.column("membership")[rows].astype(np.int64)
        labels = store.column("label")[rows]
        ids = store.column("sample_id")[rows]
        groups = one_sided_groups(y, store.column("group")[rows])
        dims = store.dims
        needs_shapes = getattr(builder, "needs_shapes", False)  # a flag, or a function of the options
        if needs_shapes(options) if callable(needs_shapes) else needs_shapes:  # classifiers reading each shape
            options.setdefault("shapes", _parameter_shapes(store, features))
        if getattr(builder, "needs_blocks", False):  # classifiers reading each feature's width (per-layer norms)
            options.setdefault("blocks", [dims[n] for n in features] + [1] * len(signals))
        if options.get("label_aware"):  # the one-hot true class is an input: as many columns as classes
            options.setdefault("classes", int(store.column("label").max()) + 1)
    if len(np.unique(y)) < 2:
        raise InputError(f"the {fraction} pool has only one class (members or external); cannot fit")
    # A classifier that fits its own representation (per cross-validation fold) takes its inputs as they are.
    scaler = Standardiser.fit(x) if getattr(builder, "standardised", True) else Standardiser.identity(x.shape[1])
    try:
        model = builder(x.shape[1], **options)
    except TypeError as exc:  # an option the classifier does not take, or a value it cannot use
        raise InputError(f"{kind} MINT classifier: {exc}{_known_options(builder, x.shape[1], options)}") from None
    t0 = time.perf_counter()
    record = model.fit(scaler(x, input_dtype(model)), y, seed=seed, labels=labels, groups=groups)
    record.update(fraction=fraction, seed=seed, excluded_nonfinite=int(nonfinite.sum()), members=int(y.sum()),
                  external=int((y == 0).sum()),
                  fit_seconds=round(time.perf_counter() - t0, 3), store=str(store_path))
    spec = FeatureSpec(layers=features, dims=[dims[n] for n in features], reduction=str(prov.reduction),
                       model_fingerprint=prov.model_fingerprint, split_sha256=prov.split_sha256,
                       dataset=str(prov.dataset), setup=setup, source=prov.source, dataset_root=prov.dataset_root,
                       dataset_files_sha256=prov.dataset_files_sha256, signals=signals)
    return TrainedMint(kind, model, spec, scaler, ids, record)


def _known_options(builder: MintBuilder, input_dim: int, options: dict[str, object]) -> str:
    """'; its options: c, max_iter' when `options` do not fit the classifier's constructor (else '': the
    error came from inside it, e.g. from a base classifier's options)."""
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):
        return ""
    try:
        signature.bind(input_dim, **options)
        return ""
    except TypeError:
        pass
    names = [n for n, p in signature.parameters.items() if p.kind == p.KEYWORD_ONLY]
    return f"; its options: {', '.join(names)}" if names else "; it takes no options"
