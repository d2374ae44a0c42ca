"""How every verb speaks: one-line errors and warnings, consoles that never cut a line, JSON, progress."""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from gmint.errors import DESCRIBE_HINT, ROOT_HINT, GmintError

# Remedies the library names in its own terms, and the command that carries each out.
HINTS = {DESCRIBE_HINT: "describe it once with `gmint model import` (its code, preprocessing, output and classes)",
         ROOT_HINT: "pass --data-root or set GMINT_DATA"}

P = ParamSpec("P")
R = TypeVar("R")
# Output into a pipe or a file is read by programs and editors: lines are never wrapped or cut to a width.
UNBOUNDED = 100_000


class _Console(Console):
    """A rich console that fits the terminal it prints to, and nothing else: into a pipe or a file, soft-wrapped
    text and tables keep their whole lines (rich would otherwise wrap and cut them at 80 columns)."""

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size; unbounded width when printing into a pipe or a file."""
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNBOUNDED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:  # rich's `size` is read-write; so stays this one
        self.width, self.height = new_size


console = _Console(soft_wrap=True)
err_console = _Console(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    """One red line on stderr: how every user mistake is reported (brackets in it are text, not markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings (an engine passed over, a layer left to vmap, a degenerate reduction) as one yellow line on
    stderr each, without Python's file:line and source echo; the previous display is restored after."""
    before = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        err_console.print(f"[yellow]warning:[/] {escape(' '.join(str(message).split()))}", highlight=False)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = before


@contextmanager
def option_hints(hints: Mapping[str, str]) -> Iterator[None]:
    """Name a verb's own options where the library's errors name a remedy in library terms: each phrase of
    `hints` found in an error is replaced by the option that carries it out (as HINTS does for every verb)."""
    try:
        yield
    except GmintError as exc:
        text = str(exc)
        for phrase, option in hints.items():
            text = text.replace(phrase, option)
        if text == str(exc):
            raise
        raise type(exc)(text) from None


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn gmint's user-facing errors, and files the system refuses, into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with option_hints(HINTS):
                return fn(*args, **kwargs)
        except GmintError as exc:
            print_error(str(exc))
        except OSError as exc:  # disk full, permissions, a path the checks could not foresee
            print_error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        raise typer.Exit(1)

    return wrapper


def print_json(payload: object) -> None:
    """`--json`: the result as JSON, and nothing else, on stdout."""
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def show_progress() -> bool:
    """Progress bars unless GMINT_NO_PROGRESS is set (e.g. in logs of batch jobs)."""
    return not os.environ.get("GMINT_NO_PROGRESS")
