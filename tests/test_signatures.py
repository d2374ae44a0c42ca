"""Signatures: no library function takes more than a dozen parameters (a frozen settings record does instead)."""

from __future__ import annotations

import ast
from pathlib import Path

import gmint

# The most parameters a library function or method takes, self and cls not counted.
MAX_PARAMETERS = 12
PACKAGE = Path(gmint.__file__).parent


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Every parameter's name: positional, keyword-only, *args and **kwargs, but for self and cls."""
    args = function.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return [name for name in names if name not in ("self", "cls")]


def _too_long(source: str, where: str) -> list[str]:
    """`where:line name (count)` for each function in `source` with more than MAX_PARAMETERS parameters."""
    return [f"{where}:{node.lineno} {node.name} ({len(_parameters(node))})"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and len(_parameters(node)) > MAX_PARAMETERS]


def test_no_library_function_takes_more_than_twelve_parameters() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the walk reads the package, not an empty folder
    found = [hit for path in files
             for hit in _too_long(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))]
    assert not found, f"functions over {MAX_PARAMETERS} parameters (group them in a frozen record): {found}"


def test_the_walk_counts_every_kind_of_parameter_but_self() -> None:
    names = ", ".join(f"a{i}" for i in range(10))
    assert _too_long(f"class C:\n    def m(self, {names}, *, b, c): ...", "x.py") == []  # 12 without self
    assert _too_long(f"def f({names}, /, b, *args, c, **kwargs): ...", "x.py") == ["x.py:1 f (14)"]
    assert _too_long(f"async def g(cls, {names}, b, c, d): ...", "x.py") == ["x.py:1 g (13)"]


# The most lines a module of the library or the command line holds: past it, it holds more than one concern.
MAX_MODULE_LINES = 400
CLI = PACKAGE.parent / "cli"


def test_no_module_of_the_library_or_the_command_line_is_over_400_lines() -> None:
    files = sorted([*PACKAGE.rglob("*.py"), *CLI.rglob("*.py")])
    assert any(p.parent == CLI for p in files)  # the command line is read too, where the checkout has it
    long = [f"{p.relative_to(PACKAGE.parent)} ({n})" for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"
