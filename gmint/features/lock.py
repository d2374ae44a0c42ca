"""The one-writer-per-store rule: a writer (create, resume, salvage, join) holds an exclusive lock on the
sidecar `<store>.lock`, which names its PID; the kernel drops the lock when the writer closes or dies. A
second writer is refused, and readers ask the lock who is writing. HDF5's own file locking is off on both
sides (the sidecar lock replaces it for writers; SWMR needs none for readers), so no reader can make the
writer fail when it reopens the file to finish it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from gmint.errors import StoreBusyError

# How long a writer retries the lock before refusing: a reader asking who writes holds it for microseconds.
LOCK_WAIT_S = 0.5


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
