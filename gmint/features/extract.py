"""Extraction: dataset rows → audited model → Weight Modifiers → reduction → feature store.

Rows stream through in batches; each batch is written and flushed before the next is computed, so
memory holds one batch and a killed run resumes where it stopped (`resume=True`).
"""

from __future__ import annotations

import functools
import hashlib
import platform
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import h5py
import numpy as np
import torch
from torch import nn

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit, check_model_split
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy
from gmint.features.engine import ENGINES
from gmint.features.engine.base import check_chunk_size
from gmint.features.engine.memory import max_batch_for_memory
from gmint.features.engine.selfcheck import EngineCheckWarning, EngineDisagreement, ProvenEngine
from gmint.features.reduce import parse_reduction
from gmint.features.shards import shard_bounds, shard_path
from gmint.features.sources import SOURCES
from gmint.features.store import FeatureStore
from gmint.models.check import ModelCheck, check_model
from gmint.models.io import AuditedModel
from gmint.progress import progress_bar
from gmint.version import __version__


@dataclass(frozen=True)
class Rows:
    """Which dataset rows to extract and what is known about each (see store.py for the codes)."""

    index: np.ndarray        # (N,) row positions in the ImageSet
    membership: np.ndarray   # (N,) 1 member, 0 external, -1 unknown
    role: np.ndarray         # (N,) 0 pool, 1 holdout, -1 n/a

    def __post_init__(self) -> None:
        if len(self.index) == 0:
            raise InputError("nothing to extract: the selected rows are empty")
        if not (len(self.index) == len(self.membership) == len(self.role)):
            raise InputError("rows, membership and role must have the same length")


P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class ModuleState:
    """What an extraction changes on the caller's module, recorded to give the module back as it was lent:
    each submodule's training flag, each parameter's requires_grad, and where each parameter and buffer lies.

    The extraction needs eval mode on its device; the caller's module may be half in training (a frozen
    BatchNorm inside a model being fine-tuned) and is theirs to keep using afterwards, so nothing is left
    changed behind their back.
    """

    training: list[tuple[nn.Module, bool]]
    requires_grad: list[tuple[nn.Parameter, bool]]
    devices: list[tuple[nn.Module, str, bool, torch.device]]  # (module, name, is a parameter, device)

    @classmethod
    def of(cls, module: nn.Module) -> ModuleState:
        """The state of `module` and every submodule now."""
        modules = list(module.modules())
        return cls([(m, m.training) for m in modules],
                   [(p, p.requires_grad) for p in module.parameters()],
                   [(m, name, is_parameter, t.device) for m in modules
                    for is_parameter, named in ((True, m.named_parameters(recurse=False)),
                                                (False, m.named_buffers(recurse=False)))
                    for name, t in named])

    def restore(self) -> None:
        """Put every flag back, and every tensor that moved back on its device (one that did not move is not
        touched, so a CPU module's tensors stay the very same objects)."""
        for m, training in self.training:  # parents first: each module's own flag is set last
            m.train(training)
        for p, requires_grad in self.requires_grad:
            p.requires_grad_(requires_grad)
        for m, name, is_parameter, device in self.devices:
            now = dict(m.named_parameters(recurse=False) if is_parameter else m.named_buffers(recurse=False))[name]
            if now.device == device:
                continue
            if is_parameter:
                now.data = now.data.to(device)
                if now.grad is not None:
                    now.grad = now.grad.to(device)
            else:
                setattr(m, name, now.to(device))


def gives_module_back(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn(audited, ...)` and give `audited.module` back as it was (see `ModuleState`), whether `fn`
    returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        audited = args[0] if args else kwargs.get("audited")
        if not isinstance(audited, AuditedModel):  # nothing lent: `fn` refuses it itself
            return fn(*args, **kwargs)
        lent = ModuleState.of(audited.module)
        try:
            return fn(*args, **kwargs)
        finally:
            lent.restore()

    return wrapper


@gives_module_back
def extract(audited: AuditedModel, data: ImageSet, rows: Rows, *, out: Path, layers: str = "combined",
            reduction: str = "mean", engine: str = "auto", source: str = "gradient",
            transform: Transform | None = None,
            loss: str = "cross_entropy", batch_size: int = 128, chunk_size: int | None = 64,
            seed: int = 0, split: MembershipSplit | None = None, trained_outside: bool = False,
            model_check: ModelCheck | None = None, resume: bool = False, overwrite: bool = False,
            device: str = "cpu", shard: tuple[int, int] = (0, 1), max_memory: int | None = None,
            show_progress: bool = False) -> Path:
    """Compute reduced Weight Modifiers of `rows` and stream them into the HDF5 store `out`.

    Args:
        audited: the audited model (eval mode) and its metadata.
        data: the dataset.
        rows: the rows to extract, with membership and role.
        out: the store to write.
        layers: a layer setup (preset, names or globs) — see `gmint.features.layers.resolve_layers`.
        reduction: a name in `gmint.features.reduce.REDUCTIONS`, optionally `name:arg`.
        engine: a name in `gmint.features.engine.ENGINES`: where the search starts. The first batch decides the
            engine that runs (the fastest candidate that agrees with the naive loop on a few of its rows,
            see `gmint.features.engine.selfcheck`); the choice and the check are recorded in the provenance.
        source: what the features are — `gradient` (gMINT), `activation` or `output` (see gmint.features.sources).
        transform: preprocessing; defaults to the one recorded with the audited model.
        loss: name in `gmint.features.engine.LOSSES`.
        batch_size: rows per batch (one write each).
        chunk_size: samples per vmap call / materialised block.
        seed: seeds seeded reductions; recorded in the store.
        split: the membership split the rows come from; its hash and seed are recorded. It must be the
            split recorded with the audited model, if any.
        trained_outside: the audited model was trained outside gmint: accept a split other than the one
            its metadata records (see `gmint.data.split.check_model_split`).
        model_check: how the model classifies the split's members and externals (`check_model`), recorded with
            its warnings in the provenance; measured here, before any Weight Modifier, where a split is given
            without one.
        resume: continue a partial store with the same provenance instead of refusing to touch it.
        overwrite: replace an existing store at `out`.
        device: where the model runs (`cpu`, `cuda`, `cuda:N`).
        max_memory: working-memory budget in bytes; lowers the batch (for vmap/naive: the chunk) to fit.
        shard: (rank, world size): extract only this rank's block of whole batches into its shard file
            (see gmint.features.shards, which joins the shards).
        show_progress: draw a progress bar on stderr.

    Returns:
        The path of the complete store (the shard's path when sharded).

    The audited module is put in eval mode on `device` for the extraction and given back as it was
    (training flags, requires_grad, device), also when the extraction fails.
    """
    if split is not None:
        check_model_split(audited.meta, split, trained_outside=trained_outside)
    transform = transform or audited.transform
    if split is not None and model_check is None:
        model_check = check_model(audited, data, split, transform, device=device, seed=seed)
        for warning in model_check.warnings if model_check is not None and shard[0] == 0 else ():
            warnings.warn(warning, stacklevel=2)
    rank, world_size = shard
    if world_size > 1:
        lo, hi = shard_bounds(len(rows.index), batch_size, rank, world_size)
        rows = Rows(rows.index[lo:hi], rows.membership[lo:hi], rows.role[lo:hi])
        out = shard_path(Path(out), rank, world_size)
    if int(rows.index.max()) >= len(data) or int(rows.index.min()) < 0:
        raise InputError(f"row index outside the {len(data)} rows of {data.name}")
    audited.check_classes(data.classes)
    labels = data.labels[rows.index]
    num_classes = audited.meta.get("num_classes")
    if num_classes is not None and int(labels.max()) >= int(str(num_classes)):
        raise InputError(f"label {int(labels.max())} is outside the audited model's {num_classes} classes")
    model = audited.module.to(device).eval()
    example = transform(data.images[rows.index[:1]]).to(device)
    run = SOURCES.get(source)
    names = run.select(model, layers, example)  # parameters, or modules for a source that reads them
    reduce = parse_reduction(reduction, seed)
    ENGINES.get(engine)  # unknown engine names fail here, before a store is created
    check_chunk_size(chunk_size)
    if batch_size < 1:
        raise InputError(f"batch size must be a positive number of rows, got {batch_size}")
    fit = max_batch_for_memory(model, names, reduce, example, max_memory, chunk_size=chunk_size) \
        if max_memory is not None else None
    # The engine is chosen on the first batch (see gmint.features.engine.selfcheck), sized so that any candidate
    # fits the memory budget: hooks' memory scales with the batch, vmap's with the chunk.
    probe_batch = min(batch_size, fit) if fit else batch_size
    probe_chunk = min(chunk_size or batch_size, fit) if fit else chunk_size
    feature_names = run.names

    def load(start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rows.index[start:start + size]
        return transform(data.images[idx]).to(device), torch.from_numpy(data.labels[idx]).to(device)

    provenance = {
        "gmint_version": __version__, "torch_version": torch.__version__,
        "h5py_version": h5py.__version__, "python": platform.python_version(),
        "model_fingerprint": audited.fingerprint, "architecture": str(audited.meta.get("arch", "unknown")),
        "layers": feature_names(names), "parameters": names, "layer_setup": layers, "source": source,
        "layer_shapes": run.shapes(model, names, reduce, example),
        "reduction": reduction, "engine": engine, "loss_function": loss, "dataset": data.name,
        # Which folder the rows were read from and how (see ImageSet.root): sample ids match rows by these only.
        "dataset_root": str(data.root) if data.root is not None else "", "dataset_files_sha256": data.files_sha256(),
        "max_memory": max_memory or 0,
        "layer_presets": {p: feature_names(n) for p, n in run.presets(model, example).items()},
        "split_sha256": split.sha256 if split else "", "split_seed": split.seed if split else -1,
        "transform": transform.to_dict(), "seed": seed,
        **({"model_check": model_check.to_dict()} if model_check is not None else {}),
        "n_rows": len(rows.index),
        "rows_sha256": rows_sha256(rows),
        "device": device,
        **({"shard": [rank, world_size]} if world_size > 1 else {}),
    }
    out = Path(out)
    restarts: list[str] = []

    def attempt(proven: ProvenEngine, resume: bool, overwrite: bool) -> None:
        """One pass over the rows on the engine `proven` chooses (see the loop below)."""
        nonlocal batch_size, chunk_size
        with ExitStack() as stack:
            # A resumed store is opened (and its writer lock taken) once, before any compute: a finished one is
            # left as it is (`resume` refuses one that only carries the complete mark: a file cut short, a damaged
            # one), one from another extraction is refused at once.
            store = stack.enter_context(FeatureStore.resume(out, provenance)) if resume and out.exists() else None
            if store is not None and store.complete:
                return
            recorded = store.provenance if store is not None else {}
            first = run(model, names, reduce, *load(0, probe_batch), engine=proven, loss=loss,
                        chunk_size=probe_chunk)
            choice = proven.choice
            engine_used = choice.engine if choice else "none"  # the activation source runs no engine
            if fit and engine_used in ("vmap", "naive"):
                chunk_size = probe_chunk
            elif fit:
                batch_size = probe_batch
            chosen = choice.provenance() if choice else {"engine_used": engine_used}
            provenance.update(batch_size=batch_size, chunk_size=chunk_size or 0, **chosen)
            resumed_with: dict[str, object] = {}
            widths = {n: int(f.shape[1]) for n, f in first.features.items()}
            if store is not None and store.dims != widths:  # same provenance, other widths: only damage does that
                raise InputError(f"{out} is damaged (its layers hold {store.dims} features per row, this extraction "
                                 f"computes {widths}); it cannot be resumed", Remedy.REBUILD_STORE)
            if store is None:
                store = stack.enter_context(FeatureStore.create(
                    out, overwrite=overwrite, provenance=provenance, chunk_rows=batch_size,
                    dims=widths,
                    columns={"membership": rows.membership, "role": rows.role, "label": labels,
                             "sample_id": data.sample_ids[rows.index],
                             "group": data.groups[rows.index] if data.groups is not None
                             else np.full(len(labels), -1)}))
            elif recorded.get("engine_used") != engine_used:  # both proven on this model; the record says so
                resumed_with = {"engine_used": f"{recorded.get('engine_used')}+{engine_used}",
                                "engine_check_resumed": chosen.get("engine_check", {})}
            done = store.done_mask()
            t0 = time.perf_counter()
            todo = [s for s in range(0, len(done), batch_size) if not done[s:s + batch_size].all()]
            # The batch the engine was chosen on is written as it is, when it is the store's first batch.
            reused = first if probe_batch == batch_size or len(rows.index) <= probe_batch else None

            def prepare(i: int) -> Future[tuple[torch.Tensor, torch.Tensor]] | None:
                """Load batch `todo[i]` on a helper thread (not the reused one, nor past the end)."""
                if i >= len(todo) or (todo[i] == 0 and reused is not None):
                    return None
                return pool.submit(load, todo[i], batch_size)

            # Two helper threads overlap I/O with the engine: one prepares the next batch, one writes the
            # previous one (torch kernels and HDF5's compression both run outside the GIL for the most part).
            # One write in flight at a time keeps the store's rows in order.
            with progress_bar(f"extract {engine}/{reduction}", len(done), enabled=show_progress,
                              completed=int(done.sum())) as bar, ThreadPoolExecutor(2) as pool:
                pending: Future[None] | None = None
                batch = prepare(0)
                for i, start in enumerate(todo):
                    current, batch = batch, prepare(i + 1)
                    if current is None:
                        assert reused is not None
                        result = reused
                    else:
                        x, y = current.result()
                        result = run(model, names, reduce, x, y, engine=proven.at(start, last=i == len(todo) - 1),
                                     loss=loss, chunk_size=chunk_size)
                    features = {n: f.float().cpu().numpy() for n, f in result.features.items()}
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(store.write, start, features, loss=result.loss.float().cpu().numpy(),
                                          pred=result.pred.cpu().numpy())
                    bar.advance(len(result.loss))
                if pending is not None:
                    pending.result()
            checked = {"engine_recheck": proven.record()} if proven.choice is not None else {}
            store.mark_complete(extract_seconds=round(time.perf_counter() - t0, 3), **resumed_with, **checked,
                                **({"engine_restarts": restarts} if restarts else {}))

    requested = engine
    while True:
        try:
            attempt(ProvenEngine(requested, seed=seed), resume, overwrite)
            return out
        except EngineDisagreement as exc:
            # Every row the engine wrote is suspect, those of an earlier run of it included: all are redone.
            warnings.warn(str(exc), EngineCheckWarning, stacklevel=2)
            restarts.append(str(exc))
            requested, resume, overwrite = exc.replacement, False, True


def rows_sha256(rows: Rows) -> str:
    """Hash of the row positions: a store's `rows_sha256`, so a resume or a join checks it has the same rows."""
    return hashlib.sha256(rows.index.astype(np.int64).tobytes()).hexdigest()


def split_rows(split: MembershipSplit) -> Rows:
    """All rows of a membership split (auditor's pool, then the holdout) with their codes."""
    index = np.asarray(split.pool + split.holdout, dtype=np.int64)
    return Rows(index, split.membership_of(index), split.role_of(index))
