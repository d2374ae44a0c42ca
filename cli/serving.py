"""Serving published audits on this machine, shared by `gmint serve` and `gmint demo --serve`.

Uploads are written under one folder per server in the system's temporary folder, named after the server's
process (`gmint-serve-<pid>-<start time>-…`) and locked by it while it runs. A server killed outright (kill -9,
a power cut) cannot remove its folder, so every server sweeps, when it starts, the folders of servers that are
gone: their process no longer exists, or its pid now belongs to a process started at another time, and nothing
holds their lock. Another live server's folder is never removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import webbrowser
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType

from rich.markup import escape

from gmint.errors import InputError
from gmint.serve.audits import MANIFEST, AuditManifest, PublishedAudit, find_audits
from gmint.serve.limits import Limits
from gmint_cli.console import console, err_console, print_error

try:
    import fcntl
except ImportError:  # not on Windows: there a folder is judged by its pid alone
    fcntl = None  # type: ignore[assignment]

# A server's folder: `gmint-serve-<pid>-<start time>-<random>` (older servers' `gmint-serve-<random>` never
# matches, and is left alone).
UPLOAD_PREFIX = "gmint-serve-"
_UPLOAD_FOLDER = re.compile(re.escape(UPLOAD_PREFIX) + r"(\d+)-(\d+|x)-")
LOCK = ".lock"
# The audit `gmint demo --serve` publishes from its folder.
DEMO_MANIFEST = AuditManifest(
    model="audited.pt", mint="mint-combined.pt", store="audited-gradient.h5",
    title="Handwritten digits (gmint demo)",
    description="A small CNN trained on 40% of scikit-learn's 8x8 handwritten digits, audited with gMINT (Weight "
                "Modifiers of its entry, middle and output layers, gmint's classifier). Upload digit images "
                "(any size, resized to 8x8 grey) with the digit each one shows.")


def load_audits(folder: Path) -> dict[str, PublishedAudit]:
    """The audits under `folder`; each one that does not load is one error line, and the rest are served."""
    published, problems = find_audits(folder)
    for line in problems:
        print_error(line)
    if not published:
        raise InputError(f"no audit to serve in {folder}: each audit is a folder with an {MANIFEST} naming its "
                         "model, MINT classifier and store" + (" (see the errors above)" if problems else ""))
    return published


def serve_audits(published: Mapping[str, PublishedAudit], limits: Limits, *, host: str = "127.0.0.1",
                 port: int = 8000, open_browser: bool = False) -> None:
    """Run the web server until Ctrl+C, with every request's files under one temporary folder removed at exit
    (and the folders of killed servers swept first, see `sweep_upload_folders`)."""
    import uvicorn  # the server is needed by this verb alone

    from gmint.serve.app import create_app

    _check_port(host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    for audit in published.values():
        console.print(f"audit [bold]{escape(audit.name)}[/]: {escape(audit.title)} — {len(audit.classes)} classes, "
                      f"α = {audit.manifest.alpha:g}, {audit.n_calibration} calibration rows", highlight=False)
    if not _is_loopback(host):
        err_console.print(f"[yellow]warning:[/] --host {escape(host)}: anyone who can reach this machine can upload "
                          "images to it", highlight=False)
    swept = sweep_upload_folders(Path(tempfile.gettempdir()))
    if swept:
        console.print(f"removed {swept} upload folder{'s' if swept > 1 else ''} left in {tempfile.gettempdir()} by "
                      "servers that were killed", highlight=False)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again: with Python's default action the
    # process would end there, before the temporary folder is removed. This handler unwinds instead.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    # Scoring faults (an audit's store changed or gone) are answered with a generic line; the cause is told here.
    handler = _ErrorLines()
    log = logging.getLogger("gmint.serve")
    log.addHandler(handler)
    try:
        with upload_folder() as tmp:
            app = create_app(published, limits, tmp_root=tmp)
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
            console.print(f"serving the page at {url} (Ctrl+C stops)", highlight=False)
            if open_browser:
                threading.Timer(1.0, webbrowser.open, args=(url,)).start()
            server.run()
    finally:
        log.removeHandler(handler)
        if main:
            signal.signal(signal.SIGTERM, previous)


class _ErrorLines(logging.Handler):
    """The server's log records as `error:` lines on stderr (with the traceback of an unexpected fault)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record."""
        print_error(record.getMessage())
        if record.exc_info:
            err_console.print(escape(logging.Formatter().formatException(record.exc_info)), highlight=False)


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, from /proc/<pid>/stat), or None where that cannot
    be read (no such process, or no /proc). With its pid it names one process: pids are reused, start times
    are not."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = line[line.rindex(")") + 2:].split()  # the name, in brackets, may hold spaces
    return fields[19] if len(fields) > 19 else None  # field 22, counting from 1 before the name


def _owner_alive(pid: int, start: str) -> bool:
    """Whether the process that made a folder, named by pid and start time, may still be running."""
    if pid <= 0:
        return True  # not a name this module writes: leave it
    now = process_start(pid)
    if now is not None:
        return start == "x" or now == start  # "x": made where start times could not be read
    if Path("/proc/self/stat").exists():
        return False  # /proc is readable and has no such process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_upload_folders(tmp: Path) -> int:
    """Remove the upload folders under `tmp` that servers left when killed; return how many were removed.

    A folder is removed only when it is this user's, its name says which process made it, that process is
    gone (or its pid now names a process started at another time) and nothing holds the folder's lock: a
    server running in another pid namespace (a container sharing /tmp) still holds its lock.
    """
    removed = 0
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return 0
    for entry in entries:
        match = _UPLOAD_FOLDER.match(entry.name)
        if match is None:
            continue
        try:
            status = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(status.st_mode) or (hasattr(os, "getuid") and status.st_uid != os.getuid()):
            continue
        if _owner_alive(int(match[1]), match[2]):
            continue
        with _locked(Path(entry.path) / LOCK, wait=False) as held:
            if held:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += not os.path.lexists(entry.path)
    return removed


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive lock on `path` (creating it when `wait`): True when held, or when there is no lock to
    hold; False when another process holds it. The system releases it when its holder dies, however it dies."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if wait else 0), 0o600)
    except FileNotFoundError:
        yield True  # a server killed before it locked its folder
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def upload_folder() -> Iterator[Path]:
    """This server's folder for the files made from uploads (each request's candidates' feature store; the
    images themselves are scored from memory), under the system's temporary folder, named after its process and
    locked while it runs; removed when it stops (a killed server's folder is swept by the next one)."""
    start = process_start(os.getpid()) or "x"
    with tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-{start}-") as tmp:
        with _locked(Path(tmp) / LOCK, wait=True):
            yield Path(tmp)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_port(host: str, port: int) -> None:
    """Refuse a port that is taken, in one line, before the server starts (uvicorn would log and exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port or "
                             "--host") from None
