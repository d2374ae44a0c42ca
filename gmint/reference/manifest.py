"""The manifest of a reference set, and the checks that each of its model files is the one it records.

A reference set is a folder:

    references.json       the manifest: mode, K, seed, the pool the halves are drawn from, the inclusion matrix,
                          and each trained model's record (its weights' fingerprint, its training rows' hash)
    ref-00.pt ... ref-<K-1>.pt   one gmint checkpoint per reference model (train_audited with `rows`)
    references.shard<R>-of-<N>.json   while a set is trained in N shards: shard R's own manifest (see below)

How the halves are drawn is gmint.reference.design's; how the models are trained, gmint.reference.models'.

Every model is recorded in the manifest as it finishes (`ModelRecord`), and checked against that record before
it is used: a checkpoint by its weights' fingerprint, a store by the fingerprint its provenance records. A file
copied over another (ref-00.pt over ref-01.pt, or ref-00-output.h5 over ref-01-output.h5) would otherwise be
read as a second, independent reference model: the attacks would run, and report, on one model counted twice
(LiRA's σ_out fell from 0.749 to 0.671 so). A set trained before models were recorded has them recorded by its
next extraction (or resumed training), from each checkpoint, once the training rows the checkpoint records are
found to be the ones the manifest gives that model; the record says so (`recorded`), and a warning too.

A set trained in shards is gathered and merged by gmint.reference.shards.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from gmint.data.split import MembershipSplit
from gmint.errors import InputError, Remedy
from gmint.files import atomic_write
from gmint.models.io import AuditedModel, load_audited

MODES = ("offline", "online")
INITS = ("audited", "fresh")
MANIFEST = "references.json"
FORMAT = "gmint-references/1"
# Manifest fields written only where they hold something (a model from outside's given recipe and split, the
# records of models trained), so the manifests written before each existed keep their content and their hash.
_GIVEN_ONLY = ("recipe", "split", "models")
# How a model came to be recorded (ModelRecord.recorded).
AT_TRAINING = "at training"
FROM_CHECKPOINT = "from its checkpoint (trained before models were recorded; its training rows checked)"


def rows_sha256(rows: Sequence[int] | np.ndarray) -> str:
    """Hash of a set of dataset rows (sorted, as int64): a reference model's training rows, as recorded."""
    return hashlib.sha256(np.unique(np.asarray(rows, np.int64)).astype(np.int64).tobytes()).hexdigest()


@dataclass(frozen=True)
class ModelRecord:
    """What a reference model was when it was recorded: every later use checks its files against this.

    Attributes:
        fingerprint: `gmint.models.io.fingerprint` of its weights, which its stores' provenance records too.
        rows_sha256: `rows_sha256` of the dataset rows it trained on (those the manifest's inclusion gives it).
        recorded: `AT_TRAINING`, or `FROM_CHECKPOINT` for a model of a set trained before models were recorded.
    """

    fingerprint: str
    rows_sha256: str
    recorded: str = AT_TRAINING


@dataclass(frozen=True)
class ReferenceSet:
    """The manifest of a reference set: how its models were drawn and which pool rows each trains on.

    Attributes:
        mode: `offline` (pool = the split's control rows) or `online` (pool = control ∪ candidates).
        k: number of reference models.
        seed: seeds the halves; recorded.
        init: `audited` (every model starts from the audited model's seed) or `fresh` (model i from seed + 1 + i).
        audited: the audited checkpoint the recipe was read from, as given.
        audited_fingerprint: its weights' sha256, which the stores beside it must come from.
        dataset: the dataset name.
        split_sha256: the audited model's split.
        pool: the dataset rows the halves are drawn from, sorted.
        inclusion: (K, len(pool)) 0/1, 1 where model i trains on pool row j.
        grouped_by: `group` when whole groups were drawn, else `row`.
        recipe: the TrainConfig the auditor gave for a model from outside (None: the audited checkpoint's own).
        split: the split the auditor gave for a model from outside (None: the audited checkpoint's own).
        models: model file (ref-00.pt, ...) → its record, for each model trained (empty in a set written before
            models were recorded, until they are).
    """

    mode: str
    k: int
    seed: int
    init: str
    audited: str
    audited_fingerprint: str
    dataset: str
    split_sha256: str
    pool: list[int]
    inclusion: list[list[int]]
    grouped_by: str = "row"
    recipe: dict[str, object] | None = None
    split: dict[str, object] | None = None
    models: dict[str, ModelRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown reference mode '{self.mode}'; choose from {list(MODES)}")
        if self.init not in INITS:
            raise InputError(f"unknown reference init '{self.init}'; choose from {list(INITS)}")
        if self.k < 1 or len(self.inclusion) != self.k or any(len(r) != len(self.pool) for r in self.inclusion):
            raise InputError(f"the inclusion matrix must be {self.k} × {len(self.pool)} (models × pool rows)")

    @property
    def matrix(self) -> np.ndarray:
        """(K, len(pool)) bool inclusion matrix."""
        return np.asarray(self.inclusion, dtype=bool).reshape(self.k, len(self.pool))

    def rows_of(self, i: int) -> np.ndarray:
        """The dataset rows reference model `i` trains on."""
        return np.asarray(self.pool, np.int64)[self.matrix[i]]

    def included(self, rows: np.ndarray) -> np.ndarray:
        """(K, len(rows)) bool: whether each reference model trained on each dataset row (False off the pool)."""
        rows = np.asarray(rows, np.int64)
        pool = np.asarray(self.pool, np.int64)
        where = np.searchsorted(pool, rows).clip(0, max(len(pool) - 1, 0))
        found = (pool[where] == rows) if len(pool) else np.zeros(len(rows), bool)
        return self.matrix[:, where] & found[None, :]

    def model_seed(self, i: int, audited_seed: int) -> int:
        """The training seed of reference model `i`."""
        return audited_seed if self.init == "audited" else audited_seed + 1 + i

    @staticmethod
    def model_file(i: int) -> str:
        """ref-00.pt, ref-01.pt, ..."""
        return f"ref-{i:02d}.pt"

    def design(self) -> dict[str, object]:
        """Everything but K, the inclusion and the records: what must agree for two sets to share their first
        models (the split given is compared by its hash)."""
        return {k: v for k, v in asdict(self).items() if k not in ("k", "inclusion", "audited", "split", "models")}

    def with_record(self, i: int, record: ModelRecord) -> ReferenceSet:
        """The manifest with model `i` recorded."""
        return replace(self, models={**self.models, self.model_file(i): record})

    def _fields(self) -> dict[str, object]:
        """The manifest's content as written and hashed: fields of `_GIVEN_ONLY` only where they hold something."""
        return {k: v for k, v in asdict(self).items() if not (k in _GIVEN_ONLY and not v)}

    def save(self, folder: Path, name: str = MANIFEST) -> Path:
        """Write references.json (or the manifest file `name`) into `folder`, whole or not at all."""
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, **self._fields(), "sha256": self.sha256}
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(payload))
        return path

    @property
    def sha256(self) -> str:
        """Hash of the manifest's content."""
        return hashlib.sha256(json.dumps(self._fields(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def load(cls, folder: Path, name: str = MANIFEST) -> ReferenceSet:
        """Read the manifest of a reference folder (or its manifest file `name`, a shard's).

        Raises:
            InputError: no manifest (for a set trained in shards and not merged yet: the shards and models
                still missing), not a JSON object (a list, a truncated file), another format, fields of the
                wrong kind, or content edited after it was written.
        """
        path = Path(folder) / name
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
            # A folder of shards not merged yet: say which shards and models are missing. Imported here, as
            # gmint.reference.shards reads its shards' manifests through this class.
            from gmint.reference.shards import gather_shards, shard_manifests, unmerged_error

            if name == MANIFEST and shard_manifests(folder):
                raise unmerged_error(folder, gather_shards(folder)) from None
            raise InputError(f"{folder} holds no reference set ({MANIFEST} not found)",
                             Remedy.TRAIN_REFERENCES) from None
        except IsADirectoryError:
            raise InputError(f"{path} is a folder, not a reference manifest") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not a gmint reference manifest: it is not valid JSON ({exc}); a "
                             "manifest is written whole, so it was cut short or edited") from None
        if not isinstance(payload, dict):
            raise InputError(f"{path} is not a gmint reference manifest: it holds a JSON {_json_kind(payload)}, "
                             "not an object")
        if payload.pop("format", None) != FORMAT:
            raise InputError(f"{path} is not a gmint reference manifest ({FORMAT})")
        recorded = payload.pop("sha256", None)
        try:
            models = payload.pop("models", {})
            payload["models"] = {str(name): ModelRecord(**record) for name, record in models.items()}
            manifest = cls(**payload)
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{path} is not a gmint reference manifest: its fields are wrong ({exc})") from None
        if recorded != manifest.sha256:
            raise InputError(f"{path} was modified after it was written (hash mismatch)")
        return manifest


def _json_kind(value: object) -> str:
    """'list', 'string', 'number', ... : what a JSON value is, in JSON's words."""
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def check_model(manifest: ReferenceSet, i: int, model: AuditedModel, path: Path) -> None:
    """Refuse reference model `i`'s checkpoint where its weights are not those recorded when it was trained.

    Raises:
        InputError: one line naming the file, its fingerprint and the one recorded (or that none is).
    """
    record = manifest.models.get(manifest.model_file(i))
    if record is None:
        raise InputError(f"{path}: the reference set records no fingerprint of it")
    if model.fingerprint != record.fingerprint:
        raise InputError(f"{path} is not reference model {i} of the set: its weights' fingerprint is "
                         f"{model.fingerprint[:12]}, {MANIFEST} records {record.fingerprint[:12]} (trained on its "
                         f"{len(manifest.rows_of(i))} rows); put back that model, or train the set again")


def record_model(manifest: ReferenceSet, i: int, model: AuditedModel, path: Path) -> ModelRecord:
    """The record of reference model `i` from its checkpoint, for a set trained before models were recorded:
    only once the training rows its checkpoint records are those the manifest gives model `i` (a model copied
    over another records the other's rows).

    Raises:
        InputError: a checkpoint that records no training rows, or other ones.
    """
    rows = model.record.rows
    if rows is None:
        raise InputError(f"{path} records no training rows: it is not a reference model of the set")
    if rows_sha256(rows) != rows_sha256(manifest.rows_of(i)):
        raise InputError(f"{path} is not reference model {i} of the set: it trained on {len(rows)} rows (hash "
                         f"{rows_sha256(rows)[:12]}), the set gives model {i} {len(manifest.rows_of(i))} others (hash "
                         f"{rows_sha256(manifest.rows_of(i))[:12]}); put back that model, or train the set again")
    return ModelRecord(model.fingerprint, rows_sha256(rows), FROM_CHECKPOINT)


def verify_references(folder: Path, manifest: ReferenceSet, k: int | None = None
                      ) -> tuple[ReferenceSet, list[str]]:
    """Check the checkpoints of the first `k` (default all) reference models against the manifest's records;
    record those a set trained before models were recorded lacks (see `record_model`). Nothing is written.

    Returns:
        The manifest with every model recorded, and the files recorded now (to be saved by the caller).

    Raises:
        InputError: a model not trained, or not the one recorded (see `check_model`, `record_model`).
    """
    paths = reference_models(folder, k, manifest=manifest)
    recorded_now = []
    for i, path in enumerate(paths):
        model = load_audited(path)
        if path.name in manifest.models:
            check_model(manifest, i, model, path)
        else:
            manifest = manifest.with_record(i, record_model(manifest, i, model, path))
            recorded_now.append(path.name)
    return manifest, recorded_now


def warn_recorded(folder: Path, names: Sequence[str]) -> None:
    """Say that models of a set trained before models were recorded were recorded now."""
    if names:
        warnings.warn(f"{Path(folder) / MANIFEST} recorded no fingerprint of {', '.join(names)} (the set was trained "
                      "before gmint recorded its models): recorded now from the checkpoints, whose training rows "
                      "are those the set gives them", stacklevel=3)


def reference_models(folder: Path, k: int | None = None, *, manifest: ReferenceSet | None = None) -> list[Path]:
    """The checkpoints of the first `k` (default all) reference models of a set (its manifest read from `folder`
    unless given).

    Raises:
        InputError: a k outside 1 to the set's K, or a model not trained yet.
    """
    manifest = ReferenceSet.load(folder) if manifest is None else manifest
    k = manifest.k if k is None else k
    if not 1 <= k <= manifest.k:
        raise InputError(f"{folder} holds {manifest.k} reference models, {k} asked for (from 1 to {manifest.k}); "
                         "a resumed training with a larger K grows the set")
    paths = [Path(folder) / manifest.model_file(i) for i in range(k)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise InputError(f"{folder}: {', '.join(missing)} not trained yet; resume the set's training to train "
                         f"{'it' if len(missing) == 1 else 'them'}")
    return paths


def set_split(manifest: ReferenceSet, audited: AuditedModel) -> MembershipSplit:
    """The split of a reference set: the one given for a model from outside (recorded in the manifest), else
    the one the audited checkpoint records.

    Raises:
        InputError: neither records one, or it is not the split the set was drawn on.
    """
    split = (MembershipSplit.from_json(json.dumps(manifest.split)) if manifest.split is not None
             else audited.record.split)
    if split is None:
        raise InputError(f"neither the reference set nor {manifest.audited} records a membership split")
    if split.sha256 != manifest.split_sha256:
        raise InputError(f"the split of {manifest.audited} is not the one the reference set was drawn on")
    return split
