"""`gmint serve`: the MINT-Demo page over a folder of published audits, on this machine (see
`gmint_cli.serving` for how a server keeps and sweeps its upload folders)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from PIL import Image

from gmint.errors import InputError
from gmint.serve.audits import MANIFEST
from gmint.serve.limits import Limits
from gmint_cli.console import cli_errors
from gmint_cli.options import flag
from gmint_cli.serving import load_audits, serve_audits

MIB = 2**20
# What an operator may set: every bound lets one image through and keeps a request within memory. 0.001 MiB
# (1,049 bytes) holds a small image, such as an 8x8 grey PNG (about 100 bytes), with room for its header; 8x8
# pixels is the smallest input of gmint's models. A request's images are held in memory while they are checked,
# hence 1 GiB at most; PIL's decompression-bomb limit bounds the pixels (`Limits` holds to it too).
FILES_RANGE = (1, 4096)
MIB_RANGE = (0.001, 1024.0)
PIXELS_RANGE = (8 * 8, Image.MAX_IMAGE_PIXELS or 89_478_485)

def _bytes(value: float, option: str) -> int:
    """A size in MiB, within MIB_RANGE, in bytes (inf and nan are refused here: neither is a byte count)."""
    low, high = MIB_RANGE
    bounds = f"a number of MiB from {low:g} to {high:g}"
    if value <= 0:
        raise InputError(f"{option} must be above 0, got {value}: {bounds}")
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(f"{option} must be {bounds}, got {value}")
    return round(value * MIB)


@cli_errors
def serve(audits: Path = typer.Option(..., help=f"Folder of published audits: DIR/{MANIFEST}, or "
                                                f"DIR/<name>/{MANIFEST} for each audit."),
          host: str = typer.Option("127.0.0.1", help="Address to listen on (default: this machine only)."),
          port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
          max_files: int = typer.Option(Limits.max_files, min=FILES_RANGE[0], max=FILES_RANGE[1],
                                        help="Images per request."),
          max_file_mib: float = typer.Option(Limits.max_file_bytes / MIB,
                                             help=f"MiB per image file, {MIB_RANGE[0]:g} to {MIB_RANGE[1]:g}."),
          max_request_mib: float = typer.Option(Limits.max_request_bytes / MIB,
                                                help=f"MiB per request, {MIB_RANGE[0]:g} to {MIB_RANGE[1]:g} "
                                                     "(at least --max-file-mib)."),
          max_pixels: int = typer.Option(Limits.max_pixels, min=PIXELS_RANGE[0], max=PIXELS_RANGE[1],
                                         help="Pixels (width x height) per image, read from its header before "
                                              "decoding."),
          open_browser: bool = flag("--open", "Open the page in the default web browser.")) -> None:
    """Serve the page where people check whether their images trained an audited model."""
    file_bytes, request_bytes = _bytes(max_file_mib, "--max-file-mib"), _bytes(max_request_mib, "--max-request-mib")
    if file_bytes > request_bytes:
        raise InputError(f"--max-file-mib ({max_file_mib:g}) is above --max-request-mib ({max_request_mib:g}); "
                         "no request could carry such a file")
    limits = Limits(max_files=max_files, max_file_bytes=file_bytes, max_request_bytes=request_bytes,
                    max_pixels=max_pixels)
    serve_audits(load_audits(audits), limits, host=host, port=port, open_browser=open_browser)
