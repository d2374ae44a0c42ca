"""Fitting a MINT classifier on a feature store: choose the layer setup and the data fraction.

Only rows of the auditor's pool (role 0) are used; D10/D1 are the same nested, class-balanced
subsets the split manifest lists, recomputed from the store's columns.
"""

from __future__ import annotations

import fnmatch
import inspect
import time
import warnings
from pathlib import Path

import numpy as np

from gmint.data.split import FRACTIONS, POOL, subpool_mask
from gmint.errors import InputError, UnknownNameError
from gmint.features.store import FeatureStore
from gmint.mint.base import MINT_MODELS, FeatureSpec, Standardiser, TrainedMint


def resolve_setup(store: FeatureStore, setup: str) -> list[str]:
    """Layers of the store for a setup: `all`, a preset recorded at extraction, names or globs."""
    if setup == "all":
        return store.layers
    presets: dict[str, list[str]] = store.provenance.get("layer_presets", {})  # type: ignore[assignment]
    chosen: list[str] = []
    for item in (s.strip() for s in setup.split(",")):
        names = presets.get(item) or [n for n in store.layers if fnmatch.fnmatchcase(n, item)]
        absent = [n for n in names if n not in store.layers]
        if not names or absent:
            raise UnknownNameError(f"layer setup '{item}' is not in {store.path} (it holds {store.layers}; "
                                   f"extract with --layers {item} or combined)")
        chosen += names
    order = {n: i for i, n in enumerate(store.layers)}
    return sorted(dict.fromkeys(chosen), key=order.__getitem__)


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
    keep = subpool_mask(membership[idx], store.column("label")[idx], FRACTIONS[fraction], split_seed)
    mask = np.zeros(len(role), dtype=bool)
    mask[idx[keep]] = True
    return mask


def train_mint(store_path: Path, *, kind: str = "mlp", setup: str = "all", fraction: str = "D100",
               seed: int = 0, options: dict[str, object] | None = None) -> TrainedMint:
    """Fit a MINT classifier of `kind` on the pool rows of a complete store.

    Args:
        store_path: a complete feature store.
        kind: a name in MINT_MODELS (`mlp`, `logreg`, ...).
        setup: which of the store's layers feed the classifier (see `resolve_setup`).
        fraction: D100 / D10 / D1 of the auditor's pool.
        seed: seeds initialisation, validation split and shuffling; recorded.
        options: classifier hyper-parameters.
    """
    builder = MINT_MODELS.get(kind)
    with FeatureStore.open(store_path) as store:
        store.require_complete()
        layers = resolve_setup(store, setup)
        prov = store.provenance
        rows = pool_rows(store, fraction, int(prov.get("split_seed", 0)))  # type: ignore[arg-type]
        nonfinite = rows & ~store.column("finite")
        if nonfinite.any():
            warnings.warn(f"{int(nonfinite.sum())} pool rows of {store_path} have NaN/Inf features and are left "
                          "out of the fit", stacklevel=2)
        rows &= ~nonfinite
        x = store.features(layers, rows)
        y = store.column("membership")[rows].astype(np.int64)
        labels = store.column("label")[rows]
        ids = store.column("sample_id")[rows]
        dims = store.dims
        store_layers = store.layers
    if len(np.unique(y)) < 2:
        raise InputError(f"the {fraction} pool has only one class (members or external); cannot fit")
    scaler = Standardiser.fit(x)
    options = dict(options or {})
    if getattr(builder, "needs_shapes", False):  # classifiers that read each layer's filter structure
        shapes = prov.get("layer_shapes", {})
        params = prov.get("parameters", layers)
        by_feature = dict(zip(store_layers, params, strict=True))  # type: ignore[arg-type]
        options.setdefault("shapes", [shapes[by_feature[n]] for n in layers])  # type: ignore[index]
    try:
        model = builder(x.shape[1], **options)
    except TypeError as exc:  # an option the classifier does not take, or a value it cannot use
        raise InputError(f"{kind} MINT classifier: {exc}{_known_options(builder, x.shape[1], options)}") from None
    t0 = time.perf_counter()
    record = model.fit(scaler(x), y, seed=seed, labels=labels)
    record.update(fraction=fraction, seed=seed, excluded_nonfinite=int(nonfinite.sum()), members=int(y.sum()),
                  external=int((y == 0).sum()),
                  fit_seconds=round(time.perf_counter() - t0, 3), store=str(store_path))
    spec = FeatureSpec(layers=layers, dims=[dims[n] for n in layers], reduction=str(prov["reduction"]),
                       model_fingerprint=str(prov["model_fingerprint"]),
                       split_sha256=str(prov.get("split_sha256", "")), dataset=str(prov["dataset"]),
                       setup=setup, source=str(prov.get("source", "gradient")))
    return TrainedMint(kind, model, spec, scaler, ids, record)


def _known_options(builder: object, input_dim: int, options: dict[str, object]) -> str:
    """'; its options: c, max_iter' when `options` do not fit the classifier's constructor (else '': the
    error came from inside it, e.g. from a base classifier's options)."""
    try:
        signature = inspect.signature(builder)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    try:
        signature.bind(input_dim, **options)
        return ""
    except TypeError:
        pass
    names = [n for n, p in signature.parameters.items() if p.kind == p.KEYWORD_ONLY]
    names += [n for n in getattr(builder, "NETWORK", {}) if n not in names]
    return f"; its options: {', '.join(names)}" if names else "; it takes no options"
