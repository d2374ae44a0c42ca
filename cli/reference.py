"""`gmint reference train|extract|attack`: reference models, their stores, and the attacks side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from gmint.data.base import ImageSet
from gmint.errors import InputError
from gmint.models.io import load_audited
from gmint.reference import (
    ATTACKS,
    ExtractSettings,
    ReferenceSet,
    compare_attacks,
    extract_references,
    load_signals,
    train_references,
)
from gmint.reference.models import INITS, MODES
from gmint.reference.report import comparison_table, write_comparison
from gmint_cli.console import cli_errors, console, print_json, show_progress
from gmint_cli.inputs import load_data
from gmint_cli.options import choices, device_option, flag, json_object
from gmint_cli.outputs import check_output

app = typer.Typer(no_args_is_help=True)
DEFAULT_ATTACKS = ("loss", "gmint", "negative-control", "lira-offline", "lira-offline-global", "rmia",
                   "gmint-calibrated", "gmint-calibrated-norms", "gmint-concat")


def _audited_data(model: Path, data_root: Path | None) -> ImageSet:
    """The audited checkpoint's dataset, as its record names it (preprocessing is the checkpoint's own)."""
    meta = load_audited(model).meta
    return load_data(str(meta.get("dataset", "digits")), data_root)


@app.command("train")
@cli_errors
def train(model: Path = typer.Option(..., help="The audited gmint checkpoint: its recipe (architecture, optimiser, "
                                               "epochs, preprocessing, split) trains the reference models."),
          out: Path = typer.Option(Path("references"), help="Folder for references.json and ref-NN.pt."),
          mode: str = typer.Option("offline", help=f"{choices(MODES)}: offline models train on halves of the split's "
                                                   "control rows, never on a candidate; online ones on halves of "
                                                   "control ∪ candidates (an upper bound, for experiments)."),
          k: int = typer.Option(4, "--k", min=1, help="Number of reference models (trained in complementary pairs)."),
          seed: int = typer.Option(0, help="Seed of the halves."),
          init: str = typer.Option("audited", help=f"{choices(INITS)}: start every model from the audited model's "
                                                   "seed (aligned filters), or each from its own."),
          data_root: Path = typer.Option(None, envvar="GMINT_DATA", help="Folder holding the datasets "
                                            "(default: $GMINT_DATA; digits needs none)."),
          device: str = device_option(),
          workers: int = typer.Option(1, min=1, help="Models trained at once, each in its own process (each on "
                                                     "its recipe's threads); the weights are the same for any "
                                                     "number."),
          resume: bool = flag("--resume", "Continue (or grow to a larger --k) the set in --out."),
          overwrite: bool = flag("--overwrite", "Replace a set of another design in --out.")) -> None:
    """Train K reference models with the audited model's recipe, one checkpoint each, resumable."""
    check_output(out, "--out", folder=True, overwrite=overwrite, resume=resume, inputs={"--model": model})
    manifest = train_references(_audited_data(model, data_root), model, out, mode=mode, k=k, seed=seed, init=init,
                                resume=resume, overwrite=overwrite, device=device, workers=workers,
                                show_progress=show_progress())
    console.print(f"{out}: {manifest.k} {manifest.mode} reference models on halves of {len(manifest.pool)} pool rows "
                  f"({manifest.grouped_by}s drawn whole)")
    for i in range(manifest.k):
        meta = load_audited(out / manifest.model_file(i)).meta
        record = meta.get("record", {})
        assert isinstance(record, dict)
        console.print(f"  {manifest.model_file(i)}: {len(manifest.rows_of(i))} rows, {meta.get('train_seconds')} s, "
                      f"accuracy on the audited members {record.get('members_accuracy', float('nan')):.3f}, "
                      f"external {record.get('external_accuracy', float('nan')):.3f}")


@app.command("extract")
@cli_errors
def extract(references: Path = typer.Argument(..., help="A folder from `gmint reference train`."),
            k: int = typer.Option(None, "--k", min=1, help="Only the first K reference models (default: all)."),
            layers: str = typer.Option("combined", help="Layer setup of the gradient stores."),
            reduction: str = typer.Option("mean", help="Reduction of the gradient stores."),
            engine: str = typer.Option("auto", help="Engine the extraction starts from."),
            batch_size: int = typer.Option(128, min=1, help="Rows per batch."),
            seed: int = typer.Option(0, help="Seed of seeded reductions."),
            data_root: Path = typer.Option(None, envvar="GMINT_DATA", help="Folder holding the datasets "
                                            "(default: $GMINT_DATA; digits needs none)."),
            device: str = device_option()) -> None:
    """Extract the gradient and output stores of the audited model and each reference model (resumable)."""
    manifest = ReferenceSet.load(references)
    data = _audited_data(Path(manifest.audited), data_root)
    settings = ExtractSettings(layers=layers, reduction=reduction, engine=engine, batch_size=batch_size, seed=seed)
    for path in extract_references(data, references, k=k, settings=settings, device=device,
                                   show_progress=show_progress()):
        console.print(f"{path}")


@app.command("attack")
@cli_errors
def attack(references: Path = typer.Argument(..., help="A folder whose stores `gmint reference extract` wrote."),
           attacks: str = typer.Option(",".join(DEFAULT_ATTACKS), help=f"Comma-separated: {choices(ATTACKS)}."),
           k: str = typer.Option(None, "--k", help="Comma-separated numbers of reference models, e.g. 1,2,4 "
                                                    "(default: all of the set)."),
           options: str = typer.Option("{}", help='Attack options as JSON, e.g. {"rmia": {"a": 0.3, "gamma": 2}}.'),
           report: Path = typer.Option(None, help="Folder for comparison.json/.md, scores.csv, roc_log.png and "
                                                  "vs_k.png (default: no report)."),
           overwrite: bool = flag("--overwrite", "Write into an existing, non-empty --report folder."),
           json_out: bool = flag("--json", "Print the comparison as JSON instead."),
           n_boot: int = typer.Option(1000, min=1, help="Bootstrap replicates for the 95% intervals."),
           seed: int = typer.Option(0, help="Seed of the balancing, the bootstrap and the attacks.")) -> None:
    """LiRA, RMIA, calibrated gMINT and the baselines side by side on the same held-out rows."""
    check_output(report, "--report", folder=True, overwrite=overwrite, inputs={"the reference folder": references})
    names = [a.strip() for a in attacks.split(",") if a.strip()]
    for name in names:
        ATTACKS.get(name)
    per_attack = json_object(options, "--options")
    if any(not isinstance(v, dict) for v in per_attack.values()):
        raise InputError('--options maps attack names to objects of options, e.g. {"rmia": {"a": 0.3}}')
    manifest = ReferenceSet.load(references)
    try:
        ks = [int(v) for v in k.split(",")] if k else [manifest.k]
    except ValueError:
        raise InputError(f"--k takes comma-separated whole numbers, got '{k}'") from None
    needs_gradient = any(ATTACKS.get(n).gradient for n in names)
    signals = load_signals(references, k=max(ks), gradient=needs_gradient)
    comparison = compare_attacks(signals, names, ks, n_boot=n_boot, seed=seed, options=per_attack)
    written = write_comparison(comparison, report, title=f"{references} ({manifest.mode})") if report else []
    if json_out:
        print_json({**comparison.to_dict(), **({"report_files": list(map(str, written))} if report else {})})
        return
    console.print(comparison_table(comparison))
    for path in written:
        console.print(f"wrote {path}")
