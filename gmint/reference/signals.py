"""Signals of the audited model and of each reference model, extracted once per model into ordinary stores.

Each model of a reference folder gets two stores beside its checkpoint, written by `gmint.features.extract`
like any other and resumable like them:

- `<model>-gradient.h5`: Weight Modifiers (the gMINT features) of the candidates (the split's pool and holdout
  rows, in the order `gmint extract` uses);
- `<model>-output.h5`: the `output` source (loss, confidence, entropy, Weight-Modifier norm) of the candidates
  and then of the population rows (the split's control rows, membership −1): the reference points z of RMIA.

`<model>` is `audited` or `ref-00` ... . Every store of a folder covers the same rows in the same order, so a
row's signals line up across models; `load_signals` checks that they do and reads them into arrays. Each store
is also checked to come from its model: the fingerprint its provenance records must be the audited model's, or
the one references.json records for that reference model (a store copied over another's is refused, by
`extract_references` before it writes anything and by `load_signals` before it reads anything).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gmint.data.base import ImageSet
from gmint.errors import InputError, Remedy, StoreMismatchError
from gmint.features.extract import Rows, extract, split_rows
from gmint.features.provenance import Provenance
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.io import load_audited
from gmint.progress import progress_bar
from gmint.reference.manifest import (
    MANIFEST,
    ReferenceSet,
    check_model,
    reference_models,
    set_split,
    verify_references,
    warn_recorded,
)

AUDITED = "audited"
SOURCES = ("gradient", "output")


def store_path(folder: Path, model: str, source: str) -> Path:
    """`<folder>/<model>-<source>.h5` (model: `audited` or `ref-03`)."""
    return Path(folder) / f"{model}-{source}.h5"


def model_names(k: int) -> list[str]:
    """`audited`, then `ref-00` ... `ref-<k-1>`."""
    return [AUDITED, *(ReferenceSet.model_file(i).removesuffix(".pt") for i in range(k))]


@dataclass(frozen=True)
class ReferenceExtraction:
    """How the stores of a reference folder are extracted (recorded in each store's provenance).

    Attributes:
        settings: how the gradient stores are extracted; the output stores share its engine, batch, seed and
            device.
        output_layer_setup: the layer setup whose Weight-Modifier norm the output stores' `grad_norm` reads
            (their other signals read no layer; they always use the `mean` reduction, which `grad_norm` ignores).
    """

    settings: ExtractSettings = ExtractSettings()
    output_layer_setup: str = "output"

    def of(self, source: str) -> ExtractSettings:
        """The settings of `source`'s stores (`gradient` or `output`)."""
        if source == "gradient":
            return replace(self.settings, source=source)
        return replace(self.settings, source=source, layer_setup=self.output_layer_setup, reduction="mean")


def extract_references(data: ImageSet, folder: Path, *, k: int | None = None,
                       extraction: ReferenceExtraction = ReferenceExtraction(), sources: tuple[str, ...] = SOURCES,
                       show_progress: bool = False) -> list[Path]:
    """Extract the gradient and output stores of the audited model and the first `k` reference models.

    Finished stores of the same extraction are kept as they are and interrupted ones resumed, so the command
    can be run again after a kill, or after more reference models were trained. Before anything is written,
    every checkpoint is checked against the manifest's record of it (a set trained before models were recorded
    has them recorded now, see gmint.reference.manifest, with a warning) and every store already there against
    its model's fingerprint.

    Returns:
        The stores, model by model.

    Raises:
        InputError: a model not trained yet, a checkpoint or store not of the model the set records, an
            audited checkpoint other than the one the set was drawn for, or data whose sample ids are not row
            positions.
        StoreMismatchError: a store in the folder from another extraction.
    """
    folder = Path(folder)
    manifest = ReferenceSet.load(folder)
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise InputError(f"unknown reference source(s) {unknown}; choose from {list(SOURCES)}")
    paths = {AUDITED: Path(manifest.audited), **{p.stem: p for p in reference_models(folder, k, manifest=manifest)}}
    audited = load_audited(paths[AUDITED])
    if audited.fingerprint != manifest.audited_fingerprint:
        raise InputError(f"{paths[AUDITED]} is no longer the audited model the reference set was drawn for "
                         "(its weights changed)")
    manifest, recorded_now = verify_references(folder, manifest, k)
    expected = model_fingerprints(folder, manifest, list(paths))
    for name in paths:
        for source in sources:
            check_store(store_path(folder, name, source), name, expected[name], required=False)
    split = set_split(manifest, audited)
    candidates = split_rows(split)
    population = np.asarray(split.control, np.int64)
    everything = np.concatenate([candidates.index, population])
    if not np.array_equal(data.sample_ids[everything], everything):
        raise InputError(f"{data.name}: sample ids are not row positions; reference sets need the whole dataset")
    rows = {"gradient": candidates,
            "output": Rows(everything, np.concatenate([candidates.membership, np.full(len(population), -1, np.int8)]),
                           np.concatenate([candidates.role, np.full(len(population), -1, np.int8)]))}
    if recorded_now:  # every check passed: the records are the first thing written
        manifest.save(folder)
        warn_recorded(folder, recorded_now)
    written = []
    with progress_bar("reference stores", len(paths) * len(sources), enabled=show_progress) as bar:
        for i, (name, path) in enumerate(paths.items()):
            model = audited if name == AUDITED else load_audited(path)
            if name != AUDITED:  # the file checked above, read again: it must still be the same
                check_model(manifest, i - 1, model, path)
            for source in sources:
                out = store_path(folder, name, source)
                written.append(extract(model, data, rows[source], extraction.of(source), out=out, split=split,
                                       resume=out.exists(), show_progress=show_progress))
                bar.advance(1, out.name)
    return written


@dataclass(frozen=True)
class OutputSignals:
    """Output signals over the rows of the output stores (candidates, then population).

    Attributes:
        sample_id: (N,) dataset rows.
        membership: (N,) audited membership: 1 member, 0 external, −1 population.
        role: (N,) 0 auditor's pool, 1 held out, −1 population.
        label: (N,) true class.
        audited_loss: (N,) the audited model's loss (float64).
        reference_loss: (K, N) each reference model's loss.
        inclusion: (K, N) bool, whether reference model i trained on the row.
        finite: (N,) every model's loss is finite.
        group: (N,) the row's group in the dataset (−1 none), or None where unknown.
    """

    sample_id: np.ndarray
    membership: np.ndarray
    role: np.ndarray
    label: np.ndarray
    audited_loss: np.ndarray
    reference_loss: np.ndarray
    inclusion: np.ndarray
    finite: np.ndarray
    group: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.sample_id)
        if self.reference_loss.ndim != 2 or self.reference_loss.shape[1] != n or \
                self.inclusion.shape != self.reference_loss.shape or len(self.audited_loss) != n:
            raise InputError(f"output signals: {n} rows, audited {self.audited_loss.shape}, references "
                             f"{self.reference_loss.shape}, inclusion {self.inclusion.shape} do not line up")

    @property
    def k(self) -> int:
        """Number of reference models."""
        return int(self.reference_loss.shape[0])


@dataclass(frozen=True)
class GradientSignals:
    """Weight Modifiers over the candidate rows, for the audited model and each reference model.

    Attributes:
        sample_id, membership, role, label: (N,) as in the gradient stores.
        audited: (N, d) the audited model's reduced Weight Modifiers.
        reference: (K, N, d) each reference model's, on the same rows.
        inclusion: (K, N) bool, whether reference model i trained on the row.
        layers: feature names, in column order; dims: their widths.
        finite: (N,) every model's features are finite.
        group: (N,) the row's group in the dataset (−1 none), or None where unknown.
    """

    sample_id: np.ndarray
    membership: np.ndarray
    role: np.ndarray
    label: np.ndarray
    audited: np.ndarray
    reference: np.ndarray
    inclusion: np.ndarray
    layers: list[str]
    dims: list[int]
    finite: np.ndarray
    group: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, d = self.audited.shape
        if self.reference.shape[1:] != (n, d) or self.inclusion.shape != (self.reference.shape[0], n) or \
                sum(self.dims) != d:
            raise InputError(f"gradient signals: audited {self.audited.shape}, references {self.reference.shape}, "
                             f"inclusion {self.inclusion.shape}, dims {self.dims} do not line up")


@dataclass(frozen=True)
class ReferenceSignals:
    """What the attacks read: output signals, Weight Modifiers (where extracted) and the set's mode."""

    mode: str
    output: OutputSignals
    gradient: GradientSignals | None = None

    @property
    def k(self) -> int:
        """Number of reference models."""
        return self.output.k

    def first(self, k: int) -> ReferenceSignals:
        """The same signals with only the first `k` reference models.

        Raises:
            InputError: fewer than `k` models, or k < 1.
        """
        if not 1 <= k <= self.k:
            raise InputError(f"{k} reference models asked for; the set holds {self.k}")
        output = replace(self.output, reference_loss=self.output.reference_loss[:k],
                         inclusion=self.output.inclusion[:k])
        gradient = None if self.gradient is None else replace(
            self.gradient, reference=self.gradient.reference[:k], inclusion=self.gradient.inclusion[:k])
        return replace(self, output=output, gradient=gradient)


def model_fingerprints(folder: Path, manifest: ReferenceSet, names: list[str]) -> dict[str, str]:
    """Model name (`audited`, `ref-00`, ...) → the fingerprint its stores must record: the audited model's, and
    each reference model's as the manifest records it.

    Raises:
        InputError: a reference model the manifest records no fingerprint of (a set trained before models were
            recorded, whose next extraction records them).
    """
    missing = [f"{name}.pt" for name in names if name != AUDITED and f"{name}.pt" not in manifest.models]
    if missing:
        raise InputError(f"{Path(folder) / MANIFEST} records no fingerprint of {', '.join(missing)} (a set trained "
                         "before gmint "
                         "recorded its models), so its stores cannot be checked against them; extracting the set "
                         "again records them from the checkpoints", Remedy.EXTRACT_REFERENCES)
    return {name: manifest.audited_fingerprint if name == AUDITED else manifest.models[f"{name}.pt"].fingerprint
            for name in names}


def check_store(path: Path, name: str, fingerprint: str, *, required: bool = True) -> None:
    """Refuse a store that does not come from model `name` (its provenance's fingerprint is not `fingerprint`).

    Args:
        path: the store.
        name: `audited` or `ref-03`, for the message.
        fingerprint: the model's weights' fingerprint.
        required: whether a missing store is an error (else there is nothing to check).

    Raises:
        InputError: one line naming the store, the model it should come from and both fingerprints.
    """
    if not path.exists():
        if required:
            raise InputError(f"{path} not found", Remedy.EXTRACT_REFERENCES)
        return
    with FeatureStore.open(path) as store:
        recorded = Provenance.read(store.provenance).model_fingerprint
    if recorded != fingerprint:
        model = "the audited model" if name == AUDITED else f"reference model {name}.pt"
        raise InputError(f"{path} does not come from {model}: its provenance records model fingerprint "
                         f"{recorded[:12] or 'none'}, the set's {fingerprint[:12]}; remove it and extract it again")


def load_signals(folder: Path, *, k: int | None = None, gradient: bool = True) -> ReferenceSignals:
    """Read the stores of a reference folder (the first `k` reference models; default all) into arrays.

    Every store is checked first: its model's fingerprint (the audited model's, or the one the manifest records
    for the reference model), its split and its rows (those of the audited model's store).

    Raises:
        InputError: a k outside 1 to the set's K, a store missing or incomplete (named), a store of another
            model (see `check_store`) or split, or a set whose models are not recorded yet.
        StoreMismatchError: stores whose rows do not line up.
    """
    folder = Path(folder)
    manifest = ReferenceSet.load(folder)
    k = manifest.k if k is None else k
    reference_models(folder, k, manifest=manifest)
    names = model_names(k)
    expected = model_fingerprints(folder, manifest, names)
    for source in ("output", "gradient") if gradient else ("output",):
        for name in names:
            check_store(store_path(folder, name, source), name, expected[name])
    output = _read(folder, names, "output", manifest)
    out = OutputSignals(sample_id=output["sample_id"], membership=output["membership"], role=output["role"],
                        label=output["label"], audited_loss=output["loss"][0], reference_loss=output["loss"][1:],
                        inclusion=manifest.included(output["sample_id"])[:k], finite=output["finite"],
                        group=output["group"])
    grad = None
    if gradient:
        g = _read(folder, names, "gradient", manifest)
        grad = GradientSignals(sample_id=g["sample_id"], membership=g["membership"], role=g["role"], label=g["label"],
                               audited=g["features"][0], reference=g["features"][1:],
                               inclusion=manifest.included(g["sample_id"])[:k], layers=g["layers"],
                               dims=g["dims"], finite=g["finite"], group=g["group"])
    return ReferenceSignals(manifest.mode, out, grad)


def _read(folder: Path, names: list[str], source: str, manifest: ReferenceSet) -> dict[str, Any]:
    """One source's stores of every model, stacked (model first), after checking they line up."""
    columns: dict[str, np.ndarray] = {}
    losses, features, finite = [], [], []
    layers: list[str] = []
    dims: list[int] = []
    rows: object = None  # the first store's rows_sha256, which every other store must record too
    for name in names:
        path = store_path(folder, name, source)
        if not path.exists():
            raise InputError(f"{path} not found", Remedy.EXTRACT_REFERENCES)
        with FeatureStore.open(path) as store:
            store.require_complete()
            prov = Provenance.read(store.provenance)
            if prov.split_sha256 != manifest.split_sha256:
                raise InputError(f"{path} was extracted on another split than the reference set's")
            mine = {c: store.column(c) for c in ("sample_id", "membership", "role", "label", "group")}
            if not columns:
                columns, layers, dims = mine, store.layers, [store.dims[n] for n in store.layers]
                rows = prov.rows_sha256
            elif any(not np.array_equal(columns[c], mine[c]) for c in mine) or store.layers != layers or \
                    prov.rows_sha256 != rows:
                raise StoreMismatchError(f"{path} covers other rows or features than "
                                         f"{store_path(folder, names[0], source)}",
                                         Remedy.EXTRACT_REFERENCES)
            losses.append(store.column("loss").astype(np.float64))
            finite.append(store.column("finite"))
            if source == "gradient":
                features.append(store.features())
    result: dict[str, object] = {**columns, "loss": np.stack(losses), "finite": np.logical_and.reduce(finite),
                                 "layers": layers, "dims": dims}
    if features:
        result["features"] = np.stack(features)
    return result
