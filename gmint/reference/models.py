"""Reference models: K more models trained with the audited model's recipe, on data the auditor controls.

A sample's signal under the audited model says little on its own: a hard sample has a high loss whether it
was trained on or not. Difficulty calibration (LiRA, Carlini et al. 2022; RMIA, Zarifzadeh et al. 2024)
compares it with the same sample's signal under reference models whose training data is known. A reference
set is a folder:

    references.json       the manifest: mode, K, seed, the pool the halves are drawn from, the inclusion matrix,
                          and each trained model's record (its weights' fingerprint, its training rows' hash)
    ref-00.pt ... ref-<K-1>.pt   one gmint checkpoint per reference model (train_audited with `rows`)

- **offline** (the auditor's realistic case): the pool is the split's `control` rows, a population disjoint
  from the candidates (members and externals); no reference model ever trains on a candidate.
- **online** (an upper bound, for experiments): the pool is control ∪ candidates, so each candidate is in
  about half of the reference models.

Halves come in complementary pairs (model 2j trains on a random half of the pool, model 2j+1 on the rest), so
any even prefix of the set includes each pool row in exactly half of its models: K ∈ {2, 4, 8} are prefixes of
one set of 8, and each is balanced. Where the data has groups (GTSRB tracks) whole groups are drawn, so no
reference model sees part of a track. The models start from the audited model's initial weights
(`init="audited"`: the same seed, hence the same initialisation, as per-filter Weight Modifiers of independently
initialised networks are not aligned) or each from its own seed (`init="fresh"`).

The recipe is the audited checkpoint's own where gmint trained it. A model from outside (`gmint model import`)
records how it is built and fed but not how it was trained, nor on which rows: the auditor gives the
TrainConfig and the split of their own lists, and the reference models are its described architecture (its
factory and arguments, its preprocessing, its output) trained with that recipe. The recipe and the split given
are recorded in the manifest (a resume with another is refused) and in each reference checkpoint, which also
records the description, so the reference models load and are read exactly as the audited model is. With
`init="audited"` they then share the recipe's seed, which need not be the audited model's own initialisation.

Every model is recorded in the manifest as it finishes (`ModelRecord`), and checked against that record before
it is used: a checkpoint by its weights' fingerprint, a store by the fingerprint its provenance records. A file
copied over another (ref-00.pt over ref-01.pt, or ref-00-output.h5 over ref-01-output.h5) would otherwise be
read as a second, independent reference model: the attacks would run, and report, on one model counted twice
(LiRA's σ_out fell from 0.749 to 0.671 so). A set trained before models were recorded has them recorded by its
next extraction (or resumed training), from each checkpoint, once the training rows the checkpoint records are
found to be the ones the manifest gives that model; the record says so (`recorded`), and a warning too.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy
from gmint.files import atomic_write
from gmint.models.description import ModelDescription
from gmint.models.io import AuditedModel, load_audited, read_checkpoint, training_finished
from gmint.models.train import TrainConfig, train_audited
from gmint.models.zoo import ARCHITECTURES
from gmint.progress import progress_bar

MODES = ("offline", "online")
INITS = ("audited", "fresh")
MANIFEST = "references.json"
FORMAT = "gmint-references/1"
# Recorded by train_audited in arch_args from the data and transform, not chosen by the recipe's options.
_DERIVED_ARCH_ARGS = ("in_channels", "num_classes", "image_size")
# Manifest fields written only where they hold something (a model from outside's given recipe and split, the
# records of models trained), so the manifests written before each existed keep their content and their hash.
_GIVEN_ONLY = ("recipe", "split", "models")
# How a model came to be recorded (ModelRecord.recorded).
AT_TRAINING = "at training"
FROM_CHECKPOINT = "from its checkpoint (trained before models were recorded; its training rows checked)"
# How often a training worker looks whether the process that started it is still alive (seconds): a worker
# outlives a killed parent by at most this, where the kernel does not end it at once (see `_exit_with_parent`).
PARENT_POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # prctl option from <linux/prctl.h>: a signal for this process when its parent dies


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

    def save(self, folder: Path) -> Path:
        """Write references.json into `folder`, whole or not at all."""
        path = Path(folder) / MANIFEST
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
    def load(cls, folder: Path) -> ReferenceSet:
        """Read the manifest of a reference folder.

        Raises:
            InputError: no manifest, not a JSON object (a list, a truncated file), another format, fields of
                the wrong kind, or content edited after it was written.
        """
        path = Path(folder) / MANIFEST
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
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


def paired_halves(units: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(k, len(units)) bool: complementary pairs of random halves over the units' distinct values.

    Model 2j takes a random half of the distinct units (rows, or groups of rows), model 2j+1 the other half; an
    odd last model takes a half of its own. Pairs are drawn one after another from one seeded generator, so the
    design for k is the first k rows of the design for any larger k.
    """
    if k < 1:
        raise InputError(f"the number of reference models must be at least 1, got {k}")
    distinct = np.unique(units)
    if len(distinct) < 2:
        raise InputError(f"the reference pool has {len(distinct)} distinct rows or groups; halves need at least 2")
    rng = np.random.default_rng(seed)
    design = np.zeros((k, len(units)), bool)
    for pair in range(0, k, 2):
        half = rng.permutation(distinct)[: len(distinct) // 2]
        taken = np.isin(units, half)
        design[pair] = taken
        if pair + 1 < k:
            design[pair + 1] = ~taken
    return design


def reference_pool(split: MembershipSplit, mode: str) -> np.ndarray:
    """The rows reference models draw their halves from: control rows (offline), control ∪ candidates (online).

    Raises:
        InputError: an unknown mode, or a split without control rows.
    """
    if mode not in MODES:
        raise InputError(f"unknown reference mode '{mode}'; choose from {list(MODES)}")
    if not split.control:
        raise InputError("the split has no control (population) rows for reference models to train on",
                         Remedy.CONTROL_ROWS)
    rows = split.control if mode == "offline" else split.control + split.members + split.external
    return np.unique(np.asarray(rows, np.int64))


def candidate_rows(split: MembershipSplit) -> np.ndarray:
    """The rows whose membership is audited: members and externals of the split, sorted."""
    return np.unique(np.asarray(split.members + split.external, np.int64))


@dataclass(frozen=True)
class ReferenceRecipe:
    """How every reference model of one audited model is trained, but for its rows and seed.

    Attributes:
        config: the TrainConfig (the audited checkpoint's, or the one given for a model from outside).
        split: the audited model's membership split: its control rows are the offline pool.
        arch: a zoo architecture (a model gmint trained), else None.
        transform: the zoo architecture's preprocessing (a described model's is in its description).
        arch_options: the zoo architecture's options, those train_audited derives from the data left out.
        description: how a model from outside is built, fed and read (its reference models are built so), else
            None.
        given: the config and split were given by the auditor (a model from outside), not read from the model.
    """

    config: TrainConfig
    split: MembershipSplit
    arch: str | None = None
    transform: Transform | None = None
    arch_options: dict[str, object] | None = None
    description: ModelDescription | None = None
    given: bool = False


def records_recipe(audited: AuditedModel) -> bool:
    """Whether the audited checkpoint records the recipe it was trained with (gmint trained it)."""
    return "train_config" in audited.meta


def reference_recipe(audited: AuditedModel, audited_path: Path, *, config: TrainConfig | None = None,
                     split: MembershipSplit | None = None) -> ReferenceRecipe:
    """The recipe reference models of `audited` are trained with: a gmint checkpoint's own, or for a model from
    outside its description with the TrainConfig and split the auditor gives.

    A model gmint trained is refused a `config` (its reference models are trained as it was, not as stated) and
    any `split` but its own.

    Raises:
        InputError: a config for a model that records its own, another split than its own; for a model from
            outside no config or no split, or code that cannot be built afresh (a TorchScript file, a pickled
            module); a checkpoint that records neither a recipe nor a description.
    """
    meta = audited.meta
    if records_recipe(audited):
        missing = [key for key in ("arch", "arch_args", "transform", "split") if key not in meta]
        if missing:
            raise InputError(f"{audited_path} records an incomplete training recipe ({', '.join(missing)} missing)")
        if config is not None:
            raise InputError(f"{audited_path} records the recipe it was trained with, which its reference models "
                             "are trained with: give no other")
        own = split_of(meta)
        if split is not None and split.sha256 != own.sha256:
            raise InputError(f"the split {split.sha256[:12]} is not the one {audited_path} was trained on "
                             f"({own.sha256[:12]}): its reference models are drawn from its own")
        arch_args = meta["arch_args"]
        assert isinstance(arch_args, dict)
        return ReferenceRecipe(config=TrainConfig(**meta["train_config"]),  # type: ignore[arg-type]
                               split=own, transform=Transform.from_dict(meta["transform"]),  # type: ignore[arg-type]
                               arch=str(meta["arch"]),
                               arch_options={k: v for k, v in arch_args.items() if k not in _DERIVED_ARCH_ARGS})
    description = audited.description
    if description is None:
        raise InputError(f"{audited_path} records no training recipe and no description of how it is built; "
                         "reference models need at least the model's code and preprocessing")
    if ":" not in description.arch and description.arch not in ARCHITECTURES:
        raise InputError(f"{audited_path} is a {description.arch} model without the code that builds it, so no "
                         "reference model can be trained like it; import it with its architecture")
    if config is None:
        raise InputError(f"{audited_path} was trained outside gmint and records no training recipe: give the one "
                         "its reference models are trained with (epochs, learning rate, optimiser, ...)")
    if split is None:
        raise InputError(f"{audited_path} was trained outside gmint and records no membership split: give the "
                         "split of its members and externals, with control rows for the reference models")
    return ReferenceRecipe(config=config, split=split, description=description, given=True)


def design_references(audited: AuditedModel, audited_path: Path, data: ImageSet, *, mode: str, k: int,
                      seed: int = 0, init: str = "audited", config: TrainConfig | None = None,
                      split: MembershipSplit | None = None) -> ReferenceSet:
    """The manifest of K reference models for an audited gmint checkpoint (nothing is trained).

    Args:
        audited: the audited checkpoint.
        audited_path: where it is (recorded).
        data: the data the reference models train on (a model from outside's: labelled in its classes).
        mode: `offline` or `online` (see ReferenceSet).
        k: number of reference models.
        seed: seeds the halves.
        init: `audited` or `fresh` (see ReferenceSet).
        config: the TrainConfig of a model from outside (see `reference_recipe`).
        split: the membership split of a model from outside (see `reference_recipe`).

    Raises:
        InputError: no recipe (see `reference_recipe`), another dataset, data in other classes than the
            model's, or an offline design that would train on a candidate.
    """
    recipe = reference_recipe(audited, audited_path, config=config, split=split)
    recorded = audited.meta.get("dataset")
    if recorded is not None and recorded != data.name:
        raise InputError(f"{audited_path} was trained on '{recorded}', the data is '{data.name}'")
    if recipe.split.dataset != data.name:
        raise InputError(f"the split is for '{recipe.split.dataset}', the data is '{data.name}'")
    audited.check_classes(data.classes)
    split = recipe.split
    pool = reference_pool(split, mode)
    units = data.groups[pool] if data.groups is not None else pool
    inclusion = paired_halves(units, k, seed)
    manifest = ReferenceSet(mode=mode, k=k, seed=seed, init=init, audited=str(audited_path),
                            audited_fingerprint=audited.fingerprint, dataset=data.name,
                            split_sha256=split.sha256, pool=[int(r) for r in pool],
                            inclusion=inclusion.astype(int).tolist(),
                            grouped_by="group" if data.groups is not None else "row",
                            recipe=asdict(recipe.config) if recipe.given else None,
                            split=asdict(split) if recipe.given else None)
    check_offline(manifest, split)
    return manifest


def check_offline(manifest: ReferenceSet, split: MembershipSplit) -> None:
    """Refuse an offline set in which any reference model trains on a candidate, from the recorded inclusion.

    Raises:
        InputError: naming the model and how many candidates it would see.
    """
    if manifest.mode != "offline":
        return
    candidates = candidate_rows(split)
    for i in range(manifest.k):
        seen = np.intersect1d(manifest.rows_of(i), candidates)
        if len(seen):
            raise InputError(f"offline reference model {i} would train on {len(seen)} candidate rows (e.g. "
                             f"{int(seen[0])}); offline reference models see population rows only")


def train_references(data: ImageSet, audited_path: Path, out: Path, *, mode: str = "offline", k: int = 4,
                     seed: int = 0, init: str = "audited", config: TrainConfig | None = None,
                     split: MembershipSplit | None = None, resume: bool = False, overwrite: bool = False,
                     device: str = "cpu", workers: int = 1, show_progress: bool = False) -> ReferenceSet:
    """Train K reference models with the audited checkpoint's recipe into the folder `out`.

    The recipe (architecture and its options, preprocessing, TrainConfig, split) is read from the audited
    checkpoint, or for a model from outside its description with the `config` and `split` given (see
    `reference_recipe`); only the training rows (a half of the pool) and, with `init="fresh"`, the seed differ.
    The manifest is written before the first model and again as each model finishes, with its record
    (`ModelRecord`); each model checkpoints every epoch, and `resume=True` continues a killed run, reusing
    finished models once each is found to be the one recorded; it also grows a set to a larger K (the first
    models are the same).

    Args:
        data: the dataset the audited model was trained on (a model from outside's: labelled in its classes).
        audited_path: the audited gmint checkpoint.
        out: the reference folder.
        mode: `offline` or `online` (see the module docstring).
        k: number of reference models.
        seed: seeds the halves.
        init: `audited` or `fresh` (see ReferenceSet).
        config: the TrainConfig of a model from outside (refused for a model that records its own).
        split: the membership split of a model from outside (for one gmint trained: its own, or None).
        resume: continue (or grow) the set in `out`.
        overwrite: replace a set of another design in `out` (its models are retrained).
        device: where the models train.
        workers: models trained at once, each in its own process (on a machine with cores to spare: each
            model uses its recipe's threads); the weights are the same for any number. A worker ends when the
            process that started it does, however it ends.
        show_progress: one bar over the models, and (with one worker) each model's own.

    Raises:
        InputError: an existing set without `resume`/`overwrite` or of another design (another recipe
            among them), a finished model that is not the one recorded, or a set that cannot be drawn (see
            design_references).
    """
    out = Path(out)
    if resume and overwrite:
        raise InputError(f"resume continues {out}, overwrite replaces it: pass one of them")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    audited = load_audited(audited_path)
    manifest = design_references(audited, audited_path, data, mode=mode, k=k, seed=seed, init=init, config=config,
                                 split=split)
    recipe = reference_recipe(audited, audited_path, config=config, split=split)
    existing = (out / MANIFEST).exists()
    if existing and not (resume or overwrite):
        raise InputError(f"{out} holds a reference set; resume it to continue, or overwrite it to replace it")
    unrecorded: set[str] = set()
    if existing and resume:
        old = ReferenceSet.load(out)
        if old.design() != manifest.design():
            keys = [key for key, value in manifest.design().items() if old.design().get(key) != value]
            raise InputError(f"{out} holds a reference set of another design ({', '.join(keys)} differ); choose "
                             "another folder or overwrite it")
        # a smaller K is the prefix of the set already drawn; a larger one keeps the first models' records
        manifest = old if old.k > manifest.k else replace(manifest, models=old.models)
        for i in range(manifest.k):
            path = out / manifest.model_file(i)
            if path.exists() and manifest.model_file(i) in manifest.models:
                check_model(manifest, i, load_audited(path), path)
            elif path.exists() and training_finished(json.loads(read_checkpoint(path)["meta"])):
                unrecorded.add(path.name)  # a finished model of a set trained before models were recorded
    manifest.save(out)
    config = recipe.config
    jobs = [_ModelJob(recipe=replace(recipe, config=replace(config, seed=manifest.model_seed(i, config.seed))),
                      out=out / manifest.model_file(i), rows=manifest.rows_of(i).tolist(), overwrite=overwrite,
                      device=device) for i in range(manifest.k)]
    done = manifest

    def record(i: int, finished: ModelRecord) -> None:
        """Record model `i` as it finishes (the same record for a model kept as it was)."""
        nonlocal done
        path = out / done.model_file(i)
        if finished.rows_sha256 != rows_sha256(done.rows_of(i)):
            raise InputError(f"{path} trained on other rows than the {len(done.rows_of(i))} the set gives model {i}")
        known = done.models.get(path.name)
        if known is not None and known.fingerprint == finished.fingerprint:
            return
        how = FROM_CHECKPOINT if path.name in unrecorded else AT_TRAINING
        done = done.with_record(i, replace(finished, recorded=how))
        done.save(out)

    with progress_bar(f"reference models ({mode})", manifest.k, enabled=show_progress) as bar:
        if workers == 1:
            for i, job in enumerate(jobs):
                record(i, job.run(data, show_progress=show_progress))
                bar.advance(1, job.out.name)
        else:
            def finished(i: int, result: ModelRecord) -> None:
                record(i, result)
                bar.advance(1, jobs[i].out.name)

            _train_in_workers(jobs, data, workers, finished)
    warn_recorded(out, sorted(name for name, r in done.models.items() if name in unrecorded and
                              r.recorded == FROM_CHECKPOINT))
    return done


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
    rows = model.meta.get("rows")
    if not isinstance(rows, list):
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


@dataclass(frozen=True)
class _ModelJob:
    """One reference model's training call: everything but the data, so a worker process can run it."""

    recipe: ReferenceRecipe
    out: Path
    rows: list[int]
    overwrite: bool
    device: str

    def run(self, data: ImageSet, *, show_progress: bool = False) -> ModelRecord:
        """Train (or resume, or keep a finished) model; its record, read back from the file written."""
        recipe = self.recipe
        train_audited(data, recipe.split, arch=recipe.arch, transform=recipe.transform,
                      arch_options=recipe.arch_options, description=recipe.description, config=recipe.config,
                      out=self.out, rows=self.rows, resume=not self.overwrite, overwrite=self.overwrite,
                      device=self.device, show_progress=show_progress)
        model = load_audited(self.out)
        rows = model.meta["rows"]  # train_audited records the rows it was given
        assert isinstance(rows, list)
        return ModelRecord(model.fingerprint, rows_sha256(rows))


_WORKER_DATA: ImageSet | None = None


def _worker_init(data: ImageSet, parent: int) -> None:
    global _WORKER_DATA
    _exit_with_parent(parent)
    _WORKER_DATA = data


def _worker_run(job: _ModelJob) -> ModelRecord:
    assert _WORKER_DATA is not None
    return job.run(_WORKER_DATA)


def _exit_with_parent(parent: int, poll: float = PARENT_POLL_SECONDS) -> None:
    """End this worker process as soon as `parent`, the process that started it, ends.

    A parent killed with SIGKILL runs no clean-up: its workers would train on for minutes, writing checkpoints
    no one waits for and holding the cores a rerun needs. On Linux the kernel kills the worker at once
    (prctl PR_SET_PDEATHSIG); everywhere, a daemon thread polls the parent's pid, as the worker is re-parented
    when its parent dies (also the fallback where prctl is missing, and for a parent that died before it ran).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no libc prctl: the thread below does it
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="gmint-exit-with-parent", daemon=True).start()


def _train_in_workers(jobs: Sequence[_ModelJob], data: ImageSet, workers: int,
                      finished: Callable[[int, ModelRecord], None]) -> None:
    """Train the models in `workers` processes at once, each on its config's threads.

    Every model is seeded and trained alone in its process, so its weights are those of a sequential run; each
    checkpoints every epoch as usual, so a killed pool resumes like a killed loop. The data is sent to each worker
    once. The first failure stops the pool (models not started stay untrained) and is raised here; `finished`
    gets each model's index and record as it finishes. Workers end with this process (see `_exit_with_parent`).
    """
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools into the workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                             initargs=(data, os.getpid())) as pool:
        futures = {pool.submit(_worker_run, job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                finished(futures[future], future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


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


def split_of(meta: dict[str, object]) -> MembershipSplit:
    """The membership split a checkpoint's meta records (the audited model's, which its references share)."""
    return MembershipSplit.from_json(json.dumps(meta["split"]))


def set_split(manifest: ReferenceSet, audited: AuditedModel) -> MembershipSplit:
    """The split of a reference set: the one given for a model from outside (recorded in the manifest), else
    the one the audited checkpoint records.

    Raises:
        InputError: neither records one, or it is not the split the set was drawn on.
    """
    if manifest.split is not None:
        split = MembershipSplit.from_json(json.dumps(manifest.split))
    elif "split" in audited.meta:
        split = split_of(audited.meta)
    else:
        raise InputError(f"neither the reference set nor {manifest.audited} records a membership split")
    if split.sha256 != manifest.split_sha256:
        raise InputError(f"the split of {manifest.audited} is not the one the reference set was drawn on")
    return split


def train_seconds(paths: Sequence[Path]) -> list[float]:
    """Each reference model's recorded training time (seconds of its epochs)."""
    return [float(load_audited(p).meta.get("train_seconds", 0.0)) for p in paths]  # type: ignore[arg-type]
