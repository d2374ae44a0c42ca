"""The zoo at CPU scale: parameters, seconds per training epoch and accuracies on each real dataset.

For each architecture (CPU_SCALE options) and dataset, a seeded grouped split of the official train
part (members / external, class-balanced) trains the model for a few epochs with Adam; the row records
parameter count, seconds per epoch, and member / external / official-test accuracy and loss. Rows are
appended to a JSONL file and skipped when present, so an interrupted run resumes.

    python -m benchmarks.zoo --out benchmarks/results/zoo-cpu.jsonl --data-root ../shared/data
    python -m benchmarks.zoo --out benchmarks/results/zoo-cpu.jsonl --markdown benchmarks/results/zoo-cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from gmint.data.readers import load_dataset
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.models.architectures import CPU_SCALE
from gmint.models.train import TrainConfig, train_audited

ARCHS = ["small_cnn", "mobilenet", "mobilenet_v2", "resnet18", "resnet50", "resnet101", "densenet121", "xception",
         "vit"]
DATASETS = ["mnist", "cifar10", "gtsrb", "tiny_imagenet"]


def read_rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def markdown(rows: list[dict[str, object]]) -> str:
    """One table: architecture × dataset, seconds/epoch and accuracies."""
    lines = ["# Zoo at CPU scale", "",
             f"{rows[0]['members']} members / {rows[0]['external']} external per dataset (grouped split of the "
             f"official train part), Adam lr {rows[0]['lr']}, batch 64, {rows[0]['epochs']} epochs, "
             f"{rows[0]['threads']} threads on {rows[0]['machine']}.", "",
             "| architecture | options | parameters | dataset | s / epoch | train acc | external acc | "
             "test acc |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = r["record"]
        test = f"{rec['test_accuracy']:.3f}" if "test_accuracy" in rec else "—"
        lines.append(f"| {r['arch']} | {r['options']} | {r['parameters']:,} | {r['dataset']} | "
                     f"{r['seconds_per_epoch']:.1f} | {rec['members_accuracy']:.3f} | {rec['external_accuracy']:.3f} | "
                     f"{test} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, default=None, help="write the table from --out and exit")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for training (recorded: the weights depend on it)")
    parser.add_argument("--only", default=None, help="run only cells whose 'arch-dataset' contains this")
    args = parser.parse_args()
    if args.markdown:
        args.markdown.write_text(markdown(read_rows(args.out)))
        return
    torch.set_num_threads(args.threads)
    done = {(r["arch"], r["dataset"]) for r in read_rows(args.out)}
    for dataset in DATASETS:
        data = None
        for arch in ARCHS:
            if (arch, dataset) in done or (args.only and args.only not in f"{arch}-{dataset}"):
                continue
            data = data or load_dataset(dataset, args.data_root)
            split = make_split(data, members=args.members, external=args.members, control=0, seed=0)
            options = CPU_SCALE.get(arch, {})
            config = TrainConfig(epochs=args.epochs, batch_size=64, lr=1e-3, seed=0, threads=args.threads)
            out = args.workdir / f"{arch}-{dataset}.pt"
            model = train_audited(data, split, arch=arch, transform=Transform(), config=config, out=out,
                                  arch_options=options, resume=True)
            row = {"arch": arch, "dataset": dataset, "options": options, "members": len(split.members),
                   "external": len(split.external), "epochs": args.epochs, "lr": config.lr,
                   "parameters": sum(p.numel() for p in model.module.parameters()),
                   "seconds_per_epoch": model.meta["train_seconds"] / args.epochs,
                   "record": model.meta["record"], "history": model.meta["history"],
                   "threads": model.meta["train_config"]["threads"],
                   "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}"}
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{arch:13s} {dataset:14s} {row['seconds_per_epoch']:7.1f} s/epoch  "
                  f"train {row['record']['members_accuracy']:.3f} external {row['record']['external_accuracy']:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
