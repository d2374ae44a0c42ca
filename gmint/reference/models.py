"""Training a reference set: each model with the audited model's recipe on its half, resumable, in parallel.

The design (which rows each model trains on, the recipe) is gmint.reference.design's, the manifest that records
every model as it finishes gmint.reference.manifest's. Each model checkpoints every epoch, so a killed run
resumes; models trained in worker processes are seeded and trained alone, so their weights are those of a
sequential run, and the workers end with the process that started them. A set may also be trained in shards,
processes that share the folder (a job array, a torchrun launch; see gmint.reference.manifest's `Shard`): each
trains its own models, seeded as in one run, so the merged set is the one a single process trains.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.errors import InputError
from gmint.models.io import load_audited, read_checkpoint
from gmint.models.record import CheckpointRecord
from gmint.models.train import TrainConfig, train_audited
from gmint.progress import progress_bar
from gmint.reference.design import ReferenceDraw, ReferenceRecipe, design_references, reference_recipe
from gmint.reference.manifest import (
    AT_TRAINING,
    FROM_CHECKPOINT,
    MANIFEST,
    ModelRecord,
    ReferenceSet,
    check_model,
    rows_sha256,
    warn_recorded,
)
from gmint.reference.shards import Shard, gather_shards, merge_if_complete, save_shard, shard_manifests

# How often a training worker looks whether the process that started it is still alive (seconds): a worker
# outlives a killed parent by at most this, where the kernel does not end it at once (see `_exit_with_parent`).
PARENT_POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # prctl option from <linux/prctl.h>: a signal for this process when its parent dies


def train_references(data: ImageSet, audited_path: Path, out: Path, draw: ReferenceDraw = ReferenceDraw(), *,
                     config: TrainConfig | None = None, split: MembershipSplit | None = None, resume: bool = False,
                     overwrite: bool = False, device: str = "cpu", workers: int = 1, shard: Shard | None = None,
                     show_progress: bool = False) -> ReferenceSet:
    """Train K reference models with the audited checkpoint's recipe into the folder `out`.

    The recipe (architecture and its options, preprocessing, TrainConfig, split) is read from the audited
    checkpoint, or for a model from outside its description with the `config` and `split` given (see
    `reference_recipe`); only the training rows (a half of the pool) and, with `draw.init="fresh"`, the seed
    differ.
    The manifest is written before the first model and again as each model finishes, with its record
    (`ModelRecord`); each model checkpoints every epoch, and `resume=True` continues a killed run, reusing
    finished models once each is found to be the one recorded; it also grows a set to a larger K (the first
    models are the same).

    With a `shard`, only that shard's models are trained, recorded in the shard's own manifest; the shard
    always resumes (its siblings share the folder), and the one that finds every model of the set recorded
    merges the shards into references.json (see gmint.reference.manifest). Every shard must be given the same
    options; the merged set equals the one a single process trains.

    Args:
        data: the dataset the audited model was trained on (a model from outside's: labelled in its classes).
        audited_path: the audited gmint checkpoint.
        out: the reference folder.
        draw: how the set is drawn: its mode, K, seed and init (see ReferenceDraw).
        config: the TrainConfig of a model from outside (refused for a model that records its own).
        split: the membership split of a model from outside (for one gmint trained: its own, or None).
        resume: continue (or grow) the set in `out`.
        overwrite: replace a set of another design in `out` (its models are retrained).
        device: where the models train.
        workers: models trained at once, each in its own process (on a machine with cores to spare: each
            model uses its recipe's threads); the weights are the same for any number. A worker ends when the
            process that started it does, however it ends.
        shard: the shard of the set this process trains (None: every model).
        show_progress: one bar over the models, and (with one worker) each model's own.

    Returns:
        The set's manifest; for a shard, its own (its models recorded) unless it merged the set.

    Raises:
        InputError: an existing set without `resume`/`overwrite` or of another design (another recipe
            among them), a finished model that is not the one recorded, or a set that cannot be drawn (see
            design_references); for a shard, `overwrite`, more shards than models, or sibling shards that
            draw another set or are split another number of ways.
    """
    out = Path(out)
    if resume and overwrite:
        raise InputError(f"resume continues {out}, overwrite replaces it: pass one of them")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if shard is not None and overwrite:
        raise InputError(f"a shard cannot replace the set in {out}, which its sibling shards share: remove it "
                         "first, or choose another folder")
    if shard is not None and shard.count > draw.k:
        raise InputError(f"{shard.count} shards for {draw.k} reference models: each shard trains at least one "
                         "model")
    audited = load_audited(audited_path)
    manifest = design_references(audited, audited_path, data, draw, config=config, split=split)
    recipe = reference_recipe(audited, audited_path, config=config, split=split)
    existing = (out / MANIFEST).exists()
    resume = resume or shard is not None
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
    if shard is not None:
        manifest = _shard_start(out, manifest, shard)
    indices = shard.models(manifest.k) if shard is not None else list(range(manifest.k))
    if (existing and resume) or shard is not None:
        for i in indices:
            path = out / manifest.model_file(i)
            if path.exists() and manifest.model_file(i) in manifest.models:
                check_model(manifest, i, load_audited(path), path)
            elif (shard is None and path.exists()
                  and CheckpointRecord.read(json.loads(read_checkpoint(path)["meta"])).training is not None):
                # a finished model of a set trained before models were recorded (a shard records its models
                # from the start: one it finished without a record was killed before it, and is recorded below)
                unrecorded.add(path.name)

    def save(manifest: ReferenceSet) -> None:
        """Write the set's manifest, or the shard's own."""
        if shard is None:
            manifest.save(out)
        else:
            save_shard(out, manifest, shard)

    save(manifest)
    config = recipe.config
    jobs = [_ModelJob(recipe=replace(recipe, config=replace(config, seed=manifest.model_seed(i, config.seed))),
                      out=out / manifest.model_file(i), rows=manifest.rows_of(i).tolist(), overwrite=overwrite,
                      device=device) for i in indices]
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
        save(done)

    with progress_bar(f"reference models ({draw.mode})", len(jobs), enabled=show_progress) as bar:
        if workers == 1:
            for i, job in zip(indices, jobs, strict=True):
                record(i, job.run(data, show_progress=show_progress))
                bar.advance(1, job.out.name)
        else:
            def finished(position: int, result: ModelRecord) -> None:
                record(indices[position], result)
                bar.advance(1, jobs[position].out.name)

            _train_in_workers(jobs, data, workers, finished)
    warn_recorded(out, sorted(name for name, r in done.models.items() if name in unrecorded and
                              r.recorded == FROM_CHECKPOINT))
    if shard is not None:
        return merge_if_complete(out) or done
    return done


def _shard_start(out: Path, manifest: ReferenceSet, shard: Shard) -> ReferenceSet:
    """The manifest a shard starts from: the set drawn, with the records its own models already have (in its
    manifest, or in the references.json of an earlier merge), once the folder's other shards are found to
    train the same set.

    Raises:
        InputError: shards split another number of ways, or sibling shards that draw another set.
    """
    others = sorted({s.count for s in shard_manifests(out)} - {shard.count})
    if others:
        raise InputError(f"{out} holds shards of a set split {' and '.join(map(str, others))} ways, not merged; "
                         f"finish that set with as many shards, or choose another folder (this is shard {shard})")
    records = manifest.models
    if any(s.count == shard.count for s in shard_manifests(out)):
        state = gather_shards(out)
        if replace(state.manifest, models={}) != replace(manifest, models={}):
            drawn, asked = asdict(state.manifest), asdict(manifest)
            keys = [key for key, value in asked.items() if key != "models" and drawn[key] != value]
            raise InputError(f"the shards in {out} draw another reference set than shard {shard} "
                             f"({', '.join(keys)} differ); every shard of a set must be given the same options")
        records = state.manifest.models
    own = {manifest.model_file(i) for i in shard.models(manifest.k)}
    return replace(manifest, models={name: r for name, r in records.items() if name in own})


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
        arch = recipe.description or recipe.arch
        assert arch is not None  # reference_recipe gives a zoo architecture or a description
        train_audited(data, recipe.split, arch=arch, transform=recipe.transform, arch_options=recipe.arch_options,
                      config=recipe.config, out=self.out, trained_on=self.rows, resume=not self.overwrite,
                      overwrite=self.overwrite, device=self.device, show_progress=show_progress)
        model = load_audited(self.out)
        rows = model.record.rows  # train_audited records the rows it was given
        assert rows is not None
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
