"""`gmint train`: fit a MINT classifier on a feature store's auditor's pool."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gmint.mint import train_mint
from gmint_cli.common import cli_errors, console


@cli_errors
def train(store: Path = typer.Argument(..., help="A complete feature store."),
          setup: str = typer.Option("all", help="all | entry | middle | output | combined | layer names/globs."),
          fraction: str = typer.Option("D100", help="D100 | D10 | D1 of the auditor's pool."),
          kind: str = typer.Option("mlp", help="mlp | cnn (flat features) | logreg | threshold (one signal) | "
                                               "per_class (one classifier per class; options {\"base\": \"mlp\"})"),
          options: str = typer.Option("{}", help='Classifier options as JSON, e.g. {"hidden": [256, 64]}.'),
          seed: int = typer.Option(0),
          out: Path = typer.Option(Path("mint.pt"), help="Classifier file to write.")) -> None:
    """Fit a MINT classifier (member vs external) on the pool rows of a store."""
    mint = train_mint(store, kind=kind, setup=setup, fraction=fraction, seed=seed, options=json.loads(options))
    mint.save(out)
    r = mint.record
    console.print(f"{out}: {kind} on {', '.join(mint.spec.layers)} ({sum(mint.spec.dims)} features), "
                  f"{fraction}: {r['members']} members + {r['external']} external, {r['fit_seconds']} s")
