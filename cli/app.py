"""The `gmint` command: a thin typer shell over the library; each verb lives in its own module."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

import gmint
from gmint.threads import fit_threads_to_cores
from gmint_cli import amint, audited, demo, depth, evaluate, extract, info, model, reference, score, serve, split, train
from gmint_cli.console import one_line_warnings, print_error

if TYPE_CHECKING:  # the installed typer's (vendored) click, for its types only: the module is private
    from typer._click.exceptions import ClickException
else:  # click's exception family, reached through typer's public BadParameter (typer ≥ 0.26 vendors click)
    ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineErrors(TyperGroup):
    """A usage mistake (unknown option, bad or missing value) is reported like every other bad input: one
    line on stderr and exit code 1, instead of click's usage block, error box and exit code 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        """Run the command line `args` (default: sys.argv); in standalone mode, exit with its code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            with one_line_warnings():
                code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already
                sys.exit(exc.exit_code)
            print_error(exc.format_message())
            sys.exit(1)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # a command returns None; typer.Exit(n) returns n


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Membership Inference Test from per-sample Weight Modifiers (gMINT): was this "
                       "data used to train this image model?")
app.command("demo")(demo.demo)
app.command("split")(split.split)
app.add_typer(audited.app, name="audited", help="Train audited models for experiments.")
app.add_typer(model.app, name="model", help="Models trained outside gmint: describe one once (code, preprocessing, "
              "output, classes), then audit it as any other.")
app.command("extract")(extract.extract)
app.command("layers")(extract.list_layers)
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("info")(info.info)
app.command("score")(score.score)
app.command("depth")(depth.depth)
app.command("serve")(serve.serve)
app.add_typer(amint.app, name="amint", help="Active MINT: train an audited model with its own MINT head.")
app.add_typer(reference.app, name="reference", help="Reference models: LiRA, RMIA and calibrated gMINT "
              "side by side.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gmint {gmint.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="",
                                       help="Print the version and exit.")) -> None:
    """Membership Inference Test from per-sample Weight Modifiers."""


def main() -> None:
    """The `gmint` console script."""
    fit_threads_to_cores()
    app()
