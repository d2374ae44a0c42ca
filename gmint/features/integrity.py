"""Checks on a feature store file: `verify` (every problem, every value read), whether a resume may continue
it, and the salvage of a store whose writer died.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gmint.errors import InputError, Remedy, StoreMismatchError
from gmint.features.h5files import reader_file, why_unreadable
from gmint.features.lock import WriterLock
from gmint.features.schema import CODES, COMPUTED_COLUMNS, FORMAT, ROW_COLUMNS, SPEC_KEYS, roundtrip
from gmint.features.store import FeatureStore

# Provenance every store records; `verify` names each one missing.
REQUIRED_PROVENANCE = ("gmint_version", "torch_version", "model_fingerprint", "layers", "source", "reduction",
                       "engine", "dataset", "split_sha256", "seed", "n_rows")


def verify(path: Path) -> list[str]:
    """Every problem found in a store (empty when sound): schema, row counts, values, provenance, completeness."""
    problems: list[str] = []
    with FeatureStore.open(path) as store:
        arrays, n = store.arrays(), len(store)
        for name in (*ROW_COLUMNS, *COMPUTED_COLUMNS, "done"):
            if name not in arrays:
                if not (name == "group" and store.format != FORMAT):  # /2 stores have none
                    problems.append(f"dataset /{name} is missing")
            elif arrays[name].shape != (n,):
                problems.append(f"/{name} has shape {arrays[name].shape}, expected ({n},)")
        prov = store.provenance
        problems += [f"provenance attribute '{k}' is missing" for k in REQUIRED_PROVENANCE if k not in prov]
        if prov.get("n_rows", n) != n:
            problems.append(f"provenance says {prov.get('n_rows')} rows, the store has {n}")
        for name in store.layers:
            layer = arrays.get(f"features/{name}")
            if layer is None:
                problems.append(f"layer {name} has no dataset under /features")
            elif layer.shape[0] != n:
                problems.append(f"/features/{name} has {layer.shape[0]} rows, expected {n}")
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
            unflagged, finite = 0, store.column("finite")
            for start in range(0, n, 65536):
                block = store.feature_rows(name, start, start + 65536)
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


def check_resumable(path: Path) -> None:
    """Refuse, before any work, a file at `path` that no resume can continue: one HDF5 cannot read, one that
    is not a feature store, or a damaged store (see `FeatureStore.damage`). A sound store, finished or not,
    passes; whether it belongs to the same extraction is checked when `FeatureStore.resume` opens it.

    Raises:
        InputError: the file cannot be resumed (the message says why and how to rebuild it).
        StoreBusyError: another process is writing it.
    """
    with WriterLock(Path(path)):
        check_resume(Path(path), {})


def check_resume(path: Path, provenance: Mapping[str, object]) -> bool:
    """Whether the store at `path` is complete, after refusing one that is unreadable, damaged or from another
    extraction than `provenance` describes (the caller holds `path`'s writer lock, so no one else writes it:
    the file is read as it lies on disk, never through a live writer's eyes)."""
    with FeatureStore(path, reader_file(path, held=True)) as old:
        damage = old.damage()
        if damage is not None:
            raise InputError(f"{path} is damaged ({damage}); it cannot be resumed", Remedy.REBUILD_STORE)
        theirs = old.provenance
        diff = [k for k in SPEC_KEYS if k in provenance and theirs.get(k) != roundtrip(provenance[k])]
        if diff:
            raise StoreMismatchError(f"{path} was written by a different extraction (differs in "
                                     f"{', '.join(diff)})", Remedy.ANOTHER_STORE_OR_REBUILD)
        return old.complete


def salvage(path: Path) -> None:
    """Copy a crashed store's rows into a new file and put it in the old one's place (the caller holds
    `path`'s writer lock). A row that cannot be read refuses the salvage and leaves the file as it was."""
    tmp = path.with_name(path.name + ".salvage")
    try:
        with FeatureStore(path, reader_file(path, held=True)) as old:
            old.copy_into(tmp)
    except OSError as exc:  # corrupt chunks surface only when read
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path} is damaged (its writer died and {why_unreadable(exc)}); it cannot be resumed",
                         Remedy.REBUILD_STORE) from None
    tmp.replace(path)
