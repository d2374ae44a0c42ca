"""Expected training time per cell of a grid config, from training steps measured on this machine.

For each cell: its split is drawn (which checks the config against the data), its model built at the cell's
width and input size, and a few Adam steps at the config's batch size timed after a warm-up; an epoch is that
step time × the member batches, a cell's training the epochs × an epoch for the audited and the control model.
Extraction and MINT fits are left out: on the CPU grid they take a fraction of training (see grid-cpu.md).

    python -m benchmarks.estimate --config benchmarks/configs/grid-paper.toml \
        --out benchmarks/results/grid-paper-estimate.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import tomllib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.grid import code_version, grid_cells, grid_recipe
from gmint.data.readers import load_dataset
from gmint.data.split import make_split
from gmint.models.zoo import build


def step_seconds(arch: str, options: dict[str, Any], channels: int, classes: int, size: int, batch: int,
                 steps: int) -> float:
    """Seconds of one Adam step (forward, backward, update) on a random batch: the fastest of `steps` after one
    warm-up step (a step that lost its core to another process says nothing about the model)."""
    torch.manual_seed(0)
    model = build(arch, channels, classes, size, **options).train()  # type: ignore[arg-type]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, channels, size, size), torch.randint(0, classes, (batch,))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="Markdown table (a JSON twin beside it)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help="estimate only cells whose name contains this")
    parser.add_argument("--probe-batch", type=int, default=None,
                        help="time steps at this batch and scale to the config's (default: the config's batch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    # Step times are kept as they are measured, so a killed run continues where it stopped.
    cache = args.out.with_suffix(".json")
    settings = {"threads": args.threads, "steps": args.steps, "probe_batch": args.probe_batch}
    saved = json.loads(cache.read_text()) if cache.exists() else {}
    measured: dict[str, float] = saved.get("step_seconds", {}) if saved.get("settings") == settings else {}
    loads: list[float] = list(saved.get("measured_load", [])) if measured else []  # load while steps were timed
    for cell in grid_cells(tomllib.loads(args.config.read_text())):
        if args.only and args.only not in cell.name:
            continue
        recipe = grid_recipe(cell)
        data = load_dataset(cell.dataset, args.data_root, **dict(cell.settings.get("data_options", {})))
        split = make_split(data, members=recipe.members, external=recipe.external, control=recipe.control,
                           holdout=recipe.holdout, protocol=recipe.protocol, seed=recipe.seed)
        channels, height, _ = data.image_shape
        size = recipe.image_size or height
        key = f"{cell.dataset}-{cell.arch}@{size}"
        if key not in measured:
            batch = args.probe_batch or recipe.train.batch_size
            measured[key] = step_seconds(cell.arch, dict(recipe.arch_options), channels, len(data.classes), size,
                                         batch, args.steps) * recipe.train.batch_size / batch
            print(f"{key}: {measured[key]:.3f} s/step", flush=True)
            loads.append(round(os.getloadavg()[0], 2))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"settings": settings, "step_seconds": measured, "measured_load": loads},
                                        indent=1))
        epoch = measured[key] * math.ceil(len(split.members) / recipe.train.batch_size)
        control_epoch = measured[key] * math.ceil(len(split.control) / recipe.train.batch_size)
        hours = (epoch + control_epoch) * recipe.train.epochs / 3600
        rows.append({"cell": cell.name, "members": len(split.members), "control": len(split.control),
                     "image_size": size, "step_seconds": round(measured[key], 4), "epoch_seconds": round(epoch, 1),
                     "epochs": recipe.train.epochs, "training_hours": round(hours, 2)})
    info = {**code_version(), "cpu_threads": args.threads, "processor": platform.processor() or platform.machine(),
            "steps": args.steps, "probe_batch": args.probe_batch,
            "load_average": [min(loads, default=load_start), max(loads, default=load_start)]}
    total = sum(r["training_hours"] for r in rows)
    lines = [f"# Expected training time per cell: {args.config.name}", "",
             f"Measured on this machine's CPU ({args.threads} thread{'s' if args.threads > 1 else ''}; "
             f"torch {info['torch']}, gmint at "
             f"{info['commit']}): the fastest of {args.steps} Adam steps at the config's batch size"
             + (f" (timed at batch {args.probe_batch} and scaled in proportion)" if args.probe_batch else "")
             + ", times the "
             "member batches of an epoch, times the epochs, for the audited and the control model. No GPU was "
             f"measured. 1-minute load average {info['load_average'][0]}–{info['load_average'][1]} while the steps "
             f"were timed (other jobs shared the cores: the times are upper bounds). Total: {total:,.0f} CPU hours.",
             "",
             "| cell | members | control | px | s / step | s / epoch | epochs | training hours (both models) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['cell']} | {r['members']:,} | {r['control']:,} | {r['image_size']} | {r['step_seconds']:.3f} | "
              f"{r['epoch_seconds']:,.0f} | {r['epochs']} | {r['training_hours']:,.1f} |" for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    cache.write_text(json.dumps({"settings": settings, "step_seconds": measured, "measured_load": loads,
                                 "machine": info, "cells": rows}, indent=1))


if __name__ == "__main__":
    main()
