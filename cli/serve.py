"""`gmint serve`: the MINT-Demo page over a folder of published audits, on this machine."""

from __future__ import annotations

import ipaddress
import signal
import socket
import tempfile
import threading
import webbrowser
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import typer
from rich.markup import escape

from gmint.errors import InputError
from gmint.serve.audits import MANIFEST, AuditManifest, PublishedAudit, find_audits
from gmint.serve.limits import Limits
from gmint_cli.console import cli_errors, console, err_console, print_error
from gmint_cli.options import flag

MIB = 2**20
# The audit `gmint demo --serve` publishes from its folder.
DEMO_MANIFEST = AuditManifest(
    model="audited.pt", mint="mint-combined.pt", store="audited-gradient.h5",
    title="Handwritten digits (gmint demo)",
    description="A small CNN trained on 40% of scikit-learn's 8x8 handwritten digits, audited with gMINT (MEAN "
                "Weight Modifiers of its entry, middle and output layers, MLP classifier). Upload digit images "
                "(any size, resized to 8x8 grey) with the digit each one shows.")


@cli_errors
def serve(audits: Path = typer.Option(..., help=f"Folder of published audits: DIR/{MANIFEST}, or "
                                                f"DIR/<name>/{MANIFEST} for each audit."),
          host: str = typer.Option("127.0.0.1", help="Address to listen on (default: this machine only)."),
          port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
          max_files: int = typer.Option(Limits.max_files, min=1, help="Images per request."),
          max_file_mib: float = typer.Option(Limits.max_file_bytes / MIB, help="MiB per image file."),
          max_request_mib: float = typer.Option(Limits.max_request_bytes / MIB, help="MiB per request."),
          max_pixels: int = typer.Option(Limits.max_pixels, min=1, help="Pixels (width x height) per image, "
                                                                          "read from its header before decoding."),
          open_browser: bool = flag("--open", "Open the page in the default web browser.")) -> None:
    """Serve the page where people check whether their images trained an audited model."""
    limits = Limits(max_files=max_files, max_file_bytes=_mib(max_file_mib, "--max-file-mib"),
                    max_request_bytes=_mib(max_request_mib, "--max-request-mib"), max_pixels=max_pixels)
    serve_audits(load_audits(audits), limits, host=host, port=port, open_browser=open_browser)


def _mib(value: float, option: str) -> int:
    if not value > 0:
        raise InputError(f"{option} must be above 0, got {value}")
    return max(1, int(value * MIB))


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
    """Run the web server until Ctrl+C, with every request's files under one temporary folder removed at exit."""
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
    # uvicorn stops gracefully on SIGTERM, then raises the signal again: with Python's default action the
    # process would end there, before the temporary folder is removed. This handler unwinds instead.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    try:
        with tempfile.TemporaryDirectory(prefix="gmint-serve-") as tmp:
            app = create_app(published, limits, tmp_root=Path(tmp))
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
            console.print(f"serving the page at {url} (Ctrl+C stops)", highlight=False)
            if open_browser:
                threading.Timer(1.0, webbrowser.open, args=(url,)).start()
            server.run()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


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
