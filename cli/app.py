"""The `gmint` command: a thin typer shell over the library; each verb lives in its own module.

A verb's module is imported only when that verb runs (or shows its own help): most import torch and the
library's stages, which take seconds to load, and `gmint --help` or a typo should not wait for them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand, TyperGroup

from gmint.version import __version__
from gmint_cli.console import one_line_warnings, print_error

if TYPE_CHECKING:  # the installed typer's (vendored) click, for its types only: the module is private
    from typer._click import Command, Context
    from typer._click.exceptions import ClickException
else:  # click's exception family, reached through typer's public BadParameter (typer ≥ 0.26 vendors click)
    ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


@dataclass(frozen=True)
class Verb:
    """One verb of `gmint`: where its code is, and the line `gmint --help` shows for it without loading it."""

    module: str     # the module under gmint_cli
    attribute: str  # the command function, or the typer app of a verb with sub-verbs (`app`)
    help: str       # the command function's docstring summary, or the help of a verb with sub-verbs

    def command(self, name: str) -> Command:
        """The verb as click runs it, built by typer exactly as if it were registered on the root app."""
        found = getattr(import_module(f"gmint_cli.{self.module}"), self.attribute)
        holder = typer.Typer()
        if isinstance(found, typer.Typer):
            holder.add_typer(found, name=name, help=self.help)
        else:
            holder.command(name)(found)
        return typer.main.get_group(holder).commands[name]


# `gmint --help` lists the verbs in this order.
VERBS = {
    "demo": Verb("demo", "demo", "Run the whole audit on scikit-learn's digits: split, train, extract, fit MINT, "
                                 "evaluate."),
    "audit": Verb("audit", "audit", "Run a whole audit from one configuration: split, models, Weight Modifiers, "
                                    "MINT classifiers, the loss threshold, the negative control, candidates; write "
                                    "report.json and a self-contained report.html."),
    "split": Verb("split", "split", "Draw a seeded, class-balanced membership split (members / external, pool / "
                                    "holdout), or make one from your own lists of members and external samples."),
    "extract": Verb("extract", "extract", "Compute per-sample Weight Modifiers of the chosen layers and stream them "
                                          "to an HDF5 store."),
    "layers": Verb("extract", "list_layers", "List the model's weight layers, in the order `extract` sees them, and "
                                             "which presets pick them."),
    "train": Verb("train", "train", "Fit a MINT classifier (member vs external) on the pool rows of a store."),
    "eval": Verb("evaluate", "evaluate", "Evaluate a MINT classifier on held-out rows: accuracy, AUC, TPR at low "
                                         "FPR, with 95% intervals."),
    "info": Verb("info", "info", "Show a store's rows, layers and provenance (or verify it)."),
    "score": Verb("score", "score", "Score candidate samples and test \"these samples were not in training\" as a "
                                    "set."),
    "depth": Verb("depth", "depth", "Sweep the model's blocks: activation and gradient MINT per depth beside the "
                                    "loss threshold, with a plot."),
    "serve": Verb("serve", "serve", "Serve the page where people check whether their images trained an audited "
                                    "model."),
    "audited": Verb("audited", "app", "Train audited models for experiments."),
    "model": Verb("model", "app", "Models trained outside gmint: describe one once (code, preprocessing, output, "
                                  "classes), then audit it as any other."),
    "amint": Verb("amint", "app", "Active MINT: train an audited model with its own MINT head."),
    "reference": Verb("reference", "app", "Reference models: LiRA, RMIA and calibrated gMINT side by side."),
}


class _LoadedVerbs(MutableMapping[str, "Command"]):
    """The root group's verbs by name, each built (and kept) the first time it is looked up, so whoever walks
    the group's commands (click, the tests of every verb's options) sees every verb, and only pays for those
    it opens."""

    def __init__(self) -> None:
        self._built: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            self._built[name] = VERBS[name].command(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(VERBS)

    def __len__(self) -> int:
        return len(VERBS)


class _Verbs(TyperGroup):
    """The root group: verbs are described from `VERBS` and loaded only when one is resolved to run.

    A usage mistake (unknown option, bad or missing value) is reported like every other bad input: one line
    on stderr and exit code 1, instead of click's usage block, error box and exit code 2.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LoadedVerbs()

    def list_commands(self, ctx: Context) -> list[str]:
        """Every verb, in `VERBS` order."""
        return list(VERBS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        """A verb as the root help lists it (its name and help line), without importing its module."""
        verb = VERBS.get(cmd_name)
        return TyperCommand(cmd_name, help=verb.help) if verb else None

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        """The verb the command line names, loaded: to run it, show its help or complete its options."""
        name, _, rest = super().resolve_command(ctx, args)
        return name, self.commands[name] if name else None, rest

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


app = typer.Typer(cls=_Verbs, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Membership Inference Test from per-sample Weight Modifiers (gMINT): was this "
                       "data used to train this image model?")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gmint {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="",
                                       help="Print the version and exit.")) -> None:
    """Membership Inference Test from per-sample Weight Modifiers."""
    from gmint.threads import fit_threads_to_cores  # imports torch: only once a verb runs, never for --help

    fit_threads_to_cores()


def main() -> None:
    """The `gmint` console script."""
    app()
