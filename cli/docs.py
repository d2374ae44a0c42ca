"""The CLI reference page, generated from the typer app itself so that it can never drift from the commands."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

# typer vendors its own click: commands and parameters are read by duck typing, never by isinstance against
# the standalone click package.
Command = Any
Parameter = Any


def commands(app: typer.Typer) -> Iterator[tuple[str, Command]]:
    """Every command of `app` with its full name (`gmint reference train`), groups before their commands."""

    def walk(name: str, command: Command) -> Iterator[tuple[str, Command]]:
        yield name, command
        if hasattr(command, "list_commands"):
            context = command.context_class(command, info_name=name)
            for sub in command.list_commands(context):
                child = command.get_command(context, sub)
                if child is not None and not child.hidden:
                    yield from walk(f"{name} {sub}", child)

    yield from walk("gmint", typer.main.get_command(app))


def options(command: Command) -> Iterator[Parameter]:
    """The command's visible parameters, arguments first, in declaration order."""
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    yield from (p for p in params if p.param_type_name == "argument")
    yield from (p for p in params if not p.param_type_name == "argument")


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _parameter_row(param: Parameter) -> str:
    if param.param_type_name == "argument":
        name = f"`{(param.metavar or param.name).upper()}`"
        help_text = getattr(param, "help", None) or ""
    else:
        names = list(param.opts) + list(param.secondary_opts)
        name = ", ".join(f"`{n}`" for n in names)
        help_text = getattr(param, "help", None) or ""
    default = param.default if not callable(param.default) else None
    hidden = default is None or default is False or default in ((), []) or getattr(param, "show_default", True) is False
    shown = "" if hidden else f"`{default}`"
    return f"| {name} | {_cell(help_text)} | {shown} |"


def cli_reference(app: typer.Typer) -> str:
    """Markdown for every command of `app`: its usage line, its help and a table of its arguments and options."""
    out = ["# Command-line reference", "",
           "Generated from the `gmint` command itself when the site is built; `gmint VERB --help` prints the same.",
           ""]
    for name, command in commands(app):
        depth = name.count(" ")
        out.append(f"{'#' * min(2 + depth, 4)} `{name}`" if depth else "## `gmint`")
        out.append("")
        context = command.context_class(command, info_name=name)
        out += ["```", f"{name} {' '.join(command.collect_usage_pieces(context))}", "```", ""]
        if command.help:
            out += [" ".join(command.help.split()), ""]
        params = list(options(command))
        if params:
            out += ["| argument or option | what it does | default |", "|---|---|---|"]
            out += [_parameter_row(p) for p in params]
            out.append("")
    return "\n".join(out)
