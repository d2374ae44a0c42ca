"""What every verb shares: one-line errors for user mistakes, the console, loading helpers."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console

from gmint.data.base import ImageSet
from gmint.data.readers import load_dataset
from gmint.errors import GmintError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., object])


def cli_errors(fn: F) -> F:
    """Turn gmint's user-facing errors into one red line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except GmintError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def show_progress() -> bool:
    """Progress bars unless GMINT_NO_PROGRESS is set (e.g. in logs of batch jobs)."""
    return not os.environ.get("GMINT_NO_PROGRESS")


def load_data(name: str, root: Path | None) -> ImageSet:
    """A dataset by name from the data root (digits needs none), decoded once and cached."""
    return load_dataset(name, root)
