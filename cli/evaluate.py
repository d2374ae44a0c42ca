"""`gmint eval`: metrics of a MINT classifier on a store's held-out rows, with baseline and gap."""

from __future__ import annotations

from pathlib import Path

import typer

from gmint.assess.evaluate import evaluate_store, evaluate_with_control
from gmint.assess.report import print_result, write_report
from gmint.mint import TrainedMint
from gmint_cli.console import cli_errors, console, print_json
from gmint_cli.options import flag
from gmint_cli.outputs import check_output


@cli_errors
def evaluate(mint: Path = typer.Argument(..., help="A MINT classifier from `gmint train`."),
             store: Path = typer.Argument(..., help="A complete feature store with held-out rows."),
             report: Path = typer.Option(None, help="Folder for report.json/.md, scores.csv, ROC plots "
                                                    "(default: no report)."),
             negative_control: Path = typer.Option(None, help="Store extracted from a negative-control model "
                                                   "(`gmint audited train --negative-control`) on the same split: "
                                                   "the same recipe is fitted and scored on it (default: none)."),
             overwrite: bool = flag("--overwrite", "Write into an existing, non-empty --report folder."),
             json_out: bool = flag("--json", "Print the result (and the report's files) as JSON instead."),
             n_boot: int = typer.Option(1000, min=1, help="Bootstrap replicates for the 95% intervals."),
             seed: int = typer.Option(0, help="Seed of the bootstrap and of balancing the held-out rows.")) -> None:
    """Evaluate a MINT classifier on held-out rows: accuracy, AUC, TPR at low FPR, with 95% intervals."""
    check_output(report, "--report", folder=True, overwrite=overwrite,
                 inputs={"the classifier": mint, "the store": store, "--negative-control": negative_control})
    classifier = TrainedMint.load(mint)
    result = (evaluate_with_control(classifier, store, negative_control, n_boot=n_boot, seed=seed)
              if negative_control else evaluate_store(classifier, store, n_boot=n_boot, seed=seed))
    written = write_report(result, report) if report else []
    if json_out:
        print_json({**result.to_dict(), **({"report_files": list(map(str, written))} if report else {})})
        return
    print_result(result, console)
    for path in written:
        console.print(f"wrote {path}")
