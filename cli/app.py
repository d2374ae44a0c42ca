"""The `gmint` command: a thin typer shell over the library; each verb lives in its own module."""

from __future__ import annotations

import typer

import gmint
from gmint_cli import audited, demo, evaluate, extract, info, score, split, train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Membership Inference Test from per-sample Weight Modifiers (gMINT): was this "
                       "data used to train this image model?")
app.command("demo")(demo.demo)
app.command("split")(split.split)
app.add_typer(audited.app, name="audited", help="Train audited models for experiments.")
app.command("extract")(extract.extract)
app.command("layers")(extract.layers)
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("info")(info.info)
app.command("score")(score.score)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gmint {gmint.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Membership Inference Test from per-sample Weight Modifiers."""


def main() -> None:
    app()
