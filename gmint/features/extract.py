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
from collections.abc import Callable, Mapping
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
from gmint.features.engine.memory import max_batch_for_memory
from gmint.features.engine.selfcheck import EngineCheckWarning, EngineDisagreement, ProvenEngine
from gmint.features.reduce import NamedReduction, parse_reduction
from gmint.features.settings import ExtractSettings
from gmint.features.shards import shard_bounds, shard_path
from gmint.features.sources import SOURCES, Source
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


@dataclass(frozen=True)
class Plan:
    """An extraction checked and resolved before any store is touched: what it reads, how, and what its store
    records (everything but the engine, which the first batch chooses)."""

    settings: ExtractSettings
    data: ImageSet
    rows: Rows                          # this shard's rows
    out: Path                           # this shard's store
    model: nn.Module                    # the audited module, in eval mode on the settings' device
    transform: Transform
    source: Source
    parameters: list[str]               # what the layer setup resolved to (modules for a source that reads them)
    reduce: NamedReduction
    fit: int | None                     # the largest batch the memory budget allows (None: no budget)
    provenance: Mapping[str, object]
    columns: Mapping[str, np.ndarray]   # the store's row columns

    @property
    def probe_sizes(self) -> tuple[int, int | None]:
        """(batch, chunk) the engine is chosen on, sized so that any candidate engine fits the memory budget:
        hooks' memory scales with the batch, vmap's with the chunk."""
        batch_size, chunk_size = self.settings.batch_size, self.settings.chunk_size
        if not self.fit:
            return batch_size, chunk_size
        return min(batch_size, self.fit), min(chunk_size or batch_size, self.fit)

    def load(self, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `start:start + size` as the model's input and labels, on its device."""
        idx, device = self.rows.index[start:start + size], self.settings.device
        return self.transform(self.data.images[idx]).to(device), torch.from_numpy(self.data.labels[idx]).to(device)


@gives_module_back
def extract(audited: AuditedModel, data: ImageSet, rows: Rows, settings: ExtractSettings = ExtractSettings(), *,
            out: Path, split: MembershipSplit | None = None, trained_outside: bool = False,
            model_check: ModelCheck | None = None, resume: bool = False, overwrite: bool = False,
            shard: tuple[int, int] = (0, 1), show_progress: bool = False) -> Path:
    """Compute reduced Weight Modifiers of `rows` and stream them into the HDF5 store `out`.

    The engine `settings` names is where the search starts: the first batch decides the engine that runs (the
    fastest candidate that agrees with the naive loop on a few of its rows, see `gmint.features.engine.selfcheck`),
    and the choice and the check are recorded in the provenance. Where the check through the run finds the engine
    disagreeing, every row is extracted again on the next engine.

    Args:
        audited: the audited model (eval mode) and its metadata.
        data: the dataset.
        rows: the rows to extract, with membership and role.
        settings: how the features are extracted (see `ExtractSettings`).
        out: the store to write.
        split: the membership split the rows come from; its hash and seed are recorded. It must be the
            split recorded with the audited model, if any.
        trained_outside: the audited model was trained outside gmint: accept a split other than the one
            its metadata records (see `gmint.data.split.check_model_split`).
        model_check: how the model classifies the split's members and externals (`check_model`), recorded with
            its warnings in the provenance; measured here, before any Weight Modifier, where a split is given
            without one.
        resume: continue a partial store with the same provenance instead of refusing to touch it.
        overwrite: replace an existing store at `out`.
        shard: (rank, world size): extract only this rank's block of whole batches into its shard file
            (see gmint.features.shards, which joins the shards).
        show_progress: draw a progress bar on stderr.

    Returns:
        The path of the complete store (the shard's path when sharded).

    The audited module is put in eval mode on the settings' device for the extraction and given back as it was
    (training flags, requires_grad, device), also when the extraction fails.
    """
    plan = plan_extraction(audited, data, rows, settings, out=out, split=split, trained_outside=trained_outside,
                           model_check=model_check, shard=shard)
    requested = settings.engine
    restarts: list[str] = []  # each disagreement that restarted the run, recorded in the store
    while True:
        try:
            _stream(plan, ProvenEngine(requested, seed=settings.seed), resume=resume, overwrite=overwrite,
                    restarts=restarts, show_progress=show_progress)
            return plan.out
        except EngineDisagreement as exc:
            # Every row the engine wrote is suspect, those of an earlier run of it included: all are redone.
            warnings.warn(str(exc), EngineCheckWarning, stacklevel=2)
            restarts.append(str(exc))
            requested, resume, overwrite = exc.replacement, False, True


def plan_extraction(audited: AuditedModel, data: ImageSet, rows: Rows, settings: ExtractSettings, *, out: Path,
                    split: MembershipSplit | None = None, trained_outside: bool = False,
                    model_check: ModelCheck | None = None, shard: tuple[int, int] = (0, 1)) -> Plan:
    """Check the inputs, resolve the layer setup and build the provenance (see `extract` for the arguments).

    Raises:
        InputError: a split that is not the model's, rows outside `data`, labels outside the model's classes.
        UnknownNameError: a layer setup that matches nothing on the model.
    """
    if split is not None:
        check_model_split(audited.record.split, split, trained_outside=trained_outside)
    transform = settings.transform or audited.transform
    if split is not None and model_check is None:
        model_check = check_model(audited, data, split, transform, device=settings.device, seed=settings.seed)
        for warning in model_check.warnings if model_check is not None and shard[0] == 0 else ():
            warnings.warn(warning, stacklevel=3)
    rank, world_size = shard
    if world_size > 1:
        lo, hi = shard_bounds(len(rows.index), settings.batch_size, rank, world_size)
        rows = Rows(rows.index[lo:hi], rows.membership[lo:hi], rows.role[lo:hi])
        out = shard_path(Path(out), rank, world_size)
    if int(rows.index.max()) >= len(data) or int(rows.index.min()) < 0:
        raise InputError(f"row index outside the {len(data)} rows of {data.name}")
    audited.check_classes(data.classes)
    labels = data.labels[rows.index]
    num_classes = audited.record.num_classes
    if num_classes is not None and int(labels.max()) >= num_classes:
        raise InputError(f"label {int(labels.max())} is outside the audited model's {num_classes} classes")
    model = audited.module.to(settings.device).eval()
    example = transform(data.images[rows.index[:1]]).to(settings.device)
    source = SOURCES.get(settings.source)
    parameters = source.select(model, settings.layer_setup, example)
    reduce = parse_reduction(settings.reduction, settings.seed)
    fit = None if settings.max_memory is None else max_batch_for_memory(
        model, parameters, reduce, example, settings.max_memory, chunk_size=settings.chunk_size)
    provenance = {
        "gmint_version": __version__, "torch_version": torch.__version__,
        "h5py_version": h5py.__version__, "python": platform.python_version(),
        "model_fingerprint": audited.fingerprint, "architecture": audited.record.arch or "unknown",
        "layers": source.names(parameters), "parameters": parameters, "layer_setup": settings.setup_text,
        "source": settings.source, "layer_shapes": source.shapes(model, parameters, reduce, example),
        "reduction": settings.reduction, "engine": settings.engine, "loss_function": settings.loss,
        "dataset": data.name,
        # Which folder the rows were read from and how (see ImageSet.root): sample ids match rows by these only.
        "dataset_root": str(data.root) if data.root is not None else "", "dataset_files_sha256": data.files_sha256(),
        "max_memory": settings.max_memory or 0,
        "layer_presets": {p: source.names(n) for p, n in source.presets(model, example).items()},
        "split_sha256": split.sha256 if split else "", "split_seed": split.seed if split else -1,
        "transform": transform.to_dict(), "seed": settings.seed,
        **({"model_check": model_check.to_dict()} if model_check is not None else {}),
        "n_rows": len(rows.index),
        "rows_sha256": rows_sha256(rows),
        "device": settings.device,
        **({"shard": [rank, world_size]} if world_size > 1 else {}),
    }
    columns = {"membership": rows.membership, "role": rows.role, "label": labels,
               "sample_id": data.sample_ids[rows.index],
               "group": data.groups[rows.index] if data.groups is not None else np.full(len(labels), -1)}
    return Plan(settings, data, rows, Path(out), model, transform, source, parameters, reduce, fit, provenance,
                columns)


def _stream(plan: Plan, proven: ProvenEngine, *, resume: bool, overwrite: bool, restarts: list[str],
            show_progress: bool) -> None:
    """One pass over the plan's rows on the engine `proven` chooses: each batch is computed while a helper thread
    loads the next and another writes the previous one, and the store is marked complete at the end."""
    settings, out = plan.settings, plan.out
    with ExitStack() as stack:
        # A resumed store is opened (and its writer lock taken) once, before any compute: a finished one is
        # left as it is (`resume` refuses one that only carries the complete mark: a file cut short, a damaged
        # one), one from another extraction is refused at once.
        store = stack.enter_context(FeatureStore.resume(out, plan.provenance)) if resume and out.exists() else None
        if store is not None and store.complete:
            return
        recorded = store.provenance if store is not None else {}
        probe_batch, probe_chunk = plan.probe_sizes
        first = plan.source(plan.model, plan.parameters, plan.reduce, *plan.load(0, probe_batch), engine=proven,
                            loss=settings.loss, chunk_size=probe_chunk)
        choice = proven.choice
        engine_used = choice.engine if choice else "none"  # the activation source runs no engine
        batch_size, chunk_size = settings.batch_size, settings.chunk_size
        if plan.fit and engine_used in ("vmap", "naive"):
            chunk_size = probe_chunk
        elif plan.fit:
            batch_size = probe_batch
        chosen = choice.provenance() if choice else {"engine_used": engine_used}
        provenance = {**plan.provenance, "batch_size": batch_size, "chunk_size": chunk_size or 0, **chosen}
        resumed_with: dict[str, object] = {}
        widths = {n: int(f.shape[1]) for n, f in first.features.items()}
        if store is not None and store.dims != widths:  # same provenance, other widths: only damage does that
            raise InputError(f"{out} is damaged (its layers hold {store.dims} features per row, this extraction "
                             f"computes {widths}); it cannot be resumed", Remedy.REBUILD_STORE)
        if store is None:
            store = stack.enter_context(FeatureStore.create(out, overwrite=overwrite, provenance=provenance,
                                                            chunk_rows=batch_size, dims=widths,
                                                            columns=dict(plan.columns)))
        elif recorded.get("engine_used") != engine_used:  # both proven on this model; the record says so
            resumed_with = {"engine_used": f"{recorded.get('engine_used')}+{engine_used}",
                            "engine_check_resumed": chosen.get("engine_check", {})}
        done = store.done_mask()
        t0 = time.perf_counter()
        todo = [s for s in range(0, len(done), batch_size) if not done[s:s + batch_size].all()]
        # The batch the engine was chosen on is written as it is, when it is the store's first batch.
        reused = first if probe_batch == batch_size or len(plan.rows.index) <= probe_batch else None

        def prepare(i: int) -> Future[tuple[torch.Tensor, torch.Tensor]] | None:
            """Load batch `todo[i]` on a helper thread (not the reused one, nor past the end)."""
            if i >= len(todo) or (todo[i] == 0 and reused is not None):
                return None
            return pool.submit(plan.load, todo[i], batch_size)

        # Two helper threads overlap I/O with the engine: one prepares the next batch, one writes the
        # previous one (torch kernels and HDF5's compression both run outside the GIL for the most part).
        # One write in flight at a time keeps the store's rows in order.
        with progress_bar(f"extract {settings.engine}/{settings.reduction}", len(done), enabled=show_progress,
                          completed=int(done.sum())) as bar, ThreadPoolExecutor(2) as pool:
            pending: Future[None] | None = None
            batch = prepare(0)
            for i, start in enumerate(todo):
                current, batch = batch, prepare(i + 1)
                if current is None:
                    assert reused is not None
                    result = reused
                else:
                    result = plan.source(plan.model, plan.parameters, plan.reduce, *current.result(),
                                         engine=proven.at(start, last=i == len(todo) - 1), loss=settings.loss,
                                         chunk_size=chunk_size)
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


def rows_sha256(rows: Rows) -> str:
    """Hash of the row positions: a store's `rows_sha256`, so a resume or a join checks it has the same rows."""
    return hashlib.sha256(rows.index.astype(np.int64).tobytes()).hexdigest()


def split_rows(split: MembershipSplit) -> Rows:
    """All rows of a membership split (auditor's pool, then the holdout) with their codes."""
    index = np.asarray(split.pool + split.holdout, dtype=np.int64)
    return Rows(index, split.membership_of(index), split.role_of(index))
