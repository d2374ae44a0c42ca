"""`gmint audit CONFIG`: the whole audit of one model, from one configuration file, into one report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from gmint.errors import InputError
from gmint_cli.console import cli_errors, console, show_progress
from gmint_cli.options import flag


@cli_errors
def audit(config: Path = typer.Argument(None, help="The audit's configuration (TOML); default: none, for --describe, "
                                                   "which prints one with every setting.", show_default=False),
          out: Path = typer.Option(None, help="The audit's folder (default: the configuration's `out`, relative to "
                                              "the configuration file). Run again, it resumes."),
          overwrite: bool = flag("--overwrite", "Write into a folder that holds other files or another "
                                                "configuration's audit (what a run of the same settings left there "
                                                "is reused)."),
          describe: bool = flag("--describe", "Print every setting with its default and meaning, as a TOML file "
                                              "to start from, and exit.")) -> None:
    """Run a whole audit from one configuration: split, models, Weight Modifiers, MINT classifiers, the loss
    threshold, the negative control, candidates; write report.json and a self-contained report.html."""
    from gmint.audit.config import describe as describe_config
    from gmint.audit.config import load_config, resolve
    from gmint.audit.report import comparison_rows, comparison_table, write_report
    from gmint.audit.run import run_audit

    if describe:
        typer.echo(describe_config(), nl=False)
        return
    if config is None:
        raise InputError("give the audit's configuration file (--describe prints one to start from)")
    settings, base = load_config(config)
    folder = out if out is not None else resolve(base, settings.out)
    if folder is None:
        raise InputError(f"{config} names no output folder (its `out` setting is empty); give one with --out")
    text = config.read_text(encoding="utf-8")
    run = run_audit(settings, base, folder, config_text=text, overwrite=overwrite, show_progress=show_progress(),
                    on_step=lambda line: console.print(f"[dim]{escape(line)}[/]"))
    console.print(comparison_table(comparison_rows(run)))
    json_path, html = write_report(run, folder, config_text=text)
    console.print(f"Report: {html} (and {json_path.name})")
