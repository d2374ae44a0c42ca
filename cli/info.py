"""`gmint info`: describe a feature store (rows, layers, provenance, completeness)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gmint.store import FeatureStore, verify
from gmint_cli.common import cli_errors, console


@cli_errors
def info(store: Path = typer.Argument(..., help="A feature store."),
         check: bool = typer.Option(False, "--verify", help="Check schema, row counts, NaN/Inf, provenance "
                                    "and completeness; exit 1 on any problem.")) -> None:
    """Show a store's rows, layers and provenance (or verify it)."""
    if check:
        problems = verify(store)
        for problem in problems:
            console.print(f"[red]✗[/] {problem}", highlight=False)
        if problems:
            raise typer.Exit(1)
        console.print(f"[green]✓[/] {store}: schema, row counts, values, provenance and completeness check out")
        return
    with FeatureStore.open(store) as fs:
        prov = fs.provenance
        membership, role = fs.column("membership"), fs.column("role")
        table = Table(title=f"{store} — {'complete' if fs.complete else 'INCOMPLETE'}", show_header=False)
        table.add_row("rows", f"{len(fs)} ({prov['rows_written']} written)")
        table.add_row("members / external", f"{int((membership == 1).sum())} / {int((membership == 0).sum())}")
        table.add_row("pool / holdout", f"{int((role == 0).sum())} / {int((role == 1).sum())}")
        for name, d in fs.dims.items():
            table.add_row(f"layer {name}", f"{d} features")
        for key in sorted(prov):
            if key not in ("rows_written", "complete", "layer_presets", "layers"):
                table.add_row(key, str(prov[key]))
        console.print(table)
        if not fs.complete:
            console.print("incomplete: continue it with `gmint extract ... --resume`")
