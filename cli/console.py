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

from gmint.errors import GmintError, Remedy

# Every remedy the library names, in the words of the command line: the options (or the command, in `backticks`)
# that carry it out. A verb whose option differs names its own with `remedies`.
REMEDIES: Mapping[Remedy, str] = {
    Remedy.RESUME_OR_OVERWRITE: "pass --overwrite to replace it or --resume to continue it",
    Remedy.OVERWRITE: "pass --overwrite to replace it",
    Remedy.REBUILD_STORE: "extract it again with `gmint extract ... --overwrite`",
    Remedy.ANOTHER_STORE_OR_REBUILD: "choose another --out, or pass --overwrite to extract it again in its place",
    Remedy.RESUME_EXTRACTION: "finish it with `gmint extract ... --resume`",
    Remedy.RESUME_TRAINING: "finish it with --resume on the command that trained it before auditing it",
    Remedy.DESCRIBE_MODEL: "describe it once with `gmint model import` (its code, preprocessing, output and classes)",
    Remedy.DATA_ROOT: "pass --data-root or set GMINT_DATA",
    Remedy.RESIZE: "resize them to one size first (this command does not resize)",
    Remedy.TORCHSCRIPT: "pass --torchscript",
    Remedy.TRUST_PICKLE: "pass --trust-pickle only if you trust its source",
    Remedy.NOT_A_PICKLE: "load it without --trust-pickle",
    Remedy.ARCHITECTURE: "pass --arch package.module:factory to build the model",
    Remedy.NAIVE_ENGINE: "use --engine naive for them (or load the model from its Python code with --arch)",
    Remedy.OWN_SPLIT: "use the model's own split, or pass --model-trained-outside-gmint if the model was trained "
                      "outside gmint on this split",
    Remedy.PAPER_PROTOCOL: "or pass --protocol paper",
    Remedy.CONTROL_ROWS: "draw one with `gmint split --control`",
    Remedy.PREDICTED_LABELS: "or label them with the audited model's predictions (--labels predicted)",
    Remedy.TO_GREY: "convert them explicitly with --to-grey (luma) if that is what it was trained on",
    Remedy.SUBSET: "audit a subset of them (--sample N)",
    Remedy.LIST_LAYERS: "see `gmint layers`",
    Remedy.LIST_MODULES: "see `gmint depth --list`",
    Remedy.TRAIN_REFERENCES: "train one with `gmint reference train`",
    Remedy.EXTRACT_REFERENCES: "extract the set's stores with `gmint reference extract`",
    Remedy.MERGE_SHARDS: "merge them with `gmint reference merge FOLDER`",
}
# For verbs that continue a training run from the checkpoint they wrote: they have no option to load anything
# else there, so a file of another kind at --out is only to be left alone.
OWN_CHECKPOINTS: Mapping[Remedy, str] = {
    Remedy.TORCHSCRIPT: "choose another --out",
    Remedy.TRUST_PICKLE: "gmint reads checkpoints of tensors only; choose another --out",
}

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


def explain(exc: GmintError, words: Mapping[Remedy, str] = REMEDIES) -> str:
    """`exc`'s message with its remedy in the command line's words (`words`, else the REMEDIES table's)."""
    if exc.remedy is None:
        return exc.message
    return f"{exc.message}; {words.get(exc.remedy, REMEDIES[exc.remedy])}"


@contextmanager
def remedies(words: Mapping[Remedy, str]) -> Iterator[None]:
    """A verb's own words for the remedies in `words`, for the errors raised inside (where its option differs
    from the REMEDIES table's, or it has none): such an error is raised again with those words in its text."""
    try:
        yield
    except GmintError as exc:
        if exc.remedy not in words:
            raise
        raise type(exc)(explain(exc, words)) from None


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn gmint's user-facing errors, and files the system refuses, into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GmintError as exc:
            print_error(explain(exc))
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
