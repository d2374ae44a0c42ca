"""`gmint extract` and `gmint layers`: Weight Modifiers of an audited model into a feature store."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import typer
from rich.markup import escape
from rich.table import Table

from gmint.assess.candidates import in_model_classes, model_input
from gmint.data.base import DATASETS, ImageSet
from gmint.data.split import MembershipSplit, check_model_split
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy, StoreBusyError
from gmint.features.engine import ENGINES, LOSSES
from gmint.features.extract import extract as run_extract
from gmint.features.extract import rows_sha256, split_rows
from gmint.features.integrity import check_resumable
from gmint.features.layers import LAYER_PRESETS, preset_parameters, weight_layers
from gmint.features.lock import writer_pid
from gmint.features.reduce import REDUCTIONS
from gmint.features.settings import ExtractSettings
from gmint.features.shards import merge_shards, run_distributed, world
from gmint.features.sources import SOURCES
from gmint.models.check import ModelCheck, check_model
from gmint.models.io import AuditedModel
from gmint_cli.console import cli_errors, console, print_json, remedies, show_progress
from gmint_cli.inputs import (
    ARCH_HELP,
    MODEL_HELP,
    TORCHSCRIPT_HELP,
    TRUST_PICKLE_HELP,
    check_model_input,
    load_data,
    load_model,
    model_transform,
)
from gmint_cli.options import choices, data_root_option, device_option, flag
from gmint_cli.outputs import check_output

# A store this command is to continue, refused: it can be extracted again in its place.
REBUILD_IN_PLACE = {Remedy.REBUILD_STORE: "pass --overwrite to extract it again in its place"}
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str) -> int:
    """'512MiB' → 536870912; plain numbers are bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", text)
    unit = UNITS.get(match.group(2).lower(), 0) if match else 0
    budget = int(float(match.group(1)) * unit) if match else 0
    if budget < 1:
        raise InputError(f"--max-memory must look like 512MiB, 2GiB or a positive number of bytes, got '{text}'")
    return budget




def check_loss(loss: str, audited: AuditedModel) -> None:
    """`bce` reads one logit per sample: on a model with one output per class it fails deep in the engines."""
    classes = audited.record.num_classes
    if loss == "bce" and classes is not None and classes != 1:
        raise InputError(f"--loss bce needs a model with a single output (one logit), this model has {classes} "
                         "(one per class); use --loss cross_entropy")


@cli_errors
def extract(model: Path = typer.Option(..., help=MODEL_HELP),
            arch: str = typer.Option(None, help=ARCH_HELP),
            torchscript: bool = flag("--torchscript", TORCHSCRIPT_HELP),
            trust_pickle: bool = flag("--trust-pickle", TRUST_PICKLE_HELP),
            data: str = typer.Option(None, help=f"Dataset: {choices(DATASETS)} (default: the one the model was "
                                                "trained on)."),
            data_root: Path = data_root_option(),
            split: Path = typer.Option(None, help="Split manifest (default: the one stored with the model)."),
            model_trained_outside_gmint: bool = flag(
                "--model-trained-outside-gmint",
                "The model was trained outside gmint: accept a --split other than the one its checkpoint records."),
            setup: str = typer.Option("combined", "--layers", help=f"Layer setup: {choices(LAYER_PRESETS)}, or "
                                      "parameter names/globs, comma-separated (see `gmint layers`)."),
            reduction: str = typer.Option("mean", help=f"{choices(REDUCTIONS)}; name:arg for one that takes an "
                                                       "argument (project:<d>)."),
            engine: str = typer.Option("auto", help=f"Where the engine search starts: {choices(ENGINES)}."),
            max_memory: str = typer.Option(None, "--max-memory", help="Working-memory budget, e.g. 512MiB or 2GiB; "
                                           "lowers the batch (vmap: the chunk) to fit (default: no budget)."),
            source: str = typer.Option("gradient", help=f"What is stored: {choices(SOURCES)} (gradient: gMINT's "
                                                        "Weight Modifiers)."),
            loss: str = typer.Option("cross_entropy", help=f"Loss whose per-sample gradient is taken: "
                                                           f"{choices(LOSSES)}."),
            image_size: int = typer.Option(None, min=1, help="Resize images to this side (default: the model's "
                                                            "recorded transform)."),
            min_member_accuracy: float = typer.Option(None, min=0.0, max=1.0, help="Warn where the audited model "
                                                      "classifies fewer of its declared members correctly (default: "
                                                      "no floor; the other checks always run)."),
            batch_size: int = typer.Option(128, min=1, help="Rows per batch written to the store."),
            chunk_size: int = typer.Option(64, min=1, help="Samples per vmap call."),
            seed: int = typer.Option(0, help="Seed for seeded reductions."),
            device: str = device_option(),
            out: Path = typer.Option(Path("features.h5"), help="Feature store to write."),
            resume: bool = flag("--resume", "Continue a partial store at --out."),
            overwrite: bool = flag("--overwrite", "Replace an existing --out.")) -> None:
    """Compute per-sample Weight Modifiers of the chosen layers and stream them to an HDF5 store."""
    if (pid := writer_pid(out)) is not None:
        raise StoreBusyError(f"{out} is being written by PID {pid}; wait for it to finish or stop it")
    check_output(out, "--out", inputs={"--model": model, "--split": split}, overwrite=overwrite, resume=resume)
    # A file no resume can continue is refused before the model is even loaded (under torchrun --out is the
    # join of the shards, which rank 0 checks when it joins them).
    if resume and out.is_file() and world()[1] == 1:
        with remedies(REBUILD_IN_PLACE):
            check_resumable(out)
    # Unknown names are refused here, before the model is loaded; the transform is the model's (see below).
    settings = ExtractSettings(layer_setup=setup, reduction=reduction, source=source, engine=engine, loss=loss,
                               seed=seed, batch_size=batch_size, chunk_size=chunk_size, device=device,
                               max_memory=parse_bytes(max_memory) if max_memory else None)
    audited = load_model(model, arch, torchscript, trust_pickle)
    check_loss(loss, audited)
    name = data or audited.record.dataset
    if not name:
        raise InputError("--data is required for a model without gmint metadata")
    images = in_model_classes(load_data(str(name), data_root, size=image_size, size_option="--image-size"), audited)
    manifest = MembershipSplit.of(audited.record.split, split)
    if manifest is None:
        raise InputError("--split is required for a model trained outside gmint")
    if manifest.dataset != images.name:
        raise InputError(f"the split is for '{manifest.dataset}', the data is '{images.name}'")
    transform = model_transform(audited, image_size)
    check_model_input(images, audited, transform)
    rows = split_rows(manifest)
    rank, world_size = world()
    # before any output
    check_model_split(audited.record.split, manifest, trained_outside=model_trained_outside_gmint)
    check = report_model_check(audited, images, manifest, transform, min_member_accuracy, device, seed, rank == 0)

    def run(shard: tuple[int, int], on_device: str) -> Path:
        with remedies(REBUILD_IN_PLACE):
            return run_extract(audited, images, rows, replace(settings, transform=transform, device=on_device),
                               out=out, split=manifest, model_check=check,
                               trained_outside=model_trained_outside_gmint, resume=resume, overwrite=overwrite,
                               shard=shard, show_progress=show_progress() and shard[0] == 0)

    if world_size > 1:  # under torchrun: this rank's shard, then rank 0 joins them
        local = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if device == "cuda" else device

        def extract_shard(r: int, w: int) -> None:
            run((r, w), local)

        def merge(w: int) -> None:
            merge_shards(out, w, rows_sha256=rows_sha256(rows), overwrite=overwrite)

        run_distributed(extract_shard, merge, device=local)
        if rank != 0:
            return
        path = out
    else:
        path = run((0, 1), device)
    console.print(f"{path}: complete ({len(rows.index)} rows{f' in {world_size} shards' if world_size > 1 else ''}, "
                  f"layers {setup}, {source}, {reduction}, {engine})")






def report_model_check(audited: AuditedModel, images: ImageSet, split: MembershipSplit, transform: Transform,
                       floor: float | None, device: str, seed: int, speak: bool) -> ModelCheck | None:
    """How the audited model classifies its declared members and the externals, printed before any Weight
    Modifier is computed, with a loud warning for each sign of a wrong description (recorded in the store too)."""
    check = check_model(audited, images, split, transform, min_member_accuracy=floor, device=device, seed=seed)
    if speak and check is not None:
        console.print(check.summary())
        for warning in check.warnings:
            console.print(f"[bold yellow]WARNING:[/] {escape(warning)}", highlight=False)
    return check




def example_input(audited: AuditedModel, images: ImageSet | None, image_size: int | None) -> torch.Tensor | None:
    """One input as `extract` feeds the model (its first row, through the model's transform), so `layers`
    orders weights exactly as `extract` does; zeros of the recorded input shape when no data is given. The
    order does not depend on the normalisation, so a model that records none is ordered on plain pixels."""
    transform = model_transform(audited, image_size) if audited.description else Transform(size=image_size)
    if images is not None:
        return transform(images.images[:1])
    channels, side = model_input(audited)
    if channels is not None and side is not None:
        return transform(np.zeros((1, side, side, channels), np.uint8))
    return None


@cli_errors
def list_layers(model: Path = typer.Option(..., help=MODEL_HELP),
           arch: str = typer.Option(None, help=ARCH_HELP),
           torchscript: bool = flag("--torchscript", TORCHSCRIPT_HELP),
           trust_pickle: bool = flag("--trust-pickle", TRUST_PICKLE_HELP),
           data: str = typer.Option(None, help="Dataset whose first image orders the layers by the forward pass "
                                               "(default: the one the model was trained on, if recorded)."),
           data_root: Path = data_root_option(),
           image_size: int = typer.Option(None, min=1, help="Resize images to this side (default: the model's "
                                                           "recorded transform)."),
           json_out: bool = flag("--json", "Print the layers as JSON instead.")) -> None:
    """List the model's weight layers, in the order `extract` sees them, and which presets pick them."""
    audited = load_model(model, arch, torchscript, trust_pickle)
    name = data or audited.record.dataset
    images = load_data(str(name), data_root, size=image_size, size_option="--image-size") if name else None
    example = example_input(audited, images, image_size)
    presets_of = preset_parameters(audited.module, example)
    shapes = {n: list(p.shape) for n, p in audited.module.named_parameters()}
    order = "forward" if example is not None and not isinstance(audited.module, torch.jit.ScriptModule) \
        else "registration"
    found = [(n, shapes[n], [p for p, names in presets_of.items() if n in names])
             for n in weight_layers(audited.module, example)]
    if json_out:
        print_json({"model": str(model), "order": order,
                    "layers": [{"parameter": n, "shape": shape, "presets": presets} for n, shape, presets in found]})
        return
    hint = "" if order == "forward" or isinstance(audited.module, torch.jit.ScriptModule) \
        else "; pass --data to order them by the forward pass"
    table = Table(title=f"weight layers of {model} ({order} order{hint})")
    for col in ("#", "parameter", "shape", "presets"):
        table.add_column(col)
    for i, (parameter, shape, presets) in enumerate(found):
        table.add_row(str(i), parameter, "×".join(map(str, shape)), ", ".join(presets))
    console.print(table)
