"""What every verb shares: one-line errors for user mistakes, the consoles, option checks, output guards."""

from __future__ import annotations

import functools
import inspect
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch
import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from gmint.data.base import DATASETS, ImageSet
from gmint.data.readers import load_dataset
from gmint.errors import GmintError, InputError
from gmint.models.io import AuditedModel, load_audited

P = ParamSpec("P")
R = TypeVar("R")
# Output into a pipe or a file is read by programs and editors: lines are never wrapped or cut to a width.
UNBOUNDED = 100_000
# The image readers' hint for folders of mixed sizes; each verb rewrites it to name its own option.
READER_SIZE_HINT = "give a size N to resize every image to NxN"


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


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn gmint's user-facing errors, and files the system refuses, into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
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


# ---------------------------------------------------------------------------------------------------------
# Options


def choices(names: Iterable[str]) -> str:
    """`a | b | c`: the values an option takes, for its --help, from the registry (or tuple) that defines them."""
    return " | ".join(names)


def flag(name: str, help: str) -> Any:
    """An on/off switch, off by default, shown in --help as a flag rather than an option taking a value."""
    return typer.Option(False, name, help=help, metavar="")


def positive(value: float | None) -> float | None:
    """Typer callback for a float that must be above 0 (typer's `min=` includes its bound)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be greater than 0, got {value}")
    return value


def check_device(value: str) -> str:
    """Typer callback: a torch device this machine has, refused before anything is loaded."""
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise typer.BadParameter(f"'{value}' is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise typer.BadParameter(f"'{value}': torch {torch.__version__} sees no CUDA GPU here; use cpu")
        if device.index is not None and device.index >= count:
            raise typer.BadParameter(f"'{value}': there {'is' if count == 1 else 'are'} only {count} CUDA GPU"
                                     f"{'' if count == 1 else 's'} (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise typer.BadParameter(f"'{value}': torch sees no Apple GPU (mps) here; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise typer.BadParameter(f"'{value}': gmint runs on cpu, cuda or mps")
    return value


def device_option() -> Any:
    """--device, checked when the command line is read."""
    return typer.Option("cpu", callback=check_device, help="Where the model runs: cpu, cuda, cuda:N or mps.")


def json_object(text: str, option: str) -> dict[str, Any]:
    """The JSON object given to an option such as --options, or one line saying what is wrong with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{option} is not valid JSON ({exc.msg} at character {exc.pos + 1}): {text}") from None
    if not isinstance(value, dict):
        raise InputError(f"{option} must be a JSON object such as {{\"key\": 1}}, got {text}")
    return value


# ---------------------------------------------------------------------------------------------------------
# Outputs: checked before anything is read or written


def check_output(path: Path | None, option: str, *, inputs: Mapping[str, Path | None] | None = None,
                 overwrite: bool = False, resume: bool | None = None, folder: bool = False,
                 replaceable: bool = True) -> None:
    """Refuse an output that would replace something without --overwrite, replace one of the verb's own
    inputs (even with --overwrite), or land where nothing can be written.

    Args:
        path: the output (None: the verb writes none this time).
        option: the option naming it, for the message (e.g. "--out").
        inputs: label → path of everything the verb reads (e.g. {"--model": ..., "the store": ...}).
        overwrite: whether --overwrite was given.
        resume: whether --resume was given; None for verbs without --resume.
        folder: the output is a folder the verb writes files into (an existing non-empty one counts as
            existing; an input inside it counts as overwritten).
        replaceable: False for an output that must be a new file whatever the flags.
    """
    if path is None:
        return
    where = f"{option} {path}"
    if resume and overwrite:
        raise InputError(f"--resume continues {where}, --overwrite replaces it: pass one of them")
    for label, source in (inputs or {}).items():
        if source is not None and _same(path, source):
            raise InputError(f"{where} would write over {label}, which this command reads; choose another {option}")
        if source is not None and folder and _inside(source, path):
            raise InputError(f"{where} holds {label} ({source}), which this command reads; choose another {option}")
    if path.is_dir() and not folder:
        raise InputError(f"{where} is a folder; give a file name")
    if path.exists() and folder and not path.is_dir():
        raise InputError(f"{where} is a file; give a folder")
    exists = path.is_file() or (folder and path.is_dir() and any(path.iterdir()))
    if exists and not resume and not (overwrite and replaceable):
        hints = ([f"pass --overwrite to {'write into' if folder else 'replace'} it"] if replaceable
                 else ["give a new file"]) + (["--resume to continue it"] if resume is not None else [])
        raise InputError(f"{where} exists{' and is not empty' if folder else ''}; {' or '.join(hints)}")
    parent = path if folder else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {where}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {where}: no permission to write in {parent}")


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links and relative spellings included)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


# ---------------------------------------------------------------------------------------------------------
# Inputs

MODEL_HELP = "Audited model: a gmint checkpoint, a state dict (with --arch) or TorchScript (--torchscript)."
ARCH_HELP = "package.module:factory building the model for a state dict (default: the checkpoint's own)."
TORCHSCRIPT_HELP = "--model is a TorchScript file."
TRUST_PICKLE_HELP = "Allow a pickled full module (loading it runs its code!)."


def load_model(model: Path, arch: str | None, torchscript: bool, trust_pickle: bool) -> AuditedModel:
    """The audited model as every verb that reads one loads it (--model, --arch, --torchscript, --trust-pickle)."""
    return load_audited(model, arch=arch, torchscript=torchscript, trust_pickle=trust_pickle)


def load_data(name: str, root: Path | None, *, size: int | None = None, size_option: str | None = None) -> ImageSet:
    """A dataset by name from the data root (digits needs none), decoded once and cached.

    Args:
        name: a dataset in `DATASETS`.
        root: the data root (None: $GMINT_DATA's, or none for datasets that need none).
        size: resize every image to size x size while reading, for readers that can (image folders,
            GTSRB); other datasets keep their size (the model's transform resizes them).
        size_option: the verb's option giving `size`, named when a folder of mixed sizes needs one.
    """
    with size_hint(size_option):
        if size is not None and "size" in _reader_options(name):
            return load_dataset(name, root, size=size)
        return load_dataset(name, root)


def _reader_options(name: str) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(DATASETS.get(name)).parameters)
    except GmintError:
        return ()  # an unknown name: load_dataset says so, listing the known ones


@contextmanager
def size_hint(option: str | None) -> Iterator[None]:
    """Name the verb's own option (or say what to do where it has none) when images of mixed sizes are read."""
    try:
        yield
    except InputError as exc:
        if READER_SIZE_HINT not in str(exc):
            raise
        hint = (f"pass {option} N to resize every image to NxN" if option
                else "resize them to one size first (this command does not resize)")
        raise InputError(str(exc).replace(READER_SIZE_HINT, hint)) from None
