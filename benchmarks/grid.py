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
import time
import tomllib
from dataclasses import fields
from pathlib import Path

import torch

from gmint.assess.evaluate import evaluate_store
from gmint.data.readers import load_dataset
from gmint.data.split import MembershipSplit, make_split
from gmint.data.transforms import Transform
from gmint.features.extract import extract, split_rows
from gmint.mint import train_mint
from gmint.models.train import TrainConfig, train_audited

SETUPS = ("entry", "middle", "output", "combined")
FRACTIONS = ("D100", "D10", "D1")


def run_cell(cell: dict[str, object], defaults: dict[str, object], workdir: Path, out: Path, *,
             data_root: Path | None, show_progress: bool) -> None:
    """One (dataset, architecture) cell; appends one JSON row per (signal, setup, fraction) to `out`."""
    cfg = {**defaults, **cell}
    name = f"{cfg['dataset']}-{cfg['arch']}"
    cell_dir = workdir / name
    cell_dir.mkdir(parents=True, exist_ok=True)
    done = {(r["cell"], r["signal"], r["setup"], r["fraction"]) for r in read_rows(out)}
    data = load_dataset(str(cfg["dataset"]), data_root, **dict(cfg.get("data_options", {})))  # type: ignore[arg-type]
    split_path = cell_dir / "split.json"
    if split_path.exists():
        split = MembershipSplit.load(split_path)
    else:
        split = make_split(data, members=cfg["members"], external=cfg["external"], control=cfg["control"],  # type: ignore[arg-type]
                           holdout=float(cfg["holdout"]), protocol=str(cfg["protocol"]), seed=int(cfg["seed"]))
        split.save(split_path)
    train = train_config(cfg["train"])  # type: ignore[arg-type]
    transform = Transform(size=cfg.get("image_size"))  # type: ignore[arg-type]
    models = {}
    for role in ("audited", "control"):
        t0 = time.perf_counter()
        models[role] = train_audited(data, split, arch=str(cfg["arch"]), transform=transform, config=train,
                                     out=cell_dir / f"{role}.pt", arch_options=dict(cfg.get("arch_options", {})),
                                     resume=True, negative_control=role == "control", show_progress=show_progress)
        print(f"[{name}] {role} model ready ({time.perf_counter() - t0:.0f} s): {models[role].meta['record']}")
    rows = split_rows(split)

    def store(role: str, source: str) -> Path:
        path = cell_dir / f"{role}-{source}.h5"
        return extract(models[role], data, rows, out=path, layers="combined", reduction="mean", source=source,
                       engine=str(cfg["engine"]), split=split, seed=int(cfg["seed"]), resume=True,
                       batch_size=int(cfg["batch_size"]), show_progress=show_progress)

    plan = [("gMINT", "audited", "gradient", setup, fraction) for setup in SETUPS for fraction in FRACTIONS]
    plan += [("activation-MINT", "audited", "activation", "combined", "D100"),
             ("negative control", "control", "gradient", "combined", "D100")]
    for signal, role, source, setup, fraction in plan:
        if (name, signal, setup, fraction) in done:
            continue
        path = store(role, source)
        t0 = time.perf_counter()
        mint = train_mint(path, kind="mlp", setup=setup, fraction=fraction, seed=int(cfg["seed"]))
        result = evaluate_store(mint, path, seed=int(cfg["seed"]))
        row = {"cell": name, "dataset": cfg["dataset"], "arch": cfg["arch"], "signal": signal, "setup": setup,
               "fraction": fraction, "layers": mint.spec.layers, "protocol": split.protocol,
               "split": {"members": len(split.members), "external": len(split.external),
                         "pool": len(split.pool), "holdout": len(split.holdout)},
               "mint": result["mint"], "loss_threshold": result["loss_threshold"],
               "audited_model": result["audited_model"], "model_record": models[role].meta["record"],
               "train_config": models[role].meta["train_config"], "train_seconds": models[role].meta["train_seconds"],
               "mint_seconds": round(time.perf_counter() - t0, 2), "fit_rows": len(mint.fitted_ids)}
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"[{name}] {signal:17s} {setup:9s} {fraction}: acc {result['mint']['accuracy']['value']:.3f} "
              f"AUC {result['mint']['auc']['value']:.3f} (loss threshold AUC "
              f"{result['loss_threshold']['auc']['value']:.3f})")


def train_config(table: dict[str, object]) -> TrainConfig:
    """The TOML's `train` table as a TrainConfig (epochs, batch_size, optimizer, lr, weight_decay, schedule,
    augment, seed, threads); an unknown key is refused with the known ones."""
    known = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"grid config: unknown train key(s) {unknown}; known: {known}")
    return TrainConfig(**table)  # type: ignore[arg-type]


def read_rows(path: Path) -> list[dict[str, object]]:
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
        run_cell(cell, config["defaults"], args.workdir, args.out, data_root=args.data_root,
                 show_progress=args.progress)


if __name__ == "__main__":
    main()
