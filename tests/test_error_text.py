"""The library's errors speak library terms: no command-line option and no `gmint <verb>` command in their text.

The command line names its own options for each `Remedy` (gmint_cli.console.REMEDIES); a web page or a script
calling gmint has other controls, so an option written into a library message would be wrong for them. This scans
the source of gmint/ (every string in a `raise` call, and every Remedy's phrase), so a new message is checked too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from gmint.errors import GmintError, InputError, Remedy
from gmint_cli.app import app
from gmint_cli.console import REMEDIES, explain

LIBRARY = Path(__file__).resolve().parents[1] / "gmint"
FLAG = re.compile(r"--[a-z][a-z-]*")


def command_paths(command: Any) -> list[str]:
    """Every command under `command` as typed after it ("extract", "reference train", ...): the verbs that run,
    not the groups that only hold others."""
    paths: list[str] = []
    for name, sub in getattr(command, "commands", {}).items():
        below = command_paths(sub)
        paths += [f"{name} {path}" for path in below] if below else [name]
    return paths


COMMAND = re.compile(r"\bgmint (?:" + "|".join(sorted(map(re.escape, command_paths(get_command(app))), key=len,
                                                       reverse=True)) + r")\b")


def _strings(node: ast.AST) -> list[str]:
    """The literal text under `node`: string constants, including the fixed parts of f-strings."""
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def error_texts(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of every string a `raise` call is given, and of every member of a `Remedy` enum."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            found += [(node.lineno, text) for text in _strings(node.exc)]
        elif isinstance(node, ast.ClassDef) and node.name == "Remedy":
            found += [(item.lineno, text) for item in node.body if isinstance(item, ast.Assign)
                      for text in _strings(item.value)]
    return found


def command_line_text(text: str) -> str | None:
    """The option or command named in `text`, if any."""
    match = FLAG.search(text) or COMMAND.search(text)
    return match.group(0) if match else None


def test_the_scan_sees_what_it_must_refuse() -> None:
    tree = ast.parse('raise InputError(f"{path} exists; pass --overwrite")\n'
                     'raise NotApplicable("needs stores (`gmint reference extract`)", option="k")\n'
                     'class Remedy(Enum):\n    X = "finish it with gmint extract"\n')
    named = [command_line_text(text) for _, text in error_texts(tree)]
    assert [name for name in named if name] == ["--overwrite", "gmint reference extract", "gmint extract"]
    # Plain words about gmint are library terms, not commands.
    assert command_line_text("is not a gmint reference manifest; this gmint reads checkpoints") is None


@pytest.mark.parametrize("path", sorted(LIBRARY.rglob("*.py")), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_library_errors_name_no_option_or_command(path: Path) -> None:
    offending = [f"{path.relative_to(LIBRARY)}:{line}: {name!r} in {text!r}"
                 for line, text in error_texts(ast.parse(path.read_text(), str(path)))
                 if (name := command_line_text(text))]
    assert not offending, "\n".join(offending)


def options(command: Any) -> set[str]:
    """Every option of `command` and of the commands under it."""
    own = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return own.union(*(options(sub) for sub in getattr(command, "commands", {}).values()))


def test_every_remedy_has_command_line_words_naming_real_options() -> None:
    assert set(REMEDIES) == set(Remedy)
    assert all(words != remedy.value for remedy, words in REMEDIES.items())
    named = {flag for words in REMEDIES.values() for flag in FLAG.findall(words)}
    assert named and named <= options(get_command(app))
    quoted = [f"gmint {text}" for words in REMEDIES.values() for text in re.findall(r"`gmint ([^`]*)`", words)]
    assert quoted and all(COMMAND.match(command) for command in quoted), quoted


def test_a_remedy_is_named_in_library_terms_and_in_the_verbs_words() -> None:
    exc = InputError("out.h5 exists", remedy=Remedy.RESUME_OR_OVERWRITE)
    assert str(exc) == f"out.h5 exists; {Remedy.RESUME_OR_OVERWRITE.value}"
    assert explain(exc) == f"out.h5 exists; {REMEDIES[Remedy.RESUME_OR_OVERWRITE]}"
    overridden = {Remedy.RESUME_OR_OVERWRITE: "choose another --out"}
    assert explain(exc, overridden) == "out.h5 exists; choose another --out"
    assert explain(GmintError("no remedy")) == str(GmintError("no remedy")) == "no remedy"
