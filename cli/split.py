"""`gmint split`: draw a seeded membership split and save its manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from gmint.data.split import make_split
from gmint_cli.common import cli_errors, console, load_data


def parse_size(text: str) -> float | int:
    """'0.5' → fraction, '25000' → count."""
    value = float(text)
    return value if value <= 1.0 else int(value)


@cli_errors
def split(data: str = typer.Option("digits", help="Dataset name (digits, mnist, cifar10, gtsrb, ...)."),
          data_root: Path = typer.Option(None, envvar="GMINT_DATA", help="Folder holding the datasets."),
          members: str = typer.Option("0.5", help="Members: fraction of the train part or a count."),
          external: str = typer.Option("0.5", help="External: fraction of the train part or a count."),
          holdout: float = typer.Option(0.5, help="Fraction of the smaller side held out for evaluation."),
          control: str = typer.Option("0", help="Rows reserved for a negative-control model (fraction or count)."),
          protocol: str = typer.Option("grouped", help="paper | grouped (by track where data has groups)."),
          seed: int = typer.Option(0, help="Seed of the split."),
          out: Path = typer.Option(Path("split.json"), help="Manifest to write.")) -> None:
    """Draw a seeded, class-balanced membership split (members / external, pool / holdout)."""
    images = load_data(data, data_root)
    manifest = make_split(images, members=parse_size(members), external=parse_size(external),
                          holdout=holdout, control=parse_size(control), protocol=protocol, seed=seed)
    manifest.save(out)
    console.print(f"{out}: {len(manifest.members)} members, {len(manifest.external)} external, "
                  f"{len(manifest.control)} control; pool "
                  f"{len(manifest.pool)}, holdout {len(manifest.holdout)}; sha256 {manifest.sha256[:12]}")
