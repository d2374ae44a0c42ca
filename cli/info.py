"""`gmint info`: describe a feature store (rows, layers, provenance, completeness, who is writing it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from gmint.features.integrity import verify
from gmint.features.store import FeatureStore
from gmint_cli.console import cli_errors, console, print_json
from gmint_cli.options import flag


@cli_errors
def info(store: Path = typer.Argument(..., help="A feature store."),
         check: bool = flag("--verify", "Check schema, row counts, NaN/Inf, provenance and completeness; exit 1 "
                                        "on any problem."),
         json_out: bool = flag("--json", "Print the description (with --verify: the problems) as JSON instead."),
         ) -> None:
    """Show a store's rows, layers and provenance (or verify it)."""
    if check:
        problems = verify(store)
        if json_out:
            print_json({"store": str(store), "problems": problems})
        else:
            for problem in problems:
                console.print(f"[red]✗[/] {escape(problem)}", highlight=False)
            if not problems:
                console.print(f"[green]✓[/] {escape(str(store))}: schema, row counts, values, provenance and "
                              "completeness check out")
        if problems:
            raise typer.Exit(1)
        return
    with FeatureStore.open(store) as fs:
        fs.require_sound()  # its rows and layers are not what it says: nothing to describe
        about = describe(fs)
    if json_out:
        print_json(about)
        return
    pid = about["writer_pid"]
    state = "complete" if about["complete"] else f"INCOMPLETE{f', being written by PID {pid}' if pid else ''}"
    table = Table(title=f"{escape(str(store))} — {state}", show_header=False)
    table.add_row("rows", f"{about['rows']} ({about['rows_written']} written)")
    table.add_row("members / external", f"{about['members']} / {about['external']}")
    table.add_row("pool / holdout", f"{about['pool']} / {about['holdout']}")
    table.add_row("groups", str(about["groups"]) if about["groups"] else "none")  # e.g. GTSRB tracks
    for feature, width in about["layers"].items():  # the store's feature names (datasets) → their widths
        table.add_row(f"layer {escape(feature)}", f"{width} features")
    for key, value in about["provenance"].items():
        if key not in ("layer_presets", "layers"):
            table.add_row(escape(key), escape(str(value)))
    console.print(table)
    if pid:  # continuing it now (--resume) would be refused: there is one writer per store
        console.print(f"being written by PID {pid}: {about['rows_written']} of {about['rows']} rows so far")
    elif not about["complete"]:
        console.print("incomplete: continue it with `gmint extract ... --resume`")


def describe(fs: FeatureStore) -> dict[str, Any]:
    """What `info` shows, as plain values (the --json output); `layers` maps feature names to widths."""
    prov = fs.provenance
    membership, role, group = fs.column("membership"), fs.column("role"), fs.column("group")
    return {"store": str(fs.path), "complete": fs.complete, "writer_pid": None if fs.complete else fs.writer,
            "rows": len(fs), "rows_written": prov["rows_written"],
            "members": int((membership == 1).sum()), "external": int((membership == 0).sum()),
            "unknown": int((membership == -1).sum()),
            "pool": int((role == 0).sum()), "holdout": int((role == 1).sum()),
            "groups": len(np.unique(group[group >= 0])),
            "layers": fs.dims,
            "provenance": {k: prov[k] for k in sorted(prov) if k not in ("rows_written", "complete")}}
