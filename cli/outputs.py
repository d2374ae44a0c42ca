"""Outputs, checked before anything is read or written: never over an input, never without --overwrite; and
the set verdict, printed alike by every verb that audits candidates."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gmint.errors import InputError


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
