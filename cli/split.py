"""`gmint split`: draw a seeded membership split, or describe the auditor's own lists, and save its manifest."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from gmint.data.base import DATASETS
from gmint.data.split import PROTOCOLS, MembershipSplit, make_split, read_item_list, split_from_lists
from gmint.errors import InputError
from gmint_cli.console import cli_errors, console, explain, print_json
from gmint_cli.inputs import load_data
from gmint_cli.options import choices, data_root_option, json_flag, overwrite_flag
from gmint_cli.outputs import check_output

SIZE_HELP = "a fraction in (0, 1) of the train part, e.g. 0.4, or a whole number of rows, e.g. 900"
LIST_HELP = ("a text file (one image path or row id a line; # comments), a CSV (its first column, or its file, "
             "path, sample_id or row column) or a JSON list; paths are relative to the dataset folder")
SIZES = ("members", "external", "control")


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
def split(ctx: typer.Context,
          data: str = typer.Option("digits", help=f"Dataset: {choices(DATASETS)}."),
          data_root: Path = data_root_option(),
          members: str = typer.Option("0.5", help=f"Members: {SIZE_HELP}."),
          external: str = typer.Option("0.5", help=f"External: {SIZE_HELP}."),
          members_list: Path = typer.Option(None, help=f"The rows that trained the model, listed: {LIST_HELP}. "
                                            "Given with --external-list instead of --members/--external/"
                                            "--control (default: none, a random split)."),
          external_list: Path = typer.Option(None, help="The rows the model never saw, listed as for "
                                             "--members-list (default: none)."),
          control_list: Path = typer.Option(None, help="More rows the model never saw, listed as for "
                                            "--members-list, kept out of the pool and the holdout: offline "
                                            "reference models and negative controls train on them. Only with the "
                                            "other lists (default: none)."),
          holdout: float = typer.Option(0.5, help="Fraction of the smaller side held out for evaluation."),
          control: str = typer.Option("0", help=f"Rows reserved for a negative-control model: {SIZE_HELP}; "
                                                "0 for none."),
          protocol: str = typer.Option("grouped", help=f"{choices(PROTOCOLS)} (grouped: never splits a group, "
                                                       "such as a GTSRB track, across sides, and draws member and "
                                                       "external groups as same-class pairs)."),
          seed: int = typer.Option(0, help="Seed of the split."),
          out: Path = typer.Option(Path("split.json"), help="Manifest to write."),
          overwrite: bool = overwrite_flag(),
          json_out: bool = json_flag()) -> None:
    """Draw a seeded, class-balanced membership split (members / external, pool / holdout), or make one from
    your own lists of members and external samples."""
    listed = members_list is not None or external_list is not None
    if control_list is not None and not listed:
        raise InputError("--control-list goes with --members-list and --external-list; a random split draws its "
                         "control rows with --control")
    if listed:
        if members_list is None or external_list is None:
            raise InputError("--members-list and --external-list go together: pass both, or neither for a "
                             "random split")
        sized = [f"--{name}" for name in SIZES if given(ctx, name)]
        if sized:
            raise InputError(f"{' and '.join(sized)} cannot be given with --members-list and --external-list: "
                             "sizes are for a random split, the lists name the rows themselves")
    check_output(out, "--out", overwrite=overwrite, inputs={"--members-list": members_list,
                                                            "--external-list": external_list,
                                                            "--control-list": control_list})
    if members_list is not None and external_list is not None:
        with list_errors(members_list, external_list, control_list):
            items = read_item_list(members_list), read_item_list(external_list)
            controls = read_item_list(control_list) if control_list is not None else None
            images = load_data(data, data_root)
            manifest = split_from_lists(images, *items, control=controls, holdout=holdout, protocol=protocol,
                                        seed=seed)
    else:
        sizes = {name: parse_size(text, f"--{name}") for name, text in zip(SIZES, (members, external, control),
                                                                          strict=True)}
        images = load_data(data, data_root)
        manifest = make_split(images, **sizes, holdout=holdout, protocol=protocol, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.save(out)
    report(manifest, out, json_out)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` was given (on the command line or otherwise), not left at its default.

    By the source's name: typer vendors its own click, whose ParameterSource is not click's."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


@contextmanager
def list_errors(members_list: Path, external_list: Path, control_list: Path | None = None) -> Iterator[None]:
    """Name the options and files where the library speaks of `the members list`, `the external list`, `the
    control list`."""
    try:
        yield
    except InputError as exc:
        message = (explain(exc).replace("the members list", f"--members-list {members_list}")
                   .replace("the external list", f"--external-list {external_list}")
                   .replace("the control list", f"--control-list {control_list}"))
        raise InputError(message) from None


def report(manifest: MembershipSplit, out: Path, json_out: bool) -> None:
    """The one summary line (or JSON) of a manifest written to `out`."""
    counts = {"members": len(manifest.members), "external": len(manifest.external),
              "control": len(manifest.control), "pool": len(manifest.pool), "holdout": len(manifest.holdout)}
    if json_out:
        print_json({"out": str(out), **counts, "sha256": manifest.sha256})
        return
    console.print(f"{out}: {counts['members']} members, {counts['external']} external, {counts['control']} "
                  f"control; pool {counts['pool']}, holdout {counts['holdout']}; sha256 {manifest.sha256[:12]}")
