"""Feature stores: one HDF5 file per extraction, written in appended batches, readable by any HDF5 tool.

Layout:
    /features/<parameter name>   (N, d) float32, chunked, gzip — one dataset per selected layer
    /membership (N,) int8        1 member, 0 external, -1 unknown (samples being scored)
    /role       (N,) int8        0 auditor's pool (may fit a MINT classifier), 1 held out, -1 n/a
                                 (both spell their codes out in a `codes` attribute)
    /label      (N,) int64       true class; /sample_id (N,) int64 row of the dataset
    /loss       (N,) float32     the audited model's loss; /pred (N,) int64 its predicted class
    /finite     (N,) bool        every feature and the loss are finite (NaN/Inf rows are kept, flagged,
                                 and left out of training and evaluation with a warning)
    /done       (N,) bool        row written and flushed (resume skips these)
    /seconds    (1,) float64     wall seconds spent writing, over every run that worked on the store
    attrs: provenance (one attribute per key, JSON for lists/dicts), complete (and, once complete,
           rows_written and timing)

Writing happens in HDF5 single-writer/multiple-reader (SWMR) mode, so `gmint info` can read a store
while extraction is still writing it, and the file stays consistent if the writer dies. SWMR forbids
creating objects or attributes while writing, so every dataset is created up front (the extraction
knows each layer's width from its first batch) and the final attributes are set after SWMR ends.
A crash loses at most the batch in flight: features are written and flushed before `done` is set,
and `complete` is set only after the last row. Every reader refuses an incomplete store, and one whose file
does not bear its complete mark out (cut short, rows or layers missing: `FeatureStore.damage`); a resume
refuses such a file too, rather than take it for finished.

One writer per store: a writer (create, resume, salvage, join) holds an exclusive lock on the sidecar
`<store>.lock`, which names its PID; the kernel drops the lock when the writer closes or dies. A second
writer is refused, and readers ask the lock who is writing. HDF5's own file locking is off on both
sides (the sidecar lock replaces it for writers; SWMR needs none for readers), so no reader can make
the writer fail when it reopens the file to finish it.

Files use the HDF5 1.10 format (the oldest that SWMR accepts, and no newer), so HDF5 1.10 tools
(h5dump, h5ls) and PyTables read them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from gmint.errors import IncompleteStoreError, InputError, Remedy, StoreBusyError, StoreMismatchError
from gmint.files import atomic_write

FORMAT = "gmint-feature-store/3"  # /2: per-row `finite` flags; /3: per-row `group` ids
# /2 stores lack only /group, which reads as -1 (no group): they are read as they are, not extracted again.
READABLE_FORMATS = ("gmint-feature-store/2", FORMAT)
ROW_COLUMNS = {"membership": np.int8, "role": np.int8, "label": np.int64, "sample_id": np.int64, "group": np.int64}
COMPUTED_COLUMNS = {"loss": np.float32, "pred": np.int64, "finite": bool}
# Provenance keys that must agree for a resumed extraction to continue the same store.
SPEC_KEYS = ("model_fingerprint", "layers", "source", "reduction", "engine", "loss_function", "dataset",
             "split_sha256", "transform", "seed", "n_rows", "rows_sha256")
CHUNK_BYTES = 1 << 20
# What the integer codes of the per-row columns mean, written beside them for readers without gmint.
CODES = {"membership": {1: "member", 0: "external", -1: "unknown"},
         "role": {0: "auditor's pool", 1: "holdout", -1: "n/a"},
         "group": {-1: "none (other values: the dataset's group, e.g. a GTSRB track)"}}
# Library-version bounds for every file written: SWMR needs the 1.10 superblock; anything newer locks out
# HDF5 1.10 tools and PyTables.
LIBVER = ("v110", "v110")
# How long a writer retries the lock before refusing: a reader asking who writes holds it for microseconds.
LOCK_WAIT_S = 0.5


class FeatureStore:
    """An open feature store. Use `create`, `resume` or `open` (read-only); close or use `with`."""

    def __init__(self, path: Path, handle: h5py.File, lock: WriterLock | None = None) -> None:
        self.path = Path(path)
        self._h5 = handle
        self._lock = lock
        # Writers keep time: seconds recorded by earlier runs, and when this one began.
        self._earlier = float(handle["seconds"][0]) if lock is not None and "seconds" in handle else 0.0
        self._began = time.perf_counter()

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, columns: Mapping[str, np.ndarray], dims: Mapping[str, int],
               provenance: Mapping[str, object], overwrite: bool = False, chunk_rows: int = 1024) -> FeatureStore:
        """A new, empty store for len(columns['sample_id']) rows with one (N, dims[name]) dataset per layer,
        open for writing in SWMR mode. Refuses to replace a file unless asked, and always refuses a store
        another process is writing. Feature chunks hold `chunk_rows` rows (the writer's batch size), so
        each batch fills whole chunks: a compressed chunk written in pieces would be decompressed and
        recompressed at every piece. `columns` holds every ROW_COLUMNS entry but `group`, which defaults
        to -1 (rows of no group).

        The layout is written to a temporary file that then takes `path`'s place, so a crash never
        leaves a half-created store behind.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with ExitStack() as held:
            lock = held.enter_context(WriterLock(path))
            if path.exists() and not overwrite:
                raise InputError(f"{path} exists", Remedy.RESUME_OR_OVERWRITE)
            n = len(columns["sample_id"])
            with atomic_write(path) as tmp:
                with _h5file(tmp, "w") as h5:
                    for name, dtype in ROW_COLUMNS.items():
                        given = columns[name] if name != "group" else columns.get(name, np.full(n, -1))
                        h5.create_dataset(name, data=np.asarray(given, dtype=dtype))
                    # Written out in full now: storage allocated later, under SWMR, would change the
                    # datasets' layout while readers look at them ("invalid dataset size").
                    for name, column_type in [*COMPUTED_COLUMNS.items(), ("done", bool)]:
                        h5.create_dataset(name, data=np.zeros(n, column_type))
                    h5.create_dataset("seconds", data=[0.0])
                    group = h5.create_group("features")
                    for name, d in dims.items():
                        rows_per_chunk = int(max(1, min(n, chunk_rows, CHUNK_BYTES // (4 * d))))
                        group.create_dataset(name, shape=(n, d), dtype=np.float32, chunks=(rows_per_chunk, d),
                                             compression="gzip", compression_opts=4, shuffle=True)
                    describe_codes(h5)
                    h5.attrs["format"] = FORMAT
                    for key, value in provenance.items():
                        h5.attrs[key] = encode_attribute(value)
                    h5.attrs["complete"] = False
                h5 = held.enter_context(_h5file(tmp, "r+"))
                h5.swmr_mode = True  # before the file appears under its name, so readers only ever see it in SWMR
            held.pop_all()
            return cls(path, h5, lock)

    @classmethod
    def resume(cls, path: Path, provenance: Mapping[str, object]) -> FeatureStore:
        """Reopen a store for writing after checking it belongs to the same extraction, is sound (see
        `check_resumable`) and no other process is writing it (a complete one has nothing left to write and
        is opened read-only).

        A writer that died in SWMR mode leaves the file flagged "open for write"; HDF5 then refuses
        to reopen it for writing (only its own h5clear tool resets the flag), although SWMR readers
        see every flushed row. Such a store is salvaged: its rows are copied into a fresh file that
        atomically replaces it.
        """
        path = Path(path)
        if not path.exists():
            raise InputError(f"feature store {path} not found")
        with ExitStack() as held:
            lock = held.enter_context(WriterLock(path))
            complete = _check_resumable(path, provenance)
            if complete:  # nothing to write: leave the file untouched
                h5 = _open_h5(path, held=True)
            else:
                try:
                    h5 = _h5file(path, "r+")
                except OSError:  # we hold the lock, so no live writer flagged it: a dead one did
                    _salvage(path)
                    h5 = _h5file(path, "r+")
                h5.swmr_mode = True
            held.pop_all()
            return cls(path, h5, lock)

    @classmethod
    def open(cls, path: Path) -> FeatureStore:
        """Read-only access (complete or not, also while a writer is still at work; readers call
        `require_complete`)."""
        return cls(Path(path), _open_h5(Path(path)))

    def close(self) -> None:
        """Close the file and release the writer lock, if this handle holds it."""
        self._h5.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------------
    def write(self, start: int, features: Mapping[str, np.ndarray], *, loss: np.ndarray,
              pred: np.ndarray) -> None:
        """Write rows [start, start + B) and mark them done, in that order, flushing in between.

        The time spent so far is recorded with the done flags, so a run that is killed still counts
        up to its last flushed batch when a later run finishes the store.
        """
        b = len(loss)
        group = self._h5["features"]
        unknown = set(features) - set(group)
        if unknown:
            raise StoreMismatchError(f"{self.path} has no datasets for {sorted(unknown)}")
        finite = np.isfinite(loss)
        for name, values in features.items():
            group[name][start:start + b] = values
            finite &= np.isfinite(values).all(axis=1)
        self._h5["loss"][start:start + b] = loss
        self._h5["pred"][start:start + b] = pred
        self._h5["finite"][start:start + b] = finite
        self._h5.flush()
        self._h5["done"][start:start + b] = True
        if "seconds" in self._h5:  # stores written before gmint kept time have no clock
            self._h5["seconds"][0] = self._earlier + time.perf_counter() - self._began
        self._h5.flush()

    def mark_complete(self, *, extract_seconds: float | None = None, **extra: object) -> None:
        """Set the complete flag (and final provenance such as timing) once every row is done.

        `extract_seconds` is this run's time; the time earlier runs recorded (before a resume) is
        added, so the attribute covers the whole extraction. Attributes cannot change in SWMR mode,
        so the file is closed and reopened normally for this; the store stays open (read-write)
        afterwards.
        """
        done = self.done_mask()
        if not done.all():
            raise IncompleteStoreError(f"{self.path}: {int((~done).sum())} rows not written")
        if extract_seconds is not None:
            extra["extract_seconds"] = round(self._earlier + extract_seconds, 3)
        self._h5.close()
        self._h5 = _h5file(self.path, "r+")
        for key, value in extra.items():
            self._h5.attrs[key] = encode_attribute(value)
        self._h5.attrs["rows_written"] = int(done.sum())
        self._h5.attrs["complete"] = True
        self._h5.flush()

    # -- reading ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._h5["sample_id"].shape[0])

    @property
    def complete(self) -> bool:
        """Every row was written and the extraction finished: marked complete, and its rows and layers bear
        the mark out (see `damage`). The mark alone is not enough: a file cut short, a joined store missing a
        shard or one edited by hand may carry it."""
        return self.marked_complete and self.damage() is None

    @property
    def marked_complete(self) -> bool:
        """The writer marked the store complete (a damaged store may carry the mark too: see `complete`)."""
        return bool(self._h5.attrs.get("complete", False))

    def damage(self) -> str | None:
        """What makes this file unusable as the store it says it is, or None when nothing does.

        Checked: every row column and the done flags hold one value per row; every recorded layer has a
        (rows, width) dataset; the provenance's row count is the store's; and a store marked complete has
        every row done and records that many. Only the done flags are read, never the features, so this is
        cheap enough for every open (`verify` reads every value).
        """
        h5 = self._h5
        if "sample_id" not in h5 or h5["sample_id"].ndim != 1:
            return "dataset /sample_id is missing"
        n = len(self)
        for name in (*ROW_COLUMNS, *COMPUTED_COLUMNS, "done"):
            if name not in h5:
                if name != "group":  # /2 stores have none; missing, it reads as rows of no group
                    return f"dataset /{name} is missing"
            elif h5[name].shape != (n,):
                return f"/{name} has shape {h5[name].shape}, the store {n} rows"
        recorded = h5.attrs.get("n_rows")
        if recorded is not None and int(recorded) != n:
            return f"its provenance records {int(recorded)} rows, it holds {n}"
        group = h5.get("features")
        if not isinstance(group, h5py.Group):
            return "group /features is missing"
        for name in self.layers:
            if name not in group:
                return f"layer {name} has no dataset under /features"
            if group[name].ndim != 2 or group[name].shape[0] != n:
                return f"/features/{name} has shape {group[name].shape}, expected ({n}, width)"
        if not self.marked_complete:
            return None
        try:
            missing = int(np.count_nonzero(~self.done_mask()))
        except InputError:
            return "its done flags cannot be read"
        if missing:
            shards = "; its shard files must lie beside it" if "shards" in h5.attrs else ""
            return f"marked complete, but {missing} of {n} rows are not written{shards}"
        written = h5.attrs.get("rows_written")
        if written is not None and int(written) != n:
            return f"marked complete with {int(written)} rows written, but it holds {n}"
        return None

    @property
    def provenance(self) -> dict[str, object]:
        """File attributes, decoded, with `rows_written` counted from the done flags."""
        return {**{k: decode_attribute(v) for k, v in self._h5.attrs.items()}, "rows_written": self.rows_written}

    @property
    def rows_written(self) -> int:
        """How many rows are written (flushed) so far."""
        return int(np.count_nonzero(self.done_mask()))

    @property
    def layers(self) -> list[str]:
        """Layer datasets in extraction order (the order recorded in provenance)."""
        layers = self.provenance.get("layers", [])
        return [str(name) for name in layers] if isinstance(layers, list) else []

    @property
    def dims(self) -> dict[str, int]:
        """Features per layer, for the layers written so far (all of them once a row is done)."""
        group = self._h5["features"]
        return {name: int(group[name].shape[1]) for name in self.layers if name in group}

    def done_mask(self) -> np.ndarray:
        """(N,) bool: which rows are written; a resume skips them."""
        done = self._h5["done"]
        if self._h5.mode == "r" and self._h5.swmr_mode:
            done.refresh()  # see rows a concurrent SWMR writer flushed since we opened
        return self._read(done)

    @property
    def writer(self) -> int | None:
        """PID of the process writing this store now (None when no one is)."""
        return writer_pid(self.path)

    def require_sound(self) -> None:
        """Refuse a damaged store (see `damage`), saying what is wrong with it and how to rebuild it."""
        damage = self.damage()
        if damage is not None:
            raise InputError(f"{self.path} is damaged ({damage})", Remedy.REBUILD_STORE)

    def require_complete(self) -> None:
        """Refuse a damaged store, and an unfinished one saying whether a live process is still writing it."""
        self.require_sound()
        if not self.marked_complete:
            pid = self.writer
            busy = f"; it is being written by PID {pid}; wait for it to finish" if pid else ""
            raise IncompleteStoreError(f"{self.path} is incomplete ({self.rows_written} of {len(self)} rows){busy}",
                                       None if pid else Remedy.RESUME_EXTRACTION)

    def _read(self, dataset: h5py.Dataset) -> np.ndarray:
        return _read_all(self.path, dataset)

    def column(self, name: str) -> np.ndarray:
        """(N,) one per-row column (membership, role, label, sample_id, group, loss, pred, finite, done)."""
        if name not in ROW_COLUMNS and name not in COMPUTED_COLUMNS and name != "done":
            raise InputError(f"no column '{name}' in {self.path}")
        if name == "group" and name not in self._h5:  # a /2 store: written before groups were recorded
            return np.full(len(self), -1, np.int64)
        return self._read(self._h5[name])

    def features(self, layers: Sequence[str] | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, Σ d) float32: the chosen layers' features side by side, for all rows or a boolean mask."""
        names = list(layers) if layers is not None else self.layers
        unknown = [n for n in names if n not in self._h5["features"]]
        if unknown:
            raise StoreMismatchError(f"{self.path} has no features for {unknown}; it holds {self.layers}")
        parts = [self._read(self._h5["features"][n]) for n in names]
        if rows is not None:
            parts = [p[rows] for p in parts]
        return np.concatenate(parts, axis=1)


REQUIRED_PROVENANCE = ("gmint_version", "torch_version", "model_fingerprint", "layers", "source", "reduction",
                       "engine", "dataset", "split_sha256", "seed", "n_rows")


def verify(path: Path) -> list[str]:
    """Every problem found in a store (empty when sound): schema, row counts, values, provenance, completeness."""
    problems: list[str] = []
    with FeatureStore.open(path) as store:
        h5, n = store._h5, len(store)
        for name in (*ROW_COLUMNS, *COMPUTED_COLUMNS, "done"):
            if name not in h5:
                if not (name == "group" and h5.attrs.get("format") != FORMAT):  # /2 stores have none
                    problems.append(f"dataset /{name} is missing")
            elif h5[name].shape != (n,):
                problems.append(f"/{name} has shape {h5[name].shape}, expected ({n},)")
        prov = store.provenance
        problems += [f"provenance attribute '{k}' is missing" for k in REQUIRED_PROVENANCE if k not in prov]
        if prov.get("n_rows", n) != n:
            problems.append(f"provenance says {prov.get('n_rows')} rows, the store has {n}")
        for name in store.layers:
            if name not in h5["features"]:
                problems.append(f"layer {name} has no dataset under /features")
            elif h5["features"][name].shape[0] != n:
                problems.append(f"/features/{name} has {h5['features'][name].shape[0]} rows, expected {n}")
        if problems:
            return problems
        for name, codes in CODES.items():
            if name == "group":  # any id ≥ 0, or -1
                bad, allowed_text = int((store.column(name) < -1).sum()), "-1 and the ids ≥ 0"
            else:
                allowed = tuple(sorted(codes))
                bad, allowed_text = int(np.isin(store.column(name), allowed, invert=True).sum()), str(allowed)
            if bad:
                problems.append(f"{bad} rows have a {name} outside {allowed_text}")
        done = store.done_mask()
        nonfinite = int((done & ~store.column("finite")).sum())
        if nonfinite:
            problems.append(f"{nonfinite} rows have NaN or Inf features or loss (flagged; excluded from fits)")
        for name in store.layers:  # read every value once: corrupt chunks only show when read
            ds, unflagged, finite = h5["features"][name], 0, store.column("finite")
            for start in range(0, n, 65536):
                block = _read_all(store.path, ds, start, start + 65536)
                flagged = finite[start:start + 65536]
                unflagged += int((~np.isfinite(block).all(axis=1) & flagged).sum())
            if unflagged:
                problems.append(f"layer {name}: {unflagged} rows hold NaN/Inf without being flagged")
        if not store.marked_complete:
            pid = store.writer
            todo = f"being written by PID {pid}" if pid else "continue with --resume"
            problems.append(f"incomplete: {int(done.sum())} of {n} rows written ({todo})")
        elif not done.all():
            problems.append(f"marked complete but {int((~done).sum())} rows are not written")
    return problems


def _read_all(path: Path, dataset: h5py.Dataset, start: int = 0, stop: int | None = None) -> np.ndarray:
    try:
        return dataset[start:stop]
    except OSError as exc:  # truncated or corrupt chunks surface only when read
        raise InputError(f"{path} is damaged: reading {dataset.name} failed ({exc})") from None


def check_resumable(path: Path) -> None:
    """Refuse, before any work, a file at `path` that no resume can continue: one HDF5 cannot read, one that
    is not a feature store, or a damaged store (see `FeatureStore.damage`). A sound store, finished or not,
    passes; whether it belongs to the same extraction is checked when `FeatureStore.resume` opens it.

    Raises:
        InputError: the file cannot be resumed (the message says why and how to rebuild it).
        StoreBusyError: another process is writing it.
    """
    with WriterLock(Path(path)):
        _check_resumable(Path(path), {})


def _check_resumable(path: Path, provenance: Mapping[str, object]) -> bool:
    """Whether the store at `path` is complete, after refusing one that is unreadable, damaged or from another
    extraction than `provenance` describes (the caller holds `path`'s writer lock, so no one else writes it:
    the file is read as it lies on disk, never through a live writer's eyes)."""
    with FeatureStore(path, _open_h5(path, held=True)) as old:
        damage = old.damage()
        if damage is not None:
            raise InputError(f"{path} is damaged ({damage}); it cannot be resumed", Remedy.REBUILD_STORE)
        theirs = old.provenance
        diff = [k for k in SPEC_KEYS if k in provenance and theirs.get(k) != _roundtrip(provenance[k])]
        if diff:
            raise StoreMismatchError(f"{path} was written by a different extraction (differs in "
                                     f"{', '.join(diff)})", Remedy.ANOTHER_STORE_OR_REBUILD)
        return old.complete


def _salvage(path: Path) -> None:
    """Copy a crashed store's rows into a new file and put it in the old one's place (the caller holds
    `path`'s writer lock). A row that cannot be read refuses the salvage and leaves the file as it was."""
    tmp = path.with_name(path.name + ".salvage")
    try:
        _copy_rows(path, tmp)
    except OSError as exc:  # corrupt chunks surface only when read
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path} is damaged (its writer died and {_why(exc)}); it cannot be resumed",
                         Remedy.REBUILD_STORE) from None
    tmp.replace(path)


def _copy_rows(path: Path, tmp: Path) -> None:
    """Every dataset and attribute of the crashed store at `path` into a new store at `tmp`."""
    with h5py.File(path, "r", swmr=True, locking=False) as old:
        done = old["done"][:]
        with FeatureStore.create(tmp, overwrite=True,
                                 columns={name: old[name][:] for name in ROW_COLUMNS if name in old},  # /2: no group
                                 dims={name: ds.shape[1] for name, ds in old["features"].items()},
                                 provenance={k: decode_attribute(v) for k, v in old.attrs.items()
                                             if k not in ("format", "complete", "rows_written")}) as new:
            for name, ds in old["features"].items():
                new._h5["features"][name][:] = ds[:]
            for name in COMPUTED_COLUMNS:
                new._h5[name][:] = old[name][:]
            if "seconds" in old:
                new._h5["seconds"][:] = old["seconds"][:]
            new._h5.flush()
            new._h5["done"][:] = done
            new._h5.flush()


def _h5file(path: Path, mode: str) -> h5py.File:
    """Open for writing: 1.10 format; no HDF5 file lock, which a reader's open could make fail (the
    writer lock keeps out other writers)."""
    return h5py.File(path, mode, libver=LIBVER, locking=False)


def _open_h5(path: Path, *, held: bool = False) -> h5py.File:
    """A reader's handle on the store at `path`. `held`: the caller holds the writer lock, so no live
    process writes the file and it is read as it lies on disk."""
    if not path.exists():
        raise InputError(f"feature store {path} not found")
    # A store being written (or whose writer died) is read as an SWMR reader: a plain one may find it
    # flagged "open for write", or its end not yet extended. Only then: an SWMR reader skips HDF5's check
    # that the file is as long as it records and retries failing reads with back-off, so a file cut short
    # may open showing its complete mark, or hang.
    tail, remedy = ("; it cannot be resumed", Remedy.REBUILD_STORE) if held else ("", None)
    try:
        h5 = _open_swmr(path, tail) if not held and writer_pid(path) else h5py.File(path, "r", locking=False)
    except OSError as exc:
        # A flagged file whose writer is gone: HDF5 checks its length first, so this one is whole.
        if "already open for write" not in str(exc) and (held or not writer_pid(path)):
            raise InputError(f"{path} is not a readable HDF5 feature store ({_why(exc)}){tail}", remedy) from None
        h5 = _open_swmr(path, tail, held=held)
    found = h5.attrs.get("format")
    if found not in READABLE_FORMATS:
        h5.close()
        if isinstance(found, str) and found.startswith(FORMAT.split("/")[0]):
            raise InputError(f"{path} is a {found} store; this gmint reads {FORMAT}", Remedy.REBUILD_STORE)
        raise InputError(f"{path} is not a gmint feature store (format attribute missing or different){tail}",
                         remedy)
    return h5


def _open_swmr(path: Path, tail: str = "", *, held: bool = False) -> h5py.File:
    """An SWMR reader's handle. A live writer leaves SWMR mode for a moment to set the final attributes,
    and nothing can read the file then: wait that moment out (`held`: the caller is the writer, so there
    is no such moment to wait for)."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            return h5py.File(path, "r", swmr=True, locking=False)
        except OSError as exc:
            pid = None if held else writer_pid(path)
            if pid is None:
                raise InputError(f"{path} is not a readable HDF5 feature store ({_why(exc)}){tail}",
                                 Remedy.REBUILD_STORE if held else None) from None
            if time.monotonic() > deadline:
                raise InputError(f"{path} is being written by PID {pid} and cannot be read now; try again") from None
            time.sleep(0.02)


def _why(exc: OSError) -> str:
    """Why HDF5 could not read a file, in words: a file cut short says how much of it is left."""
    text = str(exc)
    cut = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if cut:
        return f"cut short: {cut.group(1)} of its {cut.group(2)} bytes are left"
    if "file signature not found" in text:
        return "not an HDF5 file"
    inner = re.findall(r"\(([^()]+)\)", text)
    return inner[-1] if inner else exc.__class__.__name__


def describe_codes(h5: h5py.File) -> None:
    """Spell out the integer codes of /membership, /role and /group in a `codes` attribute on each."""
    for name, codes in CODES.items():
        if name in h5:  # a join of /2 shards has no /group
            h5[name].attrs["codes"] = ", ".join(f"{code} {meaning}" for code, meaning in codes.items())


def lock_path(path: Path) -> Path:
    """The writer lock file beside the store at `path`."""
    return Path(path).with_name(Path(path).name + ".lock")


class WriterLock:
    """The one-writer-per-store rule: an exclusive flock on `<store>.lock`, which holds the writer's PID.

    The kernel drops the lock when the writer dies, so a crashed run never blocks the next one. The
    file is removed on release while still locked; whoever opened it meanwhile finds it gone and
    locks a new one, so two writers never hold locks on different files.

    Raises:
        StoreBusyError: another process holds the lock.
    """

    def __init__(self, store: Path) -> None:
        self.path = lock_path(store)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pid = _pid_in(fd)
                    os.close(fd)
                    raise StoreBusyError(f"{store} is being written by PID {pid}; only one process may write "
                                         "a store: wait for it to finish or stop it") from None
                os.close(fd)
                time.sleep(0.02)
                continue
            if _same_file(fd, self.path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        """Give up the lock and remove its file (the kernel also drops the lock if the process dies)."""
        if self._fd is None:
            return
        if _same_file(self._fd, self.path):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def writer_pid(path: Path) -> int | None:
    """PID of the process writing the store at `path` now; None when no live process holds its lock."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):  # no lock, or no folder it could be in
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released by the close below
    except BlockingIOError:
        return _pid_in(fd)
    else:
        return None
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int:
    """The PID a lock holder wrote (it writes it right after locking: wait for it briefly; 0 if never)."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return 0


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


def encode_attribute(value: object) -> object:
    """A provenance value as an HDF5 attribute: scalars and strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return str(value)  # np.str_ would be stored as a fixed-width array h5py cannot convert
    if isinstance(value, (int, float, bool, np.integer, np.floating, np.bool_)):
        return value
    return json.dumps(value)


def decode_attribute(value: object) -> object:
    """The inverse of `encode_attribute`."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _roundtrip(value: object) -> object:
    """The value as it reads back from HDF5 attributes (tuples become lists, etc.)."""
    return decode_attribute(encode_attribute(value))
