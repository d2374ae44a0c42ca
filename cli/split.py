"""`gmint split`: draw a seeded membership split and save its manifest."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from gmint.data.base import DATASETS
from gmint.data.split import PROTOCOLS, make_split
from gmint.errors import InputError
from gmint_cli.console import cli_errors, console, print_json
from gmint_cli.inputs import load_data
from gmint_cli.options import choices, flag
from gmint_cli.outputs import check_output

SIZE_HELP = "a fraction in (0, 1) of the train part, e.g. 0.4, or a whole number of rows, e.g. 900"


def parse_size(text: str, option: str) -> float | int:
    """'0.4' → a fraction of the train part; '900' → a count of rows. '2.0' or '1.0' could mean either (the
    library reads a float up to 1.0 as a fraction), so a number is a count only when written as a whole number."""
    if re.fullmatch(r"\s*\d+\s*", text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if 0.0 < value < 1.0:
        return value
    raise InputError(f"{option} must be {SIZE_HELP}; got '{text}'")


@cli_errors
def split(data: str = typer.Option("digits", help=f"Dataset: {choices(DATASETS)}."),
          data_root: Path = typer.Option(None, envvar="GMINT_DATA", help="Folder holding the datasets "
                                         "(default: $GMINT_DATA; digits needs none)."),
          members: str = typer.Option("0.5", help=f"Members: {SIZE_HELP}."),
          external: str = typer.Option("0.5", help=f"External: {SIZE_HELP}."),
          holdout: float = typer.Option(0.5, help="Fraction of the smaller side held out for evaluation."),
          control: str = typer.Option("0", help=f"Rows reserved for a negative-control model: {SIZE_HELP}; "
                                                "0 for none."),
          protocol: str = typer.Option("grouped", help=f"{choices(PROTOCOLS)} (grouped: never splits a group, "
                                                       "such as a GTSRB track, across sides, and draws member and "
                                                       "external groups as same-class pairs)."),
          seed: int = typer.Option(0, help="Seed of the split."),
          out: Path = typer.Option(Path("split.json"), help="Manifest to write."),
          overwrite: bool = flag("--overwrite", "Replace an existing --out."),
          json_out: bool = flag("--json", "Print the result as JSON instead.")) -> None:
    """Draw a seeded, class-balanced membership split (members / external, pool / holdout)."""
    check_output(out, "--out", overwrite=overwrite)
    sizes = {name: parse_size(text, f"--{name}") for name, text in
             (("members", members), ("external", external), ("control", control))}
    images = load_data(data, data_root)
    manifest = make_split(images, **sizes, holdout=holdout, protocol=protocol, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.save(out)
    counts = {"members": len(manifest.members), "external": len(manifest.external),
              "control": len(manifest.control), "pool": len(manifest.pool), "holdout": len(manifest.holdout)}
    if json_out:
        print_json({"out": str(out), **counts, "sha256": manifest.sha256})
        return
    console.print(f"{out}: {counts['members']} members, {counts['external']} external, {counts['control']} "
                  f"control; pool {counts['pool']}, holdout {counts['holdout']}; sha256 {manifest.sha256[:12]}")
