"""`gmint audit CONFIG`: the whole audit of one model, from one configuration file, into one report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from gmint.errors import InputError
from gmint_cli.console import cli_errors, console, show_progress
from gmint_cli.options import flag


@cli_errors
def audit(config: Path = typer.Argument(None, help="The audit's configuration (TOML); `--describe` lists every "
                                                   "setting.", show_default=False),
          out: Path = typer.Option(None, help="The audit's folder (default: the configuration's `out`, relative to "
                                              "the configuration file). Run again, it resumes."),
          describe: bool = flag("--describe", "Print every setting with its default and meaning, as a TOML file "
                                              "to start from, and exit.")) -> None:
    """Run a whole audit from one configuration: split, models, Weight Modifiers, MINT classifiers, baselines,
    negative control, candidates; write report.json and a self-contained report.html."""
    from gmint.audit.config import describe as describe_config
    from gmint.audit.config import load_config, resolve

    if describe:
        typer.echo(describe_config(), nl=False)
        return
    if config is None:
        raise InputError("give the audit's configuration file (`gmint audit --describe` prints one to start from)")
    settings, base = load_config(config)
    folder = out if out is not None else resolve(base, settings.out)
    assert folder is not None
    run_and_report(settings, base, folder, config.read_text(encoding="utf-8"))


def run_and_report(settings: object, base: Path, folder: Path, text: str) -> None:
    """Run the audit, print its comparison and headline, and write its report (shared with `gmint demo`)."""
    from gmint.audit.report import comparison_rows, comparison_table, write_report
    from gmint.audit.run import run_audit

    run = run_audit(settings, base, folder, config_text=text, show_progress=show_progress(),  # type: ignore[arg-type]
                    on_step=lambda line: console.print(f"[dim]{escape(line)}[/]"))
    console.print(comparison_table(comparison_rows(run)))
    json_path, html = write_report(run, folder, config_text=text)
    console.print(f"Report: {html} (and {json_path.name})")
