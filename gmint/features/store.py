"""Feature stores: one HDF5 file per extraction, written in appended batches, readable by any HDF5 tool.

The file's layout and codes are in `gmint.features.schema`; the one-writer rule in `gmint.features.lock`;
how files are opened in `gmint.features.h5files`; `verify`, the resume checks and the salvage of a crashed
store in `gmint.features.integrity`.

Writing happens in HDF5 single-writer/multiple-reader (SWMR) mode, so `gmint info` can read a store
while extraction is still writing it, and the file stays consistent if the writer dies. SWMR forbids
creating objects or attributes while writing, so every dataset is created up front (the extraction
knows each layer's width from its first batch) and the final attributes are set after SWMR ends.
A crash loses at most the batch in flight: features are written and flushed before `done` is set,
and `complete` is set only after the last row. Every reader refuses an incomplete store, and one whose file
does not bear its complete mark out (cut short, rows or layers missing: `FeatureStore.damage`); a resume
refuses such a file too, rather than take it for finished.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from gmint.errors import IncompleteStoreError, InputError, Remedy, StoreMismatchError
from gmint.features.h5files import read_dataset, reader_file, writer_file
from gmint.features.lock import WriterLock, writer_pid
from gmint.features.schema import (
    CHUNK_BYTES,
    COMPUTED_COLUMNS,
    FORMAT,
    ROW_COLUMNS,
    decode_attribute,
    describe_codes,
    encode_attribute,
)
from gmint.files import atomic_write


@dataclass(frozen=True)
class StoredArray:
    """One array of a store file (an HDF5 dataset): its shape and element type as stored."""

    shape: tuple[int, ...]
    dtype: np.dtype


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
                with writer_file(tmp, "w") as h5:
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
                h5 = held.enter_context(writer_file(tmp, "r+"))
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
        from gmint.features import integrity  # it checks stores through this class, so it imports this module

        path = Path(path)
        if not path.exists():
            raise InputError(f"feature store {path} not found")
        with ExitStack() as held:
            lock = held.enter_context(WriterLock(path))
            complete = integrity.check_resume(path, provenance)
            if complete:  # nothing to write: leave the file untouched
                h5 = reader_file(path, held=True)
            else:
                try:
                    h5 = writer_file(path, "r+")
                except OSError:  # we hold the lock, so no live writer flagged it: a dead one did
                    integrity.salvage(path)
                    h5 = writer_file(path, "r+")
                h5.swmr_mode = True
            held.pop_all()
            return cls(path, h5, lock)

    @classmethod
    def open(cls, path: Path) -> FeatureStore:
        """Read-only access (complete or not, also while a writer is still at work; readers call
        `require_complete`)."""
        return cls(Path(path), reader_file(Path(path)))

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
        self._h5 = writer_file(self.path, "r+")
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
    def format(self) -> str:
        """The format the file declares: `FORMAT`, or an older one this gmint still reads."""
        return str(self._h5.attrs["format"])

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

    def _read(self, dataset: h5py.Dataset, start: int = 0, stop: int | None = None) -> np.ndarray:
        return read_dataset(self.path, dataset, start, stop)

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

    def feature_rows(self, layer: str, start: int, stop: int) -> np.ndarray:
        """(stop - start, d) float32: rows [start, stop) of one layer's features, read from disk (a block at a
        time, so a check of every value needs no more memory than one block)."""
        return self._read(self._h5["features"][layer], start, stop)

    def arrays(self) -> dict[str, StoredArray]:
        """Every array in the file by its path in it ('label', 'features/<layer>'), with shape and type as
        stored: what a check of the layout and a join of shards look at, before any reading."""
        found: dict[str, StoredArray] = {}

        def visit(name: str, item: object) -> None:
            if isinstance(item, h5py.Dataset):
                found[name] = StoredArray(tuple(item.shape), np.dtype(item.dtype))

        self._h5.visititems(visit)
        return found

    def copy_into(self, path: Path) -> None:
        """Every dataset and attribute of this store into a new store at `path`, done flags last: a salvage of
        a file its writer left flagged "open for write". A chunk that cannot be read raises OSError."""
        old = self._h5
        done = old["done"][:]
        with FeatureStore.create(path, overwrite=True,
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
