"""Opening feature store files: writers' and readers' HDF5 handles, and why a file cannot be read, in words.

Writing happens in HDF5 single-writer/multiple-reader (SWMR) mode, so `gmint info` can read a store
while extraction is still writing it, and the file stays consistent if the writer dies. A reader opens a
store that is being written (or whose writer died) as an SWMR reader, and any other as a plain one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import h5py
import numpy as np

from gmint.errors import InputError, Remedy
from gmint.features.lock import writer_pid
from gmint.features.schema import FORMAT, LIBVER, READABLE_FORMATS


def writer_file(path: Path, mode: str) -> h5py.File:
    """Open for writing: 1.10 format; no HDF5 file lock, which a reader's open could make fail (the
    writer lock keeps out other writers)."""
    return h5py.File(path, mode, libver=LIBVER, locking=False)


def reader_file(path: Path, *, held: bool = False) -> h5py.File:
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
            raise InputError(f"{path} is not a readable HDF5 feature store ({why_unreadable(exc)}){tail}",
                             remedy) from None
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
                raise InputError(f"{path} is not a readable HDF5 feature store ({why_unreadable(exc)}){tail}",
                                 Remedy.REBUILD_STORE if held else None) from None
            if time.monotonic() > deadline:
                raise InputError(f"{path} is being written by PID {pid} and cannot be read now; try again") from None
            time.sleep(0.02)


def why_unreadable(exc: OSError) -> str:
    """Why HDF5 could not read a file, in words: a file cut short says how much of it is left."""
    text = str(exc)
    cut = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if cut:
        return f"cut short: {cut.group(1)} of its {cut.group(2)} bytes are left"
    if "file signature not found" in text:
        return "not an HDF5 file"
    inner = re.findall(r"\(([^()]+)\)", text)
    return inner[-1] if inner else exc.__class__.__name__


def read_dataset(path: Path, dataset: h5py.Dataset, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows [start, stop) of a store's dataset; a chunk that cannot be read refuses the store as damaged."""
    try:
        return dataset[start:stop]
    except OSError as exc:  # truncated or corrupt chunks surface only when read
        raise InputError(f"{path} is damaged: reading {dataset.name} failed ({exc})") from None
