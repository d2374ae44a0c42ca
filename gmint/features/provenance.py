"""What a feature store records about the extraction that wrote it, read once into a typed record.

A store keeps its provenance as HDF5 attributes (`FeatureStore.provenance` decodes them into a mapping).
The keys grew with gmint; `Provenance.read` is the one reader of every version written, so that no stage
reads the attributes itself and each gets the same answer for a key an older store lacks:

- every store: gmint_version, torch_version, model_fingerprint, layers, reduction, engine, dataset,
  split_sha256, seed, n_rows (the keys `verify` requires), and the store's `format` (`gmint-feature-store/2`,
  `/3`);
- later: architecture, source (older stores hold Weight Modifiers: `gradient`), parameters (older gradient
  stores: a feature is named by its parameter), layer_shapes, layer_presets, split_seed, transform,
  loss_function, dataset_root and dataset_files_sha256, rows_sha256, the engine's choice and re-checks
  (engine_used, engine_check, engine_recheck), the model check run before extraction (model_check), and
  the shards a store joins (shards).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gmint.models.check import ModelCheck
from gmint.models.description import whole

# The features of stores written before `source` was recorded: Weight Modifiers.
GRADIENT = "gradient"


@dataclass(frozen=True)
class Provenance:
    """A feature store's provenance (see the module docstring for the versions read). None or empty marks
    what a store does not record.

    Attributes:
        format: the store's format version.
        gmint_version: the gmint that extracted it.
        model_fingerprint: the audited model's `fingerprint`.
        architecture: the audited model's architecture ("unknown" where its checkpoint records none).
        dataset: the dataset its rows come from.
        dataset_root: the folder they were read from ("" for a bundled dataset).
        dataset_files_sha256: the hash of the files read (see `ImageSet.files_sha256`).
        split_sha256: the membership split that labelled the rows ("" without one).
        split_seed: that split's seed (-1 without one).
        source: what the features are: `gradient` (Weight Modifiers) or activations.
        layers: the feature names, in extraction order.
        parameters: the parameters (or modules) behind each feature; None in older gradient stores, whose
            features are named by their parameter.
        layer_shapes: each parameter's (or activation map's) shape.
        layer_presets: layer setup → the feature names it picks on the audited model (none in older stores).
        reduction: how each Weight Modifier was reduced to features.
        engine: the engine asked for.
        engine_used: the engine that ran (`a+b` for a store resumed on another).
        loss_function: the loss the Weight Modifiers are gradients of.
        transform: the preprocessing, as `Transform.to_dict` writes it.
        seed: the extraction's seed.
        n_rows: rows the store holds.
        rows_sha256: the hash of the rows extracted.
        layer_setup: the layer setup the parameters were resolved from, as given.
        model_check: the check of the audited model on its declared members and externals.
        shards: the shard files a store joins (torchrun extractions).
    """

    format: str | None = None
    gmint_version: str | None = None
    model_fingerprint: str = ""
    architecture: str | None = None
    dataset: str | None = None
    dataset_root: str | None = None
    dataset_files_sha256: str | None = None
    split_sha256: str = ""
    split_seed: int | None = None
    source: str = GRADIENT
    layers: tuple[str, ...] = ()
    parameters: tuple[str, ...] | None = None
    layer_setup: str | None = None
    layer_shapes: dict[str, Any] = field(default_factory=dict)
    layer_presets: dict[str, list[str]] = field(default_factory=dict)
    reduction: str | None = None
    engine: str | None = None
    engine_used: str | None = None
    loss_function: str | None = None
    transform: dict[str, Any] | None = None
    seed: int | None = None
    n_rows: int | None = None
    rows_sha256: str | None = None
    model_check: ModelCheck | None = None
    shards: tuple[str, ...] | None = None

    @classmethod
    def read(cls, attrs: Mapping[str, Any]) -> Provenance:
        """The provenance a store's decoded attributes record, in any version gmint has written."""
        layers, parameters, shards = attrs.get("layers"), attrs.get("parameters"), attrs.get("shards")
        presets, shapes = attrs.get("layer_presets"), attrs.get("layer_shapes")
        return cls(
            format=_text(attrs.get("format")), gmint_version=_text(attrs.get("gmint_version")),
            model_fingerprint=_text(attrs.get("model_fingerprint")) or "",
            architecture=_text(attrs.get("architecture")), dataset=_text(attrs.get("dataset")),
            dataset_root=_text(attrs.get("dataset_root")),
            dataset_files_sha256=_text(attrs.get("dataset_files_sha256")),
            split_sha256=_text(attrs.get("split_sha256")) or "", split_seed=whole(attrs.get("split_seed")),
            source=_text(attrs.get("source")) or GRADIENT,
            layers=tuple(map(str, layers)) if isinstance(layers, list) else (),
            parameters=tuple(map(str, parameters)) if isinstance(parameters, list) else None,
            layer_setup=_text(attrs.get("layer_setup")),
            layer_shapes=dict(shapes) if isinstance(shapes, Mapping) else {},
            layer_presets={str(k): [str(n) for n in v] for k, v in presets.items()}
            if isinstance(presets, Mapping) else {},
            reduction=_text(attrs.get("reduction")), engine=_text(attrs.get("engine")),
            engine_used=_text(attrs.get("engine_used")), loss_function=_text(attrs.get("loss_function")),
            transform=dict(attrs["transform"]) if isinstance(attrs.get("transform"), Mapping) else None,
            seed=whole(attrs.get("seed")), n_rows=whole(attrs.get("n_rows")),
            rows_sha256=_text(attrs.get("rows_sha256")), model_check=ModelCheck.read(attrs.get("model_check")),
            shards=tuple(map(str, shards)) if isinstance(shards, list) else None)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
