"""Feature stores: one HDF5 file per extraction, written in appended batches, readable by any HDF5 tool.

Layout:
    /features/<parameter name>   (N, d) float32, chunked, gzip — one dataset per selected layer
    /membership (N,) int8        1 member, 0 external, -1 unknown (samples being scored)
    /role       (N,) int8        0 auditor's pool (may fit a MINT classifier), 1 held out, -1 n/a
    /label      (N,) int64       true class; /sample_id (N,) int64 row of the dataset
    /loss       (N,) float32     the audited model's loss; /pred (N,) int64 its predicted class
    /finite     (N,) bool        every feature and the loss are finite (NaN/Inf rows are kept, flagged,
                                 and left out of training and evaluation with a warning)
    /done       (N,) bool        row written and flushed (resume skips these)
    attrs: provenance (one attribute per key, JSON for lists/dicts), complete (and, once complete,
           rows_written and timing)

Writing happens in HDF5 single-writer/multiple-reader (SWMR) mode, so `gmint info` can read a store
while extraction is still writing it, and the file stays consistent if the writer dies. SWMR forbids
creating objects or attributes while writing, so every dataset is created up front (the extraction
knows each layer's width from a one-row dry run) and the final attributes are set after SWMR ends.
A crash loses at most the batch in flight: features are written and flushed before `done` is set,
and `complete` is set only after the last row. Every reader refuses an incomplete store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from gmint.errors import IncompleteStoreError, InputError, StoreMismatchError

FORMAT = "gmint-feature-store/2"  # /2: per-row `finite` flags
ROW_COLUMNS = {"membership": np.int8, "role": np.int8, "label": np.int64, "sample_id": np.int64}
COMPUTED_COLUMNS = {"loss": np.float32, "pred": np.int64, "finite": bool}
# Provenance keys that must agree for a resumed extraction to continue the same store.
SPEC_KEYS = ("model_fingerprint", "layers", "source", "reduction", "engine", "loss_function", "dataset",
             "split_sha256", "transform", "seed", "n_rows", "rows_sha256")
CHUNK_BYTES = 1 << 20


class FeatureStore:
    """An open feature store. Use `create`, `resume` or `open` (read-only); close or use `with`."""

    def __init__(self, path: Path, handle: h5py.File) -> None:
        self.path = Path(path)
        self._h5 = handle

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, columns: Mapping[str, np.ndarray], dims: Mapping[str, int],
               provenance: Mapping[str, object], overwrite: bool = False, chunk_rows: int = 1024) -> FeatureStore:
        """A new, empty store for len(columns['sample_id']) rows with one (N, dims[name]) dataset per layer,
        open for writing in SWMR mode. Refuses to replace a file unless asked. Feature chunks hold
        `chunk_rows` rows (the writer's batch size), so each batch fills whole chunks: a compressed chunk
        written in pieces would be decompressed and recompressed at every piece.

        The layout is written to a temporary file that then takes `path`'s place, so a crash never
        leaves a half-created store behind.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists; pass --resume to continue it or --overwrite to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        n = len(columns["sample_id"])
        tmp = path.with_name(path.name + ".new")
        h5 = h5py.File(tmp, "w", libver="latest")
        for name, dtype in ROW_COLUMNS.items():
            h5.create_dataset(name, data=np.asarray(columns[name], dtype=dtype))
        for name, dtype in COMPUTED_COLUMNS.items():
            h5.create_dataset(name, shape=(n,), dtype=dtype, fillvalue=0)
        h5.create_dataset("done", shape=(n,), dtype=bool, fillvalue=False)
        group = h5.create_group("features")
        for name, d in dims.items():
            rows_per_chunk = int(max(1, min(n, chunk_rows, CHUNK_BYTES // (4 * d))))
            group.create_dataset(name, shape=(n, d), dtype=np.float32, chunks=(rows_per_chunk, d),
                                 compression="gzip", compression_opts=4, shuffle=True)
        h5.attrs["format"] = FORMAT
        for key, value in provenance.items():
            h5.attrs[key] = encode_attribute(value)
        h5.attrs["complete"] = False
        h5.close()
        tmp.replace(path)
        h5 = h5py.File(path, "r+", libver="latest")
        h5.swmr_mode = True
        return cls(path, h5)

    @classmethod
    def resume(cls, path: Path, provenance: Mapping[str, object]) -> FeatureStore:
        """Reopen a store for writing after checking it belongs to the same extraction (a complete one
        simply has nothing left to write).

        A writer that died in SWMR mode leaves the file flagged "open for write"; HDF5 then refuses
        to reopen it for writing (only its own h5clear tool resets the flag), although SWMR readers
        see every flushed row. Such a store is salvaged: its rows are copied into a fresh file that
        atomically replaces it.
        """
        path = Path(path)
        with cls.open(path) as old:
            theirs = old.provenance
            diff = [k for k in SPEC_KEYS if k in provenance and theirs.get(k) != _roundtrip(provenance[k])]
            if diff:
                raise StoreMismatchError(f"{path} was written by a different extraction (differs in "
                                         f"{', '.join(diff)}); use a new --out or --overwrite")
        try:
            h5 = h5py.File(path, "r+", libver="latest")
        except OSError:
            _salvage(path)
            h5 = h5py.File(path, "r+", libver="latest")
        h5.swmr_mode = True
        return cls(path, h5)

    @classmethod
    def open(cls, path: Path) -> FeatureStore:
        """Read-only access (complete or not, also while a writer is still at work; readers call
        `require_complete`)."""
        return cls(Path(path), _open_h5(Path(path), "r"))

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------------
    def write(self, start: int, features: Mapping[str, np.ndarray], *, loss: np.ndarray,
              pred: np.ndarray) -> None:
        """Write rows [start, start + B) and mark them done, in that order, flushing in between."""
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
        self._h5.flush()

    def mark_complete(self, **extra: object) -> None:
        """Set the complete flag (and final provenance such as timing) once every row is done.

        Attributes cannot change in SWMR mode, so the file is closed and reopened normally for this;
        the store stays open (read-write) afterwards.
        """
        done = self.done_mask()
        if not done.all():
            raise IncompleteStoreError(f"{self.path}: {int((~done).sum())} rows not written")
        self._h5.close()
        self._h5 = h5py.File(self.path, "r+", libver="latest")
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
        return bool(self._h5.attrs.get("complete", False))

    @property
    def provenance(self) -> dict[str, object]:
        """File attributes, decoded, with `rows_written` counted from the done flags."""
        return {**{k: decode_attribute(v) for k, v in self._h5.attrs.items()}, "rows_written": self.rows_written}

    @property
    def rows_written(self) -> int:
        return int(np.count_nonzero(self.done_mask()))

    @property
    def layers(self) -> list[str]:
        """Layer datasets in extraction order (the order recorded in provenance)."""
        return list(self.provenance.get("layers", []))  # type: ignore[arg-type]

    @property
    def dims(self) -> dict[str, int]:
        """Features per layer, for the layers written so far (all of them once a row is done)."""
        group = self._h5["features"]
        return {name: int(group[name].shape[1]) for name in self.layers if name in group}

    def done_mask(self) -> np.ndarray:
        done = self._h5["done"]
        if self._h5.mode == "r" and self._h5.swmr_mode:
            done.refresh()  # see rows a concurrent SWMR writer flushed since we opened
        return self._read(done)

    def require_complete(self) -> None:
        if not self.complete:
            raise IncompleteStoreError(
                f"{self.path} is incomplete ({self.rows_written} of {len(self)} rows); "
                "finish it with `gmint extract ... --resume`")

    def _read(self, dataset: h5py.Dataset) -> np.ndarray:
        return _read_all(self.path, dataset)

    def column(self, name: str) -> np.ndarray:
        if name not in ROW_COLUMNS and name not in COMPUTED_COLUMNS and name != "done":
            raise InputError(f"no column '{name}' in {self.path}")
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
        for name, allowed in (("membership", (-1, 0, 1)), ("role", (-1, 0, 1))):
            bad = int(np.isin(store.column(name), allowed, invert=True).sum())
            if bad:
                problems.append(f"{bad} rows have a {name} outside {allowed}")
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
        if not store.complete:
            problems.append(f"incomplete: {int(done.sum())} of {n} rows written (continue with --resume)")
        elif not done.all():
            problems.append(f"marked complete but {int((~done).sum())} rows are not written")
    return problems


def _read_all(path: Path, dataset: h5py.Dataset, start: int = 0, stop: int | None = None) -> np.ndarray:
    try:
        return dataset[start:stop]
    except OSError as exc:  # truncated or corrupt chunks surface only when read
        raise InputError(f"{path} is damaged: reading {dataset.name} failed ({exc})") from None


def _salvage(path: Path) -> None:
    """Copy a crashed store's rows into a new file and put it in the old one's place."""
    tmp = path.with_name(path.name + ".salvage")
    with h5py.File(path, "r", swmr=True) as old:
        done = old["done"][:]
        with FeatureStore.create(tmp, overwrite=True,
                                 columns={name: old[name][:] for name in ROW_COLUMNS},
                                 dims={name: ds.shape[1] for name, ds in old["features"].items()},
                                 provenance={k: decode_attribute(v) for k, v in old.attrs.items()
                                             if k not in ("format", "complete", "rows_written")}) as new:
            for name, ds in old["features"].items():
                new._h5["features"][name][:] = ds[:]
            for name in COMPUTED_COLUMNS:
                new._h5[name][:] = old[name][:]
            new._h5.flush()
            new._h5["done"][:] = done
            new._h5.flush()
    tmp.replace(path)


def _open_h5(path: Path, mode: str) -> h5py.File:
    if not path.exists():
        raise InputError(f"feature store {path} not found")
    try:
        h5 = h5py.File(path, mode) if mode == "r" else h5py.File(path, mode, libver="latest")
    except OSError as exc:
        # A store being written (or whose writer died) is flagged "open for write": read it as an SWMR
        # reader. Only then: for a damaged file an SWMR reader retries each failing read with back-off.
        if mode != "r" or "already open for write" not in str(exc):
            raise InputError(f"{path} is not a readable HDF5 feature store ({exc.__class__.__name__})") from None
        h5 = h5py.File(path, mode, swmr=True)
    found = h5.attrs.get("format")
    if found != FORMAT:
        h5.close()
        if isinstance(found, str) and found.startswith(FORMAT.split("/")[0]):
            raise InputError(f"{path} is a {found} store; this gmint reads {FORMAT}: extract it again")
        raise InputError(f"{path} is not a gmint feature store (format attribute missing or different)")
    return h5


def encode_attribute(value: object) -> object:
    if isinstance(value, str):
        return str(value)  # np.str_ would be stored as a fixed-width array h5py cannot convert
    if isinstance(value, (int, float, bool, np.integer, np.floating, np.bool_)):
        return value
    return json.dumps(value)


def decode_attribute(value: object) -> object:
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
