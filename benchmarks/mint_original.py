"""The original MINT, as published, beside gMINT and the loss threshold at CPU scale.

For each cell (dataset × architecture of `benchmarks/configs/mint-original-cpu.toml`) the audited model is
trained on the grid's split and recipe, then three stores are extracted from it: MEAN Weight Modifiers of the
combined layers (gMINT), per-channel activation means of the same layers (gmint's former activation-MINT), and
activation maps of chosen modules, average-pooled to at most 8 × 8 (the MINT papers' input). Every probe fits a
MINT classifier on the auditor's pool and is scored on the same held-out rows as the loss threshold:

- activation MINT as published: the MLP ("vanilla") on the penultimate embedding, on the entry layer's maps and
  on all stored modules together; the CNN MINT on the entry maps and on all of them; label-aware variants (the
  true class as an input) and class-specific models (one per class);
- gMINT with the same three classifier families (MLP, label-aware MLP, class-specific MLP).

Cells with `depth = true` also sweep every block of the audited model (`gmint.assess.depth`), activation and
gradient MINT per block, with the loss threshold as a line, and plot it.

Every probe's row is appended to the JSONL as it finishes and skipped when the script runs again (models and
stores resume in their work folder), so a killed run continues where it stopped.

    nice -n 10 python -m benchmarks.mint_original --config benchmarks/configs/mint-original-cpu.toml
    (defaults: --out benchmarks/results/mint-original-cpu.jsonl --work runs/mint-original)
    python -m benchmarks.mint_original --report-only --out benchmarks/results/mint-original-cpu.jsonl

(`--report-only` also draws the depth figures again from the rows: nothing is fitted.)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import gmint
from gmint.assess.depth import DepthPoint, DepthSweep, plot_depth, sweep_depth
from gmint.assess.evaluate import evaluate_store
from gmint.assess.metrics import Estimate
from gmint.data.readers import load_dataset
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.features.extract import extract, split_rows
from gmint.features.settings import ExtractSettings
from gmint.mint import train_mint
from gmint.models.train import TrainConfig, train_audited

PAPER_FACE = Path(__file__).resolve().parents[2] / "shared" / "paper" / "mint-face.csv"
# The object-classification MINT paper (CIFAR-10/100, GTSRB): 70–80% accuracy, AUC 0.72, best at the
# penultimate layer, with class-specific MINT models.
PAPER_OBJECT = "70–80% accuracy, AUC 0.72 at the penultimate layer (class-specific MINT models)"


@dataclass(frozen=True)
class Probe:
    """One MINT classifier of a cell: what it is called, the store it reads, the setup, kind and options."""

    name: str
    store: str      # gradient | activation | maps
    setup: str
    kind: str = "mlp"
    options: Mapping[str, object] = field(default_factory=dict)


PROBES = (
    Probe("gMINT (MLP)", "gradient", "combined"),
    Probe("gMINT label-aware MLP", "gradient", "combined", options={"label_aware": True}),
    Probe("gMINT class-specific MLP", "gradient", "combined", "per_class", {"base": "mlp"}),
    Probe("activation per-channel mean (gmint's former activation-MINT)", "activation", "combined"),
    Probe("MINT MLP", "maps", "penultimate"),
    Probe("MINT label-aware MLP", "maps", "penultimate", options={"label_aware": True}),
    Probe("MINT class-specific MLP", "maps", "penultimate", "per_class", {"base": "mlp"}),
    Probe("MINT MLP", "maps", "entry"),
    Probe("MINT CNN", "maps", "entry", "map_cnn"),
    Probe("MINT label-aware CNN", "maps", "entry", "map_cnn", {"label_aware": True}),
    Probe("MINT MLP", "maps", "all"),
    Probe("MINT CNN", "maps", "all", "map_cnn"),
)
STORE_FILES = {"gradient": "audited-gradient.h5", "activation": "audited-activation.h5", "maps": "audited-maps.h5"}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def provenance() -> dict[str, object]:
    """What measured a row: gmint version and commit, torch version."""
    return {"gmint": gmint.__version__, "commit": _git("rev-parse", "--short", "HEAD"),
            "uncommitted_changes": bool(_git("status", "--porcelain")), "torch": torch.__version__}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows a run has written so far."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append(path: Path, row: Mapping[str, object]) -> None:
    """Append one row and flush it (a killed run keeps every finished row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def run_cell(cfg: Mapping[str, Any], work: Path, out: Path, data_root: Path | None) -> None:
    """Train (or reuse) the cell's audited model, extract its stores, fit and score every probe not yet done."""
    name = f"{cfg['dataset']}-{cfg['arch']}"
    done = {(r["cell"], r["probe"], r["setup"]) for r in read_rows(out) if r.get("type") == "probe"}
    probes = [p for p in PROBES if (name, p.name, p.setup) not in done] if cfg.get("probes", True) else []
    kinds = list(cfg.get("depth_kinds", ["mlp"]))
    depth_done = any(r.get("type") == "depth-done" and r["cell"] == name and r.get("kinds", ["mlp"]) == kinds
                     for r in read_rows(out))
    if not probes and (depth_done or not cfg.get("depth", False)):
        return
    workdir = work / name
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    data = load_dataset(str(cfg["dataset"]), data_root)
    split = make_split(data, members=cfg["members"], external=cfg["external"], control=cfg["control"],
                       holdout=float(cfg["holdout"]), protocol=str(cfg["protocol"]), seed=int(cfg["seed"]))
    split.save(workdir / "split.json")
    t0 = time.perf_counter()
    audited = train_audited(data, split, arch=str(cfg["arch"]), transform=Transform(),
                            config=TrainConfig(**cfg["train"]), out=workdir / "audited.pt",
                            arch_options=dict(cfg.get("arch_options", {})), resume=True)
    print(f"[{name}] audited model ready ({time.perf_counter() - t0:.0f} s): {audited.meta['record']}", flush=True)
    rows = split_rows(split)
    common = {"seed": int(cfg["seed"]), "batch_size": int(cfg["batch_size"])}
    settings = {"gradient": ExtractSettings(layer_setup="combined", source="gradient", reduction="mean", **common),
                "activation": ExtractSettings(layer_setup="combined", source="activation", reduction="mean", **common),
                "maps": ExtractSettings(layer_setup=str(cfg["modules"]), source="activation-maps",
                                        reduction=str(cfg["pool"]), **common)}
    stores: dict[str, Path] = {}
    for probe in probes:
        if probe.store not in stores:
            t0 = time.perf_counter()
            stores[probe.store] = extract(audited, data, rows, settings[probe.store],
                                          out=workdir / STORE_FILES[probe.store], split=split, resume=True)
            print(f"[{name}] {probe.store} store ready ({time.perf_counter() - t0:.0f} s)", flush=True)
        t0 = time.perf_counter()
        mint = train_mint(stores[probe.store], kind=probe.kind, setup=probe.setup, seed=int(cfg["seed"]),
                          options=dict(probe.options))
        result = evaluate_store(mint, stores[probe.store], n_boot=int(cfg["n_boot"]), seed=int(cfg["seed"]))
        row = {"type": "probe", "cell": name, "dataset": cfg["dataset"], "arch": cfg["arch"], "probe": probe.name,
               "store": probe.store, "source": settings[probe.store]["source"],
               "reduction": settings[probe.store]["reduction"], "setup": probe.setup, "kind": probe.kind,
               "options": dict(probe.options), "features": mint.spec.layers, "width": sum(mint.spec.dims),
               "rows": {"members": result.rows.members, "external": result.rows.external},
               "intervals": result.intervals,
               "mint": {k: v.to_dict() for k, v in result.mint.items()},
               "loss_threshold": {k: v.to_dict() for k, v in result.loss_threshold.items()},
               "audited_model": result.audited_model.to_dict(), "model_record": audited.meta["record"],
               "train_config": audited.meta["train_config"], "fit_rows": len(mint.fitted_ids),
               "seconds": round(time.perf_counter() - t0, 1), "warnings": list(result.warnings),
               "config": {k: v for k, v in cfg.items() if k != "cells"}, **provenance()}
        append(out, row)
        m, b = result.mint, result.loss_threshold
        print(f"[{name}] {probe.name:58s} {probe.setup:11s} acc {m['accuracy'].value:.3f} AUC {m['auc'].value:.3f} "
              f"(loss threshold AUC {b['auc'].value:.3f}) {row['seconds']} s", flush=True)
    if cfg.get("depth", False) and not depth_done:
        def write(point: DepthPoint) -> None:
            append(out, {"type": "depth", "cell": name, **point.to_dict(), **provenance()})
            print(f"[{name}] depth {point.depth:2d} {point.block:14s} {point.source:10s} AUC "
                  f"{point.mint['auc'].value:.3f}", flush=True)

        extraction = ExtractSettings(seed=int(cfg["seed"]), batch_size=int(cfg["batch_size"]))
        sweep = sweep_depth(audited, data, split, workdir / "depth", pool=str(cfg["depth_pool"]),
                            extraction=extraction, kinds=kinds, n_boot=int(cfg["n_boot"]), on_point=write)
        plot_sweep(name, sweep, out)
        append(out, {"type": "depth-done", "cell": name, "blocks": sweep.blocks, "kinds": kinds, **provenance()})


def plot_sweep(cell: str, sweep: DepthSweep, out: Path) -> Path:
    """The cell's depth figure beside the JSONL `out`, where the report links it."""
    return plot_depth(sweep, out.with_name(f"{out.stem}-depth-{cell}.png"),
                      title=f"{cell}: MINT per block (pooled activation maps / MEAN Weight Modifiers)")


def recorded_sweeps(rows: list[dict[str, Any]]) -> dict[str, DepthSweep]:
    """Each finished sweep as its rows record it (blocks from its last `depth-done` row, every depth point of
    the cell), so that its figure is drawn again without fitting anything."""
    blocks = {r["cell"]: list(r["blocks"]) for r in rows if r.get("type") == "depth-done"}
    return {cell: DepthSweep(names, sorted((DepthPoint.from_dict(r) for r in rows
                                            if r.get("type") == "depth" and r["cell"] == cell),
                                           key=lambda p: (p.depth, p.source, p.kind)))
            for cell, names in blocks.items()}


# -- report ------------------------------------------------------------------------------------------------------
def _est(d: Mapping[str, Any]) -> Estimate:
    return Estimate.from_dict(d)


def _ci(est: Estimate, digits: int = 3) -> str:
    if est.value is None:
        return "n/a"
    return f"{est.value:.{digits}f} [{est.low:.{digits}f}, {est.high:.{digits}f}]"


def _pct(est: Estimate) -> str:
    return "n/a" if est.value is None else f"{100 * est.value:.1f}"


def paper_face(path: Path) -> list[str]:
    """The MINT (face recognition) paper's accuracies, as a Markdown table."""
    if not path.exists():
        return [f"(paper figures not found at {path})"]
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    lines = ["| MINT model | auditable data | FR model 1 | FR model 2 | FR model 3 |", "|---|---|---|---|---|"]
    lines += [f"| {r['mint_model']} | {r['auditable_data']} | {r['fr_model_1']} | {r['fr_model_2']} | "
              f"{r['fr_model_3']} |" for r in rows]
    return lines


def report(rows: list[dict[str, Any]], out: Path) -> str:
    """The Markdown report: per cell, every probe beside the loss threshold; the depth sweeps; the papers."""
    lines = ["# The original MINT beside gMINT (CPU scale)", "",
             "Every figure is measured on held-out rows no classifier was fitted on (balanced members and "
             "externals); intervals are stratified-bootstrap 95%. Accuracy is at the classifier's 0.5 decision on "
             "the balanced rows (50% = chance). The loss threshold is fitted on the auditor's pool and scored on "
             "the same rows. Activation maps are average-pooled to at most 8 × 8 per channel (4 × 4 in the depth "
             "sweeps). `entry`, `middle` and `output` are the modules owning those weight layers, `penultimate` the "
             "block before the classifier (its embedding), `all` every stored module together.", ""]
    probes = [r for r in rows if r.get("type") == "probe"]
    for cell in dict.fromkeys(r["cell"] for r in probes):
        mine = [r for r in probes if r["cell"] == cell]
        first = mine[0]
        gap, rec = first["audited_model"], first["model_record"]
        lines += [f"## {cell}", "",
                  f"Audited model: {first['train_config']['epochs']} epochs of {first['train_config']['optimizer']} "
                  f"(lr {first['train_config']['lr']}); on the evaluated rows accuracy members "
                  f"{gap['members_accuracy']:.3f} vs external {gap['external_accuracy']:.3f}, mean loss members "
                  f"{gap['members_loss']:.4f} vs external {gap['external_loss']:.4f}; official test accuracy "
                  f"{rec.get('test_accuracy', 'n/a')}. Evaluated rows: {first['rows']['members']} members, "
                  f"{first['rows']['external']} external; 95% intervals resample "
                  f"{first.get('intervals', 'rows')}.", "",
                  "| MINT | store | setup | features | accuracy % | AUC [95% CI] | TPR @ 1% FPR [95% CI] |",
                  "|---|---|---|---|---|---|---|"]
        for r in mine:
            m = {k: _est(v) for k, v in r["mint"].items()}
            lines.append(f"| {r['probe']} | {r['source']} ({r['reduction']}) | {r['setup']} | {r['width']:,} | "
                         f"{_pct(m['accuracy'])} | {_ci(m['auc'])} | {_ci(m['tpr_at_1pct_fpr'])} |")
        b = {k: _est(v) for k, v in first["loss_threshold"].items()}
        lines.append(f"| **loss threshold** | audited model's loss | — | 1 | {_pct(b['accuracy'])} | {_ci(b['auc'])} | "
                     f"{_ci(b['tpr_at_1pct_fpr'])} |")
        best = max((r for r in mine if r["store"] == "maps"), key=lambda r: r["mint"]["auc"]["value"], default=None)
        if best is not None:
            bm, lt = _est(best["mint"]["auc"]), b["auc"]
            assert bm.value is not None and lt.value is not None
            side = "above" if bm.value > lt.value else "below"
            disjoint = (bm.low is not None and lt.high is not None and bm.low > lt.high) or \
                (bm.high is not None and lt.low is not None and bm.high < lt.low)
            lines += ["", f"Best activation MINT here: {best['probe']} on `{best['setup']}`, AUC {bm.value:.3f}: "
                          f"{side} the loss threshold's {lt.value:.3f} by {abs(bm.value - lt.value):.3f} "
                          f"({'the 95% intervals are disjoint' if disjoint else 'the 95% intervals overlap'})."]
        lines.append("")
    depth = [r for r in rows if r.get("type") == "depth"]
    for cell in dict.fromkeys(r["cell"] for r in depth):
        mine = [r for r in depth if r["cell"] == cell]
        b = _est(mine[0]["loss_threshold"]["auc"])
        bt = _est(mine[0]["loss_threshold"]["tpr_at_1pct_fpr"])
        lines += [f"## Depth sweep: {cell}", "", f"![depth]({out.stem}-depth-{cell}.png)", "",
                  f"Loss threshold on the same rows: AUC {_ci(b)}, TPR @ 1% FPR {_ci(bt)}.", "",
                  "| depth | block | source | MINT | features | AUC [95% CI] | TPR @ 1% FPR |",
                  "|---|---|---|---|---|---|---|"]
        for r in sorted(mine, key=lambda r: (r["depth"], r["source"], r["kind"])):
            m = {k: _est(v) for k, v in r["mint"].items()}
            lines.append(f"| {r['depth']} | {r['block']} | {r['source']} | {r['kind']} | {r['width']:,} | "
                         f"{_ci(m['auc'])} | {_ci(m['tpr_at_1pct_fpr'])} |")
        for source, kind in sorted({(r["source"], r["kind"]) for r in mine}):
            points = [r for r in mine if (r["source"], r["kind"]) == (source, kind)]
            top = max(points, key=lambda r: r["mint"]["auc"]["value"])
            lines.append(f"\nHighest {source} MINT ({kind}) AUC: block {top['block']} (depth {top['depth']}), "
                         f"{top['mint']['auc']['value']:.3f}.")
        lines.append("")
    lines += ["## The papers' figures", "", "MINT on face recognition (accuracy, MINT trained on 100K samples; "
              "`../shared/paper/mint-face.csv`):", "", *paper_face(PAPER_FACE), "",
              f"MINT on object classification (CIFAR-10/100, GTSRB): {PAPER_OBJECT}.", ""]
    if probes:
        meta = probes[-1]
        lines.append(f"Measured with gmint {meta['gmint']} (commit {meta['commit'] or 'unknown'}"
                     f"{', with uncommitted changes' if meta['uncommitted_changes'] else ''}), torch {meta['torch']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("benchmarks/configs/mint-original-cpu.toml"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mint-original-cpu.jsonl"))
    parser.add_argument("--work", type=Path, default=Path("runs/mint-original"))
    parser.add_argument("--data-root", type=Path, default=os.environ.get("GMINT_DATA"))
    parser.add_argument("--only", default="", help="Comma-separated cells (dataset-arch) to run (default: all).")
    parser.add_argument("--report-only", action="store_true", help="Write the Markdown report from the JSONL.")
    args = parser.parse_args()
    if not args.report_only:
        config = tomllib.loads(args.config.read_text())
        only = [c for c in args.only.split(",") if c]
        for cell in config["cells"]:
            cfg = {**config["defaults"], **cell}
            if only and f"{cfg['dataset']}-{cfg['arch']}" not in only:
                continue
            run_cell(cfg, args.work, args.out, args.data_root)
    rows = read_rows(args.out)
    if args.report_only:  # the figures follow the drawing code, not only the rows
        for cell, sweep in recorded_sweeps(rows).items():
            plot_sweep(cell, sweep, args.out)
    md = args.out.with_suffix(".md")
    md.write_text(report(rows, args.out))
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
