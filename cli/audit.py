"""`gmint audit CONFIG`: the whole audit of one model, from one configuration file, into one report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from gmint.errors import InputError, Remedy
from gmint_cli.console import REMEDIES, cli_errors, console, remedies, show_progress
from gmint_cli.options import flag

# The remedies the stages name, in the words of the configuration: this command has no options for the data, the
# model, the split or the candidates. A model file gmint cannot read as a checkpoint is described once instead
# (`gmint model import` reads TorchScript, pickled modules and state dicts).
AUDIT_SETTINGS = {
    Remedy.DATA_ROOT: "set root in [data] or GMINT_DATA",
    Remedy.TORCHSCRIPT: REMEDIES[Remedy.DESCRIBE_MODEL],
    Remedy.TRUST_PICKLE: REMEDIES[Remedy.DESCRIBE_MODEL],
    Remedy.ARCHITECTURE: REMEDIES[Remedy.DESCRIBE_MODEL],
    Remedy.OWN_SPLIT: "use the model's own split, or set trained_outside = true in [model] if the model was "
                      "trained outside gmint on this split",
    Remedy.PAPER_PROTOCOL: "or set protocol = \"paper\" in [split]",
    Remedy.PREDICTED_LABELS: "or label them with the audited model's predictions (labels = \"predicted\" in "
                             "[candidates])",
    Remedy.TO_GREY: "convert them to greyscale first if that is what it was trained on",
    Remedy.SUBSET: "score fewer of them (a subset of the candidates folder)",
    Remedy.NAIVE_ENGINE: "set engine = \"naive\" in [features]",
    Remedy.REBUILD_STORE: "remove it and run the audit again, which extracts it anew",
    Remedy.ANOTHER_STORE_OR_REBUILD: "remove it and run the audit again, which extracts it anew",
}


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
    with remedies(AUDIT_SETTINGS):
        run = run_audit(settings, base, folder, config_text=text, overwrite=overwrite, show_progress=show_progress(),
                        on_step=lambda line: console.print(f"[dim]{escape(line)}[/]"))
    console.print(comparison_table(comparison_rows(run)))
    json_path, html = write_report(run, folder, config_text=text)
    console.print(f"Report: {html} (and {json_path.name})")
