"""Training a reference set: each model with the audited model's recipe on its half, resumable, in parallel.

The design (which rows each model trains on, the recipe) is gmint.reference.design's, the manifest that records
every model as it finishes gmint.reference.manifest's. Each model checkpoints every epoch, so a killed run
resumes; models trained in worker processes are seeded and trained alone, so their weights are those of a
sequential run, and the workers end with the process that started them.
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
from dataclasses import dataclass, replace
from pathlib import Path

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.errors import InputError
from gmint.models.io import load_audited, read_checkpoint
from gmint.models.record import CheckpointRecord
from gmint.models.train import TrainConfig, train_audited
from gmint.progress import progress_bar
from gmint.reference.design import ReferenceRecipe, design_references, reference_recipe
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

# How often a training worker looks whether the process that started it is still alive (seconds): a worker
# outlives a killed parent by at most this, where the kernel does not end it at once (see `_exit_with_parent`).
PARENT_POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # prctl option from <linux/prctl.h>: a signal for this process when its parent dies


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
        mode: `offline` or `online` (see gmint.reference.design).
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
            elif path.exists() and CheckpointRecord.read(
                    json.loads(read_checkpoint(path)["meta"])).training is not None:
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
