"""aMINT at CPU scale: the audited model trained with its MINT head, per dataset, beside the authors' table.

Each cell draws a seeded split, trains the architecture jointly with an aMINT head (`gmint.amint.train_amint`),
reports the head on held-out members and on the members it saw (both against never-seen rows), passive gMINT
and the loss threshold on the same model and rows (`gmint.amint.evaluate_amint`), and trains the same
architecture alone with the same recipe on the same members, so the row says what aMINT costs the model's
test accuracy. Rows are appended to a JSONL file as cells finish; a rerun skips finished cells and resumes a
killed one from its checkpoints (models, store).

    python -m benchmarks.amint --config benchmarks/configs/amint-cpu.toml --out benchmarks/results/amint-cpu.jsonl
    python -m benchmarks.amint --report benchmarks/results/amint-cpu.jsonl --paper ../shared/paper/amint-table1.csv \
        --out benchmarks/results/amint-cpu.md
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from benchmarks.speed import machine_info
from gmint.amint import AmintConfig, evaluate_amint, train_amint, write_report
from gmint.data.readers import load_dataset
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.models.train import TrainConfig, train_audited

# The authors' table names datasets like this.
PAPER_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "gtsrb": "GTSRB", "tiny_imagenet": "Tiny ImageNet"}
PAPER_ARCH = {"mobilenet": "MobileNet", "resnet50": "ResNet50", "resnet101": "ResNet100",
              "densenet121": "DenseNet121", "xception": "Xception", "vit": "ViT"}


def cell_name(cfg: Mapping[str, Any]) -> str:
    return f"{cfg['dataset']}-{cfg['arch']}"


def run_cell(cfg: Mapping[str, Any], workdir: Path, *, data_root: Path | None, show_progress: bool) -> dict[str, Any]:
    """Train and measure one cell in `workdir/<cell>` (resuming what is there); return its JSON row."""
    name = cell_name(cfg)
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    data = load_dataset(str(cfg["dataset"]), data_root, **dict(cfg.get("data_options", {})))
    split = make_split(data, members=cfg["members"], external=cfg["external"], holdout=float(cfg["holdout"]),
                       protocol=str(cfg["protocol"]), seed=int(cfg["seed"]))
    split.save(folder / "split.json")
    transform = Transform(size=cfg.get("image_size"))
    train = train_config(cfg["train"])
    amint_cfg = AmintConfig(train=train, **dict(cfg.get("amint", {})))
    options = dict(cfg.get("arch_options", {}))
    t0 = time.perf_counter()
    model = train_amint(data, split, arch=str(cfg["arch"]), transform=transform, config=amint_cfg,
                        out=folder / "amint", arch_options=options, taps=cfg.get("taps"), resume=True,
                        show_progress=show_progress)
    report = evaluate_amint(model, data, split, transform=transform, n_boot=int(cfg["n_boot"]),
                            seed=int(cfg["seed"]), show_progress=show_progress)
    write_report(report, folder / "amint")
    eval_seconds = time.perf_counter() - t0
    alone = train_audited(data, split, arch=str(cfg["arch"]), transform=transform, config=train,
                          out=folder / "alone.pt", arch_options=options, resume=True, show_progress=show_progress)
    amint_record, alone_record = model.audited.meta["record"], alone.meta["record"]
    key = "test_accuracy" if "test_accuracy" in amint_record else "external_accuracy"
    return {
        "cell": name, "dataset": cfg["dataset"], "arch": cfg["arch"], "arch_options": options,
        "protocol": split.protocol, "seed": int(cfg["seed"]),
        "split": {"members": len(split.members), "external": len(split.external), "pool": len(split.pool),
                  "holdout": len(split.holdout), "sha256": split.sha256},
        "amint_config": model.audited.meta["amint_config"], "train_config": model.audited.meta["train_config"],
        "report": report.to_dict(),
        "audited_model": amint_record, "alone_model": alone_record,
        "accuracy_key": key, "accuracy_cost": alone_record[key] - amint_record[key],
        "amint_train_seconds": model.audited.meta["train_seconds"], "alone_train_seconds": alone.meta["train_seconds"],
        "cell_seconds": round(eval_seconds, 1),
    }


def train_config(table: Mapping[str, Any]) -> TrainConfig:
    """The TOML's `train` table as a TrainConfig; an unknown key is refused with the known ones."""
    known = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"amint config: unknown train key(s) {unknown}; known: {known}")
    return TrainConfig(**table)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def paper_rows(path: Path | None) -> list[dict[str, str]]:
    if path is None or not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _value(metrics: Mapping[str, Any], key: str) -> str:
    v = metrics[key]["value"]
    return "n/a" if v is None else f"{v:.3f}"


def _ci(metrics: Mapping[str, Any], key: str) -> str:
    m = metrics[key]
    if m["value"] is None:
        return "n/a"
    return f"{m['value']:.3f} [{m['ci95_low']:.2f}, {m['ci95_high']:.2f}]"


def markdown(rows: list[dict[str, Any]], paper: list[dict[str, str]]) -> str:
    """The report: one line per cell, both readings, passive gMINT, loss threshold, accuracy and its cost."""
    lines = ["# aMINT at CPU scale", ""]
    if rows:
        first = rows[0]
        env = first.get("environment", {})
        lines += [f"gmint {env.get('gmint')} (commit {env.get('commit')}), torch {env.get('torch')}, "
                  f"{env.get('cpu')}; training on {first['train_config']['threads']} thread(s).", ""]
    lines += [
        "aMINT accuracy is the head's P(member) ≥ 0.5 on a balanced set; negatives are never-seen rows (official "
        "test rows under the `paper` protocol, held-out train rows of other tracks under `grouped`). "
        "**held-out**: members the audited model trained on but the head never saw; **head saw**: pool members "
        "the head was trained on (the authors' reading). Passive gMINT (MLP on MEAN Weight Modifiers, combined "
        "layers) and the loss threshold are fitted on the same pool and scored on the held-out rows. "
        "Intervals: stratified bootstrap 95%, resampling whole tracks under `grouped` (frames of one sign are not "
        "independent rows). The head saw its pool externals too: never-seen rows often score "
        "above 0.5, which is why its accuracy trails its AUC.", "",
        "| cell | protocol | members / ext. / held-out | aMINT acc, held-out | aMINT AUC, held-out | "
        "TPR@1%FPR, held-out | aMINT acc, head saw | aMINT AUC, head saw | passive gMINT AUC | loss-threshold AUC |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rep = r["report"]
        held = next(x for x in rep["readings"] if x["name"] == "held-out members")
        saw = next(x for x in rep["readings"] if x["name"] == "members the head saw")
        passive = rep.get("passive_gmint", {}).get("mint")
        s = r["split"]
        lines.append(f"| {r['cell']} | {r['protocol']} | {s['members']} / {s['external']} / {held['members']}+"
                     f"{held['external']} | {_ci(held['amint'], 'accuracy')} | {_ci(held['amint'], 'auc')} | "
                     f"{_value(held['amint'], 'tpr_at_1pct_fpr')} | {_ci(saw['amint'], 'accuracy')} | "
                     f"{_ci(saw['amint'], 'auc')} | {_ci(passive, 'auc') if passive else '—'} | "
                     f"{_ci(held['loss_threshold'], 'auc')} |")
    lines += ["", "## What aMINT costs the audited model", "",
              "The same architecture trained alone with the same recipe (TrainConfig, seed, members).", "",
              "| cell | epochs | aMINT model: members / external / test acc | alone: members / external / test acc | "
              "cost (alone − aMINT) | s (aMINT / alone) |", "|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["audited_model"], r["alone_model"]
        acc = "/".join(f"{x.get(k, float('nan')):.3f}" for x in (a,) for k in
                       ("members_accuracy", "external_accuracy", "test_accuracy") if k in x)
        acc_alone = "/".join(f"{x.get(k, float('nan')):.3f}" for x in (b,) for k in
                             ("members_accuracy", "external_accuracy", "test_accuracy") if k in x)
        lines.append(f"| {r['cell']} | {r['train_config']['epochs']} | {acc} | {acc_alone} | "
                     f"{r['accuracy_cost']:+.3f} ({r['accuracy_key'].removesuffix('_accuracy')}) | "
                     f"{r['amint_train_seconds']:.0f} / {r['alone_train_seconds']:.0f} |")
    if paper:
        lines += ["", "## Beside the authors' table (`amint-table1.csv`, their passive MINT, full scale)", "",
                  "Their audited models: 11,000-40,000 members, 300 epochs, full widths. Range over their six "
                  "architectures and three layer setups.", "",
                  "| dataset | their MINT accuracy | their audited-model accuracy | "
                  "ours: aMINT acc held-out / head saw | ours: audited acc on never-seen rows |",
                  "|---|---|---|---|---|"]
        for r in rows:
            theirs = [p for p in paper if p["dataset"] == PAPER_NAMES.get(r["dataset"])]
            if not theirs:
                continue
            mint = [float(p["mint_accuracy"]) for p in theirs]
            acc = [float(p["audited_model_accuracy"]) for p in theirs]
            rep = r["report"]
            held = next(x for x in rep["readings"] if x["name"] == "held-out members")
            saw = next(x for x in rep["readings"] if x["name"] == "members the head saw")
            ours = r["audited_model"].get("test_accuracy", r["audited_model"]["external_accuracy"])
            lines.append(f"| {PAPER_NAMES[r['dataset']]} ({r['arch']}) | {min(mint):.2f}–{max(mint):.2f} | "
                         f"{min(acc):.2f}–{max(acc):.2f} | {_value(held['amint'], 'accuracy')} / "
                         f"{_value(saw['amint'], 'accuracy')} | {ours:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML with [defaults] and [[cells]]")
    parser.add_argument("--out", type=Path, required=True, help="JSONL results (appended; finished cells skipped), "
                                                                "or the Markdown with --report")
    parser.add_argument("--report", type=Path, default=None, help="write the Markdown of this JSONL to --out")
    parser.add_argument("--paper", type=Path, default=None, help="the authors' amint-table1.csv")
    parser.add_argument("--workdir", type=Path, default=Path("runs/amint"), help="models, heads and stores")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--only", default=None, help="run only cells whose name contains this")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.report is not None:
        args.out.write_text(markdown(read_rows(args.report), paper_rows(args.paper)))
        return
    if args.config is None:
        parser.error("--config is needed to run cells")
    config = tomllib.loads(args.config.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {r["cell"] for r in read_rows(args.out)}
    for cell in config["cells"]:
        cfg = {**config["defaults"], **cell}
        name = cell_name(cfg)
        if name in done or (args.only and args.only not in name):
            continue
        row = run_cell(cfg, args.workdir, data_root=args.data_root, show_progress=args.progress)
        row["environment"] = machine_info(int(cfg["train"].get("threads", 1)), torch.device("cpu"))
        row["config"] = cfg
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        held = next(x for x in row["report"]["readings"] if x["name"] == "held-out members")
        saw = next(x for x in row["report"]["readings"] if x["name"] == "members the head saw")
        print(f"[{name}] aMINT AUC held-out {held['amint']['auc']['value']:.3f}, head saw "
              f"{saw['amint']['auc']['value']:.3f}; accuracy cost {row['accuracy_cost']:+.3f}", flush=True)


if __name__ == "__main__":
    main()
