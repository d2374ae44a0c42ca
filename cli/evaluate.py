"""`gmint eval`: metrics of a MINT classifier on a store's held-out rows, with baseline and gap."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gmint.evaluate import evaluate_store, evaluate_with_control
from gmint.mint import TrainedMint
from gmint.report import print_result, write_report
from gmint_cli.common import cli_errors, console


@cli_errors
def evaluate(mint: Path = typer.Argument(..., help="A MINT classifier from `gmint train`."),
             store: Path = typer.Argument(..., help="A complete feature store with held-out rows."),
             report: Path = typer.Option(None, help="Folder for report.json/.md, scores.csv, ROC plots."),
             negative_control: Path = typer.Option(None, help="Store extracted from a negative-control model "
                                                   "(`gmint audited train --negative-control`) on the same split: "
                                                   "the same recipe is fitted and scored on it."),
             json_out: bool = typer.Option(False, "--json", help="Print the result as JSON instead."),
             n_boot: int = typer.Option(1000, help="Bootstrap replicates for the 95% intervals."),
             seed: int = typer.Option(0)) -> None:
    """Evaluate a MINT classifier on held-out rows: accuracy, AUC, TPR at low FPR, with 95% intervals."""
    classifier = TrainedMint.load(mint)
    result = (evaluate_with_control(classifier, store, negative_control, n_boot=n_boot, seed=seed)
              if negative_control else evaluate_store(classifier, store, n_boot=n_boot, seed=seed))
    if json_out:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "scores"}, indent=2))
    else:
        print_result(result, console)
    if report:
        for path in write_report(result, report):
            console.print(f"wrote {path}")
