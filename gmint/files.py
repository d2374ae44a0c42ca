"""Writing a file whole or not at all, so a crash or a kill never leaves half a checkpoint, manifest or store."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: Path | str) -> Iterator[Path]:
    """Yield a new, empty temporary file beside `path`; on a clean exit it takes `path`'s place.

    The temporary file is forced to disk (fsync), then renamed over `path` (os.replace: atomic within one
    file system, hence beside it), then the folder is synced so the rename itself survives a power cut:
    at any moment `path` is the old file or the new one. On any failure, inside the block or while
    replacing, the temporary file is removed and `path` is left as it was. The temporary file has the
    usual permissions (umask) and a hidden name `.<name>.<random>.tmp`; writers may reopen it by name
    (torch.save, h5py) or keep it open past the block (the store's SWMR handle): the rename moves the file,
    not their handle.

    Args:
        path: the file to write; its folder must exist.

    Yields:
        The temporary file to write the new content to.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # never someone else's file
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # a folder cannot be opened for syncing elsewhere; the rename is all there is
        _sync(path.parent)


def _sync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
