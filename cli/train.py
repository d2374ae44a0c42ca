"""`gmint train`: fit a MINT classifier on a feature store's auditor's pool."""

from __future__ import annotations

from pathlib import Path

import typer

from gmint.mint import train_mint
from gmint_cli.common import check_output, cli_errors, console, flag, json_object, print_json


@cli_errors
def train(store: Path = typer.Argument(..., help="A complete feature store."),
          setup: str = typer.Option("all", help="all | entry | middle | output | combined | layer names/globs."),
          fraction: str = typer.Option("D100", help="D100 | D10 | D1 of the auditor's pool."),
          kind: str = typer.Option("mlp", help="mlp | cnn (flat features) | logreg | threshold (one signal) | "
                                               "per_class (one classifier per class; options {\"base\": \"mlp\"})"),
          options: str = typer.Option("{}", help='Classifier options as a JSON object, e.g. {"hidden": [256, 64]}.'),
          seed: int = typer.Option(0, help="Seed of the fit (initialisation, validation part, sub-pools)."),
          out: Path = typer.Option(Path("mint.pt"), help="Classifier file to write."),
          overwrite: bool = flag("--overwrite", "Replace an existing --out."),
          json_out: bool = flag("--json", "Print the result as JSON instead.")) -> None:
    """Fit a MINT classifier (member vs external) on the pool rows of a store."""
    check_output(out, "--out", inputs={"the store": store}, overwrite=overwrite)
    mint = train_mint(store, kind=kind, setup=setup, fraction=fraction, seed=seed,
                      options=json_object(options, "--options"))
    mint.save(out)
    r = mint.record
    if json_out:
        print_json({"out": str(out), "kind": kind, "fraction": fraction, "layers": list(mint.spec.layers),
                    "features": sum(mint.spec.dims), "record": r})
        return
    console.print(f"{out}: {kind} on {', '.join(mint.spec.layers)} ({sum(mint.spec.dims)} features), "
                  f"{fraction}: {r['members']} members + {r['external']} external, {r['fit_seconds']} s")
