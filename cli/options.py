"""Option helpers every verb shares: choices from registries, flags, checked numbers, devices, JSON options,
and the options several verbs declare alike (declared here once, so they read the same in every --help)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import torch
import typer

from gmint.errors import InputError

DATA_ROOT_HELP = "Folder holding the datasets (default: $GMINT_DATA; digits needs none)."
# The attacks `gmint reference attack` runs, and `gmint eval --references` shows, when none are named.
DEFAULT_ATTACKS = ("loss", "gmint", "negative-control", "lira-offline", "lira-offline-global", "rmia",
                   "gmint-calibrated", "gmint-calibrated-norms", "gmint-concat")


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


def data_root_option(help: str = DATA_ROOT_HELP) -> Any:
    """--data-root, from $GMINT_DATA where not given; `help` says what the verb reads there, if not datasets."""
    return typer.Option(None, envvar="GMINT_DATA", help=help)


def overwrite_flag() -> Any:
    """--overwrite, for a verb whose output is the file --out."""
    return flag("--overwrite", "Replace an existing --out.")


def json_flag() -> Any:
    """--json, for a verb that prints a result."""
    return flag("--json", "Print the result as JSON instead.")


def json_object(text: str, option: str) -> dict[str, Any]:
    """The JSON object given to an option such as --options, or one line saying what is wrong with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{option} is not valid JSON ({exc.msg} at character {exc.pos + 1}): {text}") from None
    if not isinstance(value, dict):
        raise InputError(f"{option} must be a JSON object such as {{\"key\": 1}}, got {text}")
    return value
