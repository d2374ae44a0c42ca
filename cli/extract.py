"""`gmint extract` and `gmint layers`: Weight Modifiers of an audited model into a feature store."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.distributed import merge_shards, run_distributed, world
from gmint.errors import InputError
from gmint.extract import extract as run_extract
from gmint.extract import rows_sha256, split_rows
from gmint.layers import preset_layers, weight_layers
from gmint.models.io import AuditedModel, load_audited
from gmint_cli.common import cli_errors, console, load_data, show_progress

MODEL_HELP = "Audited model: a gmint checkpoint, a state dict (with --arch) or TorchScript (--torchscript)."


def _model(model: Path, arch: str | None, torchscript: bool, trust_pickle: bool) -> AuditedModel:
    return load_audited(model, arch=arch, torchscript=torchscript, trust_pickle=trust_pickle)


UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str) -> int:
    """'512MiB' → 536870912; plain numbers are bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise InputError(f"--max-memory must look like 512MiB, 2GiB or a number of bytes, got '{text}'")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


@cli_errors
def extract(model: Path = typer.Option(..., help=MODEL_HELP),
            arch: str = typer.Option(None, help="package.module:factory building the model for a state dict."),
            torchscript: bool = typer.Option(False, help="--model is a TorchScript file."),
            trust_pickle: bool = typer.Option(False, help="Allow a pickled full module (runs its code!)."),
            data: str = typer.Option(None, help="Dataset name; default: the one the model was trained on."),
            data_root: Path = typer.Option(None, envvar="GMINT_DATA", help="Folder holding the datasets."),
            split: Path = typer.Option(None, help="Split manifest; default: the one stored with the model."),
            layers: str = typer.Option("combined", help="entry | middle | output | combined, or names/globs."),
            reduction: str = typer.Option("mean", help="mean | abs_mean | std | l2 | max | flat | project:<d>"),
            engine: str = typer.Option("auto", help="auto | hooks | vmap | naive"),
            max_memory: str = typer.Option(None, "--max-memory", help="Working-memory budget, e.g. 512MiB or 2GiB; "
                                           "lowers the batch (vmap: the chunk) to fit."),
            source: str = typer.Option("gradient", help="gradient (gMINT) | activation (MINT) | output (signals)."),
            loss: str = typer.Option("cross_entropy", help="cross_entropy | nll | bce"),
            image_size: int = typer.Option(None, help="Resize images (default: the model's recorded transform)."),
            batch_size: int = typer.Option(128), chunk_size: int = typer.Option(64, help="Samples per vmap call."),
            seed: int = typer.Option(0, help="Seed for seeded reductions."),
            device: str = typer.Option("cpu"),
            out: Path = typer.Option(Path("features.h5"), help="Feature store to write."),
            resume: bool = typer.Option(False, help="Continue a partial store at --out."),
            overwrite: bool = typer.Option(False, help="Replace an existing --out.")) -> None:
    """Compute per-sample Weight Modifiers of the chosen layers and stream them to an HDF5 store."""
    audited = _model(model, arch, torchscript, trust_pickle)
    name = data or audited.meta.get("dataset")
    if not name:
        raise InputError("--data is required for a model without gmint metadata")
    images = load_data(str(name), data_root)
    if split:
        manifest = MembershipSplit.load(split)
    elif "split" in audited.meta:
        manifest = MembershipSplit.from_json(json.dumps(audited.meta["split"]))
    else:
        raise InputError("--split is required for a model trained outside gmint")
    if manifest.dataset != images.name:
        raise InputError(f"the split is for '{manifest.dataset}', the data is '{images.name}'")
    transform = Transform(size=image_size) if image_size or "transform" not in audited.meta else None
    rows = split_rows(manifest)
    rank, world_size = world()

    def run(shard: tuple[int, int], on_device: str) -> Path:
        return run_extract(audited, images, rows, out=out, layers=layers, reduction=reduction, engine=engine,
                           source=source, transform=transform, loss=loss, batch_size=batch_size,
                           chunk_size=chunk_size, seed=seed, split=manifest, resume=resume, overwrite=overwrite,
                           device=on_device, shard=shard, max_memory=parse_bytes(max_memory) if max_memory else None,
                           show_progress=show_progress() and shard[0] == 0)

    if world_size > 1:  # under torchrun: this rank's shard, then rank 0 joins them
        local = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if device == "cuda" else device
        run_distributed(lambda r, w: run((r, w), local),
                        lambda w: merge_shards(out, w, rows_sha256=rows_sha256(rows), overwrite=overwrite),
                        device=local)
        if rank != 0:
            return
        path = out
    else:
        path = run((0, 1), device)
    console.print(f"{path}: complete ({len(rows.index)} rows{f' in {world_size} shards' if world_size > 1 else ''}, "
                  f"layers {layers}, {source}, {reduction}, {engine})")


@cli_errors
def layers(model: Path = typer.Option(..., help=MODEL_HELP),
           arch: str = typer.Option(None, help="package.module:factory for a state dict."),
           torchscript: bool = typer.Option(False), trust_pickle: bool = typer.Option(False)) -> None:
    """List the model's weight layers and which presets pick them."""
    audited = _model(model, arch, torchscript, trust_pickle)
    example = None
    args = audited.meta.get("arch_args")
    if isinstance(args, dict):
        size = args["image_size"]
        example = Transform()(np.zeros((1, size, size, args["in_channels"]), np.uint8))
    presets = preset_layers(audited.module, example)
    params = dict(audited.module.named_parameters())
    table = Table(title=f"weight layers of {model} ({'forward' if example is not None else 'registration'} order)")
    for col in ("#", "parameter", "shape", "presets"):
        table.add_column(col)
    for i, n in enumerate(weight_layers(audited.module, example)):
        table.add_row(str(i), n, "×".join(map(str, params[n].shape)),
                      ", ".join(p for p, names in presets.items() if n in names))
    console.print(table)

