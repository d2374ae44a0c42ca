"""The audit grid: datasets × architectures × layer setups × data fractions, beside the paper.

Each cell trains an audited model (and a negative-control model that saw neither side) on a seeded
split, extracts MEAN Weight Modifiers of the combined layers once, fits one MLP MINT classifier per
layer setup and data fraction on the auditor's pool, and evaluates on held-out rows — with the loss
threshold, activation-MINT and the negative control on the same rows, and the audited model's gap.

Every step writes its result before the next starts and is skipped when already done, so a killed
run resumes where it stopped (run the same command again). Rows are appended to a JSONL file.

Training runs on the TOML's `train.threads` CPU threads (`train = {..., threads = N}`, default 1): the
weights depend on the thread count, so it is part of the recorded TrainConfig and a finished model is
only reused with the same count. `--threads` affects extraction only (MINT classifiers always fit on one
thread).

    python -m benchmarks.grid --config benchmarks/configs/grid-cpu.toml --out benchmarks/results/grid-cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from gmint.data.readers import load_dataset
from gmint.experiment import Cell, Probe, Recipe, run_cell
from gmint.models.train import TrainConfig

SETUPS = ("entry", "middle", "output", "combined")
FRACTIONS = ("D100", "D10", "D1")
PROBES = (*(Probe("gMINT", setup, fraction) for setup in SETUPS for fraction in FRACTIONS),
          Probe("activation-MINT", "combined"), Probe("negative control", "combined"))


def run_grid_cell(cell: Mapping[str, Any], defaults: Mapping[str, Any], workdir: Path, out: Path, *,
                  data_root: Path | None, show_progress: bool) -> None:
    """One (dataset, architecture) cell; appends one JSON row per (signal, setup, fraction) to `out`."""
    cfg = {**defaults, **cell}
    name = f"{cfg['dataset']}-{cfg['arch']}"
    done = {(r["cell"], r["signal"], r["setup"], r["fraction"]) for r in read_rows(out)}
    recipe = replace(grid_recipe(cfg), probes=tuple(p for p in PROBES
                                                    if (name, p.signal, p.setup, p.fraction) not in done))
    if not recipe.probes:
        return
    data = load_dataset(str(cfg["dataset"]), data_root, **dict(cfg.get("data_options", {})))

    def write(result: Cell) -> None:
        measured = result.measurements[-1]
        probe, evaluation, model = measured.probe, measured.evaluation.to_dict(), result.models[measured.probe.model]
        split = result.split
        row = {"cell": name, "dataset": cfg["dataset"], "arch": cfg["arch"], "signal": probe.signal,
               "setup": probe.setup, "fraction": probe.fraction, "layers": measured.evaluation.protocol["layers"],
               "protocol": split.protocol,
               "split": {"members": len(split.members), "external": len(split.external),
                         "pool": len(split.pool), "holdout": len(split.holdout)},
               "mint": evaluation["mint"], "loss_threshold": evaluation["loss_threshold"],
               "audited_model": evaluation["audited_model"], "model_record": model.meta["record"],
               "train_config": model.meta["train_config"], "train_seconds": model.meta["train_seconds"],
               "mint_seconds": measured.seconds, "fit_rows": measured.fit_rows}
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        mint, baseline = measured.evaluation.mint, measured.evaluation.loss_threshold
        print(f"[{name}] {probe.signal:17s} {probe.setup:9s} {probe.fraction}: acc {mint['accuracy'].value:.3f} "
              f"AUC {mint['auc'].value:.3f} (loss threshold AUC {baseline['auc'].value:.3f})")

    run_cell(data, recipe, workdir / name, on_measurement=write, show_progress=show_progress)


def grid_recipe(cfg: Mapping[str, Any]) -> Recipe:
    """A cell's settings (the TOML's defaults overlaid with the cell's table) as the experiment's recipe."""
    return Recipe(arch=str(cfg["arch"]), train=train_config(cfg["train"]), probes=PROBES, members=cfg["members"],
                  external=cfg["external"], control=cfg["control"], holdout=float(cfg["holdout"]),
                  protocol=str(cfg["protocol"]), seed=int(cfg["seed"]), image_size=cfg.get("image_size"),
                  arch_options=dict(cfg.get("arch_options", {})), engine=str(cfg["engine"]),
                  batch_size=int(cfg["batch_size"]))


def train_config(table: Mapping[str, Any]) -> TrainConfig:
    """The TOML's `train` table as a TrainConfig (epochs, batch_size, optimizer, lr, weight_decay, schedule,
    augment, seed, threads); an unknown key is refused with the known ones."""
    known = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"grid config: unknown train key(s) {unknown}; known: {known}")
    return TrainConfig(**table)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSONL results (appended; done rows skipped)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/grid"), help="models and stores")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--only", default=None, help="run only cells whose name contains this")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for extraction only (0: torch's default); training uses the "
                             "config's train.threads")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = tomllib.loads(args.config.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for cell in config["cells"]:
        if args.only and args.only not in f"{cell['dataset']}-{cell['arch']}":
            continue
        run_grid_cell(cell, config["defaults"], args.workdir, args.out, data_root=args.data_root,
                      show_progress=args.progress)


if __name__ == "__main__":
    main()
