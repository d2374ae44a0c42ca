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

A set trained in N shards (separate processes, machines or torchrun ranks sharing the folder, `Shard`) is
written so that no two processes ever write one file: shard R trains models R, R + N, R + 2N, ... (interleaved,
so every shard gets as many models as any other, give or take one, and the first pairs finish first), and records
them in its own manifest, `references.shard<R>-of-<N>.json`. The merge (`merge_references`: by the shard that
finds every model recorded, or asked for) checks every model file against its record and writes the one
references.json, then removes the shard manifests; manifests are written, and shard manifests removed, only
under an exclusive lock on the folder, so a merge never reads a shard manifest being replaced nor removes one
written after it read it. Until the merge, the folder holds no references.json, and every reader refuses it in
one line naming the shards and models still missing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
# A shard's own manifest: references.shard<R>-of-<N>.json.
_SHARD_FILE = re.compile(r"references\.shard(\d+)-of-(\d+)\.json")


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


@dataclass(frozen=True)
class Shard:
    """One of `count` processes that train a reference set together in one folder (see the module docstring).

    Shard `index` trains models index, index + count, index + 2·count, ...: interleaved rather than in blocks,
    so the shards' loads differ by one model at most for any K, the complementary pairs 2j, 2j + 1 finish
    together, and a set grown to a larger K with the same shards gives each its share of the new models.

    Attributes:
        index: this shard, from 0 (torchrun's RANK, a job array's task id).
        count: the number of shards (torchrun's WORLD_SIZE, the job array's size).
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"shard {self.index} of {self.count} does not exist: shards are numbered from 0 to "
                             "their count - 1")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """The shard written `INDEX/COUNT`, e.g. `0/4` (the first of four)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise InputError(f"a shard is written INDEX/COUNT, INDEX from 0 to COUNT - 1 (e.g. 0/4), got '{text}'")
        return cls(int(match[1]), int(match[2]))

    def models(self, k: int) -> list[int]:
        """The reference models of a set of `k` this shard trains."""
        return list(range(self.index, k, self.count))

    @property
    def file(self) -> str:
        """This shard's own manifest, beside the models."""
        return f"references.shard{self.index}-of-{self.count}.json"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ShardedSet:
    """What a folder's shard manifests (and the references.json of an earlier merge, if any) hold together.

    Attributes:
        manifest: the set the shards train, each model recorded where its shard (or references.json) records it.
        count: the number of shards.
        missing: shard index → the models it has not recorded yet, for each shard with some missing.
    """

    manifest: ReferenceSet
    count: int
    missing: dict[int, list[int]]


def shard_manifests(folder: Path) -> list[Shard]:
    """The shards whose manifests the folder holds, by count and index."""
    found = [_SHARD_FILE.fullmatch(p.name) for p in Path(folder).glob("references.shard*-of-*.json")]
    return sorted((Shard(int(m[1]), int(m[2])) for m in found if m and int(m[1]) < int(m[2])),
                  key=lambda s: (s.count, s.index))


def gather_shards(folder: Path) -> ShardedSet:
    """Read every shard manifest of the folder, check that they draw one set, and collect their records.

    Raises:
        InputError: no shard manifest, shards of sets split in different counts, or shards that draw different
            sets (another K, seed, mode, audited model, ...) or another than the folder's references.json.
    """
    folder = Path(folder)
    shards = shard_manifests(folder)
    if not shards:
        raise InputError(f"{folder} holds no shard of a reference set")
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        raise InputError(f"{folder} holds shards of a set split {' and '.join(map(str, counts))} ways; every shard "
                         "of one set must be given the same count: remove the others' shard manifests")
    sets = {s: ReferenceSet.load(folder, s.file) for s in shards}
    first, drawn = shards[0], replace(sets[shards[0]], models={})
    for shard, one in sets.items():
        if replace(one, models={}) != drawn:
            keys = [key for key, value in asdict(drawn).items() if key != "models" and asdict(one)[key] != value]
            raise InputError(f"{folder / shard.file} draws another reference set than {folder / first.file} "
                             f"({', '.join(keys)} differ); every shard of a set must be given the same options")
    names = {drawn.model_file(i) for i in range(drawn.k)}
    records: dict[str, ModelRecord] = {}
    if (folder / MANIFEST).exists():
        merged = ReferenceSet.load(folder)
        if merged.design() != drawn.design():
            keys = [key for key, value in drawn.design().items() if merged.design().get(key) != value]
            raise InputError(f"{folder} holds a reference set of another design than its shards ({', '.join(keys)} "
                             "differ); train the shards in another folder")
        records.update({name: r for name, r in merged.models.items() if name in names})
    for shard, one in sets.items():
        own = {drawn.model_file(i) for i in shard.models(drawn.k)}
        records.update({name: r for name, r in one.models.items() if name in own})
    missing = {index: left for index in range(counts[0])
               if (left := [i for i in Shard(index, counts[0]).models(drawn.k) if drawn.model_file(i) not in records])}
    return ShardedSet(replace(drawn, models=dict(sorted(records.items()))), counts[0], missing)


def unmerged_error(folder: Path, state: ShardedSet) -> InputError:
    """Why a folder of shards is no reference set yet, in one line: the shards and models still missing."""
    if not state.missing:
        return InputError(f"{folder}: every shard of its reference set has finished but they are not merged "
                          f"({MANIFEST} not written yet)", Remedy.MERGE_SHARDS)
    manifest = state.manifest
    left = "; ".join(f"shard {index}/{state.count} has not trained {_names([manifest.model_file(i) for i in models])}"
                     for index, models in state.missing.items())
    return InputError(f"{folder} holds a reference set trained in {state.count} shards that is not complete: {left}; "
                      f"train {'that shard' if len(state.missing) == 1 else 'those shards'} (each resumes where it "
                      "stopped), and the last to finish merges the set")


def _names(names: Sequence[str], shown: int = 4) -> str:
    """'a, b, c' or, for a long list, its first few and how many in all."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, ... ({len(names)} models)"


@contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's exclusive lock while writing a manifest or merging shards (waits for the holder).

    The lock is an flock on the folder itself, so it leaves no file behind and the kernel drops it when its
    holder dies: a killed shard never blocks the others.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def save_shard(folder: Path, manifest: ReferenceSet, shard: Shard) -> Path:
    """Write a shard's own manifest, under the folder's lock (a merge never reads it half replaced)."""
    with manifest_lock(folder):
        return manifest.save(folder, shard.file)


def merge_references(folder: Path) -> ReferenceSet:
    """Merge the shards of a reference set into its references.json, once every model is trained.

    Every model file is checked against its shard's record (its weights' fingerprint, its training rows) before
    references.json is written; then the shard manifests are removed. A folder already merged is left as it is.

    Raises:
        InputError: a shard or model still missing (one line naming them), a model file that is not the one
            recorded, shards that draw different sets, or a folder with no reference set.
    """
    merged = _merge(Path(folder), only_complete=False)
    assert merged is not None
    return merged


def merge_if_complete(folder: Path) -> ReferenceSet | None:
    """`merge_references` where every shard has recorded all its models; None (nothing written) otherwise."""
    return _merge(Path(folder), only_complete=True)


def _merge(folder: Path, *, only_complete: bool) -> ReferenceSet | None:
    with manifest_lock(folder):
        if not shard_manifests(folder):
            return ReferenceSet.load(folder)  # merged already, or its one line on what the folder lacks
        state = gather_shards(folder)
        if state.missing:
            if only_complete:
                return None
            raise unmerged_error(folder, state)
        manifest = state.manifest
        for i in range(manifest.k):
            path = folder / manifest.model_file(i)
            if not path.is_file():
                raise InputError(f"{path} is recorded by its shard but is missing; train shard "
                                 f"{i % state.count}/{state.count} again")
            check_model(manifest, i, load_audited(path), path)
            if manifest.models[path.name].rows_sha256 != rows_sha256(manifest.rows_of(i)):
                raise InputError(f"{path} trained on other rows than the {len(manifest.rows_of(i))} the set gives "
                                 f"model {i}")
        if not (folder / MANIFEST).exists() or ReferenceSet.load(folder) != manifest:
            manifest.save(folder)
        for shard in shard_manifests(folder):
            (folder / shard.file).unlink()
        return manifest
