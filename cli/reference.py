"""`gmint reference train|merge|extract|attack`: reference models, their stores, and the attacks side by side."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import typer

from gmint.assess.candidates import in_model_classes
from gmint.assess.evaluate import ModelGap
from gmint.data.base import DATASETS, ImageSet
from gmint.data.split import MembershipSplit
from gmint.errors import InputError, Remedy
from gmint.features.settings import ExtractSettings
from gmint.features.shards import world
from gmint.models.io import AuditedModel, file_kind, load_audited, read_checkpoint
from gmint.models.train import TrainConfig
from gmint.reference import (
    ATTACKS,
    ReferenceDraw,
    ReferenceExtraction,
    ReferenceSet,
    attack_options,
    compare_attacks,
    extract_references,
    load_signals,
    train_references,
)
from gmint.reference.compare import Comparison
from gmint.reference.design import records_recipe
from gmint.reference.manifest import INITS, MANIFEST, MODES
from gmint.reference.report import comparison_table, write_comparison
from gmint.reference.shards import Shard, merge_references
from gmint_cli import audited as audited_cli
from gmint_cli.console import cli_errors, console, print_json, remedies, show_progress
from gmint_cli.inputs import load_data
from gmint_cli.options import DEFAULT_ATTACKS, choices, data_root_option, device_option, flag, json_object
from gmint_cli.outputs import check_output

app = typer.Typer(no_args_is_help=True)
# A reference set's store that cannot be continued is extracted again by this group's own command, which
# extracts every store of the set that is missing; the set's stores have fixed names, so there is no other file.
REFERENCE_STORES = {Remedy.REBUILD_STORE: "remove it and run `gmint reference extract` again",
                    Remedy.ANOTHER_STORE_OR_REBUILD: "extract with the settings it records, or remove it and run "
                                                     "`gmint reference extract` again"}
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
# The TrainConfig fields given as options, and the option of each; the seed is --train-seed here, as --seed
# seeds the halves.
RECIPE_OPTIONS = {name: f"--{name.replace('_', '-')}" for name in _DEFAULTS} | {"seed": "--train-seed"}
# The options each attack takes, for --options' help (attacks that take none are left out).
OPTIONS_HELP = "; ".join(f"{name} takes {', '.join(ATTACKS.get(name).options.ranges())}" for name in ATTACKS.names()
                         if ATTACKS.get(name).options.ranges())


def _recipe_option(name: str) -> Any:
    """`gmint audited train`'s option for a TrainConfig field (its help, bounds and checks, defined there once),
    without a default: the recipe of a model from outside is stated by its auditor; fields not stated keep
    TrainConfig's defaults."""
    info = inspect.signature(audited_cli.train).parameters[name].default
    text = str(info.help).rstrip(".")
    default = "" if "(default:" in text else f" (default: {_DEFAULTS[name]})"
    return typer.Option(None, min=info.min, max=info.max, callback=info.callback,
                        help=f"{text}: the recipe of a model from outside{default}.")


def _given_recipe(values: dict[str, object], recipe: str | None) -> TrainConfig | None:
    """The TrainConfig the recipe options or --recipe state (the rest at its defaults); None where none is."""
    stated = {name: value for name, value in values.items() if value is not None}
    if recipe is None:
        return TrainConfig.from_mapping(stated) if stated else None
    if stated:
        options = ", ".join(RECIPE_OPTIONS[name] for name in stated)
        raise InputError(f"give the training recipe as --recipe or as options ({options}), not both")
    text = Path(recipe).read_text() if not recipe.lstrip().startswith("{") and Path(recipe).is_file() else recipe
    return TrainConfig.from_mapping(json_object(text, "--recipe"))


# Where a model file is not a gmint checkpoint: what `reference train` needs instead.
NEEDS_CHECKPOINT = ("reference models are trained from a gmint checkpoint, which records how the model is built and "
                    "fed; import the model once with `gmint model import`")


def _audited_checkpoint(model: Path) -> AuditedModel:
    """The audited model as `reference train` reads it: a gmint checkpoint only. A TorchScript file, a pickled
    module or a plain state dict is refused in one line that names `gmint model import` (with the option each
    needs there), not options of `gmint extract` that this command does not have."""
    if not model.is_file():
        return load_audited(model)  # its own line for a missing file or a folder
    kind = file_kind(model)
    if kind == "torchscript":
        raise InputError(f"{model} is a TorchScript archive, not a gmint checkpoint; {NEEDS_CHECKPOINT} "
                         "(--torchscript, with --arch for the code that builds it)")
    try:
        payload = read_checkpoint(model)  # a pickled module is refused here, before anything in it runs
    except InputError as exc:
        if kind not in ("torch", "pickle"):
            raise
        raise InputError(f"{exc.message}; for a model from outside, {NEEDS_CHECKPOINT} (a pickled module with "
                         "--trust-pickle and --arch)") from None
    if not ("meta" in payload and "state_dict" in payload):
        raise InputError(f"{model} is a plain state dict, not a gmint checkpoint; {NEEDS_CHECKPOINT} (--arch, "
                         "and its preprocessing)")
    return load_audited(model)


def _model_data(audited: AuditedModel, model: Path, data: str | None, data_root: Path | None) -> ImageSet:
    """The data the audited model's references train and are read on, labelled in the model's classes (so the
    reference stores are labelled exactly as the audited model's): --data, else the dataset its record names."""
    name = data or audited.record.dataset
    if name is None:
        raise InputError(f"--data is required: {model} was trained outside gmint and records no dataset; give the "
                         "one its split names (and --data-root)")
    return in_model_classes(load_data(str(name), data_root), audited)


@app.command("train")
@cli_errors
def train(model: Path = typer.Option(..., help="The audited gmint checkpoint. A model gmint trained records its "
                                               "recipe (architecture, optimiser, epochs, preprocessing, split), "
                                               "which trains the reference models; a model imported with `gmint "
                                               "model import` records its architecture and preprocessing, and "
                                               "needs --split, --data and a recipe (the options below, or "
                                               "--recipe)."),
          split: Path = typer.Option(None, help="Split manifest, with control rows (`gmint split --control-list`): "
                                                "required for a model from outside (default: the one a gmint "
                                                "checkpoint records; another is refused)."),
          data: str = typer.Option(None, help=f"Dataset: {choices(DATASETS)}; required for a model from outside "
                                              "(default: the one the model was trained on)."),
          epochs: int = _recipe_option("epochs"),
          batch_size: int = _recipe_option("batch_size"),
          optimizer: str = _recipe_option("optimizer"),
          lr: float = _recipe_option("lr"),
          weight_decay: float = _recipe_option("weight_decay"),
          schedule: str = _recipe_option("schedule"),
          augment: str = _recipe_option("augment"),
          threads: int = _recipe_option("threads"),
          target_accuracy: float = _recipe_option("target_accuracy"),
          train_seed: int = typer.Option(None, help="Seed of the models' initialisation and shuffling: the recipe of "
                                                    "a model from outside (default: 0)."),
          recipe: str = typer.Option(None, help="The recipe of a model from outside as one JSON object of those "
                                                "fields (or a file holding one), e.g. {\"epochs\": 20, \"lr\": "
                                                "0.001}, instead of the options (default: none)."),
          out: Path = typer.Option(Path("references"), help="Folder for references.json and ref-NN.pt."),
          mode: str = typer.Option("offline", help=f"{choices(MODES)}: offline models train on halves of the split's "
                                                   "control rows, never on a candidate; online ones on halves of "
                                                   "control ∪ candidates (an upper bound, for experiments)."),
          k: int = typer.Option(4, "--k", min=1, help="Number of reference models (trained in complementary pairs)."),
          seed: int = typer.Option(0, help="Seed of the halves."),
          init: str = typer.Option("audited", help=f"{choices(INITS)}: start every model from the audited model's "
                                                   "seed (aligned filters; for a model from outside, the recipe's), "
                                                   "or each from its own."),
          data_root: Path = data_root_option(),
          device: str = device_option(),
          workers: int = typer.Option(1, min=1, help="Models trained at once, each in its own process (each on "
                                                     "its recipe's threads); the weights are the same for any "
                                                     "number."),
          shard: str = typer.Option(None, help="Train only shard INDEX/COUNT of the set (e.g. 0/4: models 0, 4, "
                                               "8, ...), one process of a job array sharing --out; every shard "
                                               "resumes, and the last to finish merges the set (default: under "
                                               "torchrun, its rank of WORLD_SIZE; else every model)."),
          resume: bool = flag("--resume", "Continue (or grow to a larger --k) the set in --out."),
          overwrite: bool = flag("--overwrite", "Replace a set of another design in --out.")) -> None:
    """Train K reference models with the audited model's recipe, one checkpoint each, resumable."""
    rank, world_size = world()
    part = Shard.parse(shard) if shard is not None else Shard(rank, world_size) if world_size > 1 else None
    if part is not None and overwrite:
        raise InputError("--shard and --overwrite: a shard cannot replace the set its sibling shards share; remove "
                         f"{out} first, or choose another --out")
    check_output(out, "--out", folder=True, overwrite=overwrite, resume=resume or part is not None,
                 inputs={"--model": model, "--split": split})
    if part is not None and shard is None and device == "cuda":  # under torchrun: this rank's own GPU
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    config = _given_recipe({"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                            "weight_decay": weight_decay, "schedule": schedule, "augment": augment, "seed": train_seed,
                            "threads": threads, "target_accuracy": target_accuracy}, recipe)
    audited = _audited_checkpoint(model)
    if records_recipe(audited) and config is not None:
        raise InputError(f"{model} records the recipe gmint trained it with, which its reference models are trained "
                         "with: drop the recipe options (they are for a model from outside)")
    if not records_recipe(audited) and config is None:
        raise InputError(f"{model} was trained outside gmint and records no training recipe: give the one its "
                         "reference models are trained with, as options (--epochs, --lr, --optimizer, ...) or as "
                         "--recipe JSON")
    if not records_recipe(audited) and split is None:
        raise InputError(f"--split is required: {model} was trained outside gmint and records no membership split; "
                         "give the split of your lists, with control rows (`gmint split --control-list`)")
    manifest = train_references(_model_data(audited, model, data, data_root), model, out,
                                ReferenceDraw(mode=mode, k=k, seed=seed, init=init), config=config,
                                split=MembershipSplit.load(split) if split else None,
                                resume=resume, overwrite=overwrite, device=device, workers=workers, shard=part,
                                show_progress=show_progress())
    merged = len(manifest.models) == manifest.k and (out / MANIFEST).exists()
    console.print(f"{out}: {manifest.k} {manifest.mode} reference models on halves of {len(manifest.pool)} pool rows "
                  f"({manifest.grouped_by}s drawn whole)"
                  + (f"; shard {part} trained {len(part.models(manifest.k))} of them" if part is not None else ""))
    if config is not None:
        console.print("  recipe given: " + ", ".join(f"{name} {value}" for name, value in asdict(config).items()))
    _print_models(out, manifest, part.models(manifest.k) if part is not None else range(manifest.k))
    if part is not None:
        console.print(f"  every shard has finished: merged into {out / MANIFEST}" if merged else
                      f"  {MANIFEST} is written when the last shard finishes (or by `gmint reference merge {out}`)")


def _print_models(out: Path, manifest: ReferenceSet, indices: Iterable[int]) -> None:
    """One line per reference model: its rows, training time and accuracies."""
    for i in indices:
        record = load_audited(out / manifest.model_file(i)).record
        gap = ModelGap.of(record.training) if record.training is not None else ModelGap(*[float("nan")] * 4)
        console.print(f"  {manifest.model_file(i)}: {len(manifest.rows_of(i))} rows, {record.train_seconds} s, "
                      f"accuracy on the audited members {gap.members_accuracy:.3f}, "
                      f"external {gap.external_accuracy:.3f}")


@app.command("merge")
@cli_errors
def merge(references: Path = typer.Argument(..., help="A folder the shards of `gmint reference train --shard` "
                                                      "trained into.")) -> None:
    """Merge a set trained in shards into its references.json, after checking every model against its record.

    The last shard to finish does this itself; this is for a shard that ended before the others finished (or a
    merge that was interrupted). A folder already merged is left as it is."""
    manifest = merge_references(references)
    console.print(f"{references / MANIFEST}: {manifest.k} {manifest.mode} reference models, each checked against "
                  "its record")


def _check_k(k: int | None, manifest: ReferenceSet, references: Path) -> None:
    """Refuse a --k the set cannot give, naming the command that grows it."""
    if k is not None and not 1 <= k <= manifest.k:
        grow = f"; train more with `gmint reference train --k {k} --resume`" if k > manifest.k else ""
        raise InputError(f"--k takes a number of reference models from 1 to {manifest.k} ({references} holds "
                         f"{manifest.k}), got {k}{grow}")


@app.command("extract")
@cli_errors
def extract(references: Path = typer.Argument(..., help="A folder from `gmint reference train`."),
            k: int = typer.Option(None, "--k", min=1, help="Only the first K reference models (default: all)."),
            layers: str = typer.Option("combined", help="Layer setup of the gradient stores."),
            reduction: str = typer.Option("mean", help="Reduction of the gradient stores."),
            engine: str = typer.Option("auto", help="Engine the extraction starts from."),
            batch_size: int = typer.Option(128, min=1, help="Rows per batch."),
            seed: int = typer.Option(0, help="Seed of seeded reductions."),
            data: str = typer.Option(None, help=f"Dataset: {choices(DATASETS)} (default: the one the reference set "
                                                "was drawn on; another is refused)."),
            data_root: Path = data_root_option(),
            device: str = device_option()) -> None:
    """Extract the gradient and output stores of the audited model and each reference model (resumable).

    Each model's checkpoint and stores are checked against the set's record of it first; a set trained before
    gmint recorded its models has them recorded now (with a warning)."""
    manifest = ReferenceSet.load(references)
    if data is not None and data != manifest.dataset:
        raise InputError(f"{references} was drawn on '{manifest.dataset}', --data is '{data}'")
    _check_k(k, manifest, references)
    audited = Path(manifest.audited)
    images = _model_data(load_audited(audited), audited, manifest.dataset, data_root)
    settings = ExtractSettings(layer_setup=layers, reduction=reduction, engine=engine, batch_size=batch_size,
                               seed=seed, device=device)
    with remedies(REFERENCE_STORES):
        for path in extract_references(images, references, k=k, extraction=ReferenceExtraction(settings),
                                       show_progress=show_progress()):
            console.print(f"{path}")


def _how_to_give_options(comparison: Comparison) -> list[str]:
    """For each attack that one of its options would let run, how to give it with --options (its range is in
    the attack's own line of the table)."""
    hints = {}
    for r in comparison.results:
        if r.needs_option:
            example = f"{{{json.dumps(r.attack)}: {{{json.dumps(r.needs_option)}: VALUE}}}}"
            hints[r.attack] = f"{r.attack}: give its option {r.needs_option} with --options '{example}'"
    return list(hints.values())


@app.command("attack")
@cli_errors
def attack(references: Path = typer.Argument(..., help="A folder whose stores `gmint reference extract` wrote."),
           attacks: str = typer.Option(",".join(DEFAULT_ATTACKS), help=f"Comma-separated: {choices(ATTACKS)}."),
           k: str = typer.Option(None, "--k", help="Comma-separated numbers of reference models, e.g. 1,2,4 "
                                                    "(default: all of the set)."),
           options: str = typer.Option("{}", help="Attack options as JSON, attack name → its options, e.g. "
                                                  '{"rmia": {"a": 0.3, "gamma": 2}}: ' + OPTIONS_HELP + "."),
           report: Path = typer.Option(None, help="Folder for comparison.json/.md, scores.csv, roc_log.png and "
                                                  "vs_k.png (default: no report)."),
           overwrite: bool = flag("--overwrite", "Write into an existing, non-empty --report folder."),
           json_out: bool = flag("--json", "Print the comparison as JSON instead."),
           n_boot: int = typer.Option(1000, min=1, help="Bootstrap replicates for the 95% intervals."),
           seed: int = typer.Option(0, help="Seed of the balancing, the bootstrap and the attacks.")) -> None:
    """LiRA, RMIA, calibrated gMINT and the baselines side by side on the same held-out rows."""
    check_output(report, "--report", folder=True, overwrite=overwrite, inputs={"the reference folder": references})
    names = [a.strip() for a in attacks.split(",") if a.strip()]
    if not names:
        raise InputError(f"--attacks names no attack; choose from {', '.join(ATTACKS.names())}")
    for name in names:
        ATTACKS.get(name)
    per_attack = json_object(options, "--options")
    try:
        attack_options(names, per_attack)  # every option checked before anything is read
    except InputError as exc:
        raise InputError(f"--options: {exc.message}", exc.remedy) from None
    manifest = ReferenceSet.load(references)
    try:
        ks = [int(v) for v in k.split(",")] if k else [manifest.k]
    except ValueError:
        raise InputError(f"--k takes comma-separated whole numbers, got '{k}'") from None
    for value in ks:
        _check_k(value, manifest, references)
    needs_gradient = any(ATTACKS.get(n).gradient for n in names)
    with remedies(REFERENCE_STORES):
        signals = load_signals(references, k=max(ks), gradient=needs_gradient)
    comparison = compare_attacks(signals, names, ks, n_boot=n_boot, seed=seed, options=per_attack)
    written = write_comparison(comparison, report, title=f"{references} ({manifest.mode})") if report else []
    if json_out:
        print_json({**comparison.to_dict(), **({"report_files": list(map(str, written))} if report else {})})
        return
    console.print(comparison_table(comparison))
    for hint in _how_to_give_options(comparison):
        console.print(hint, highlight=False)
    for path in written:
        console.print(f"wrote {path}")
