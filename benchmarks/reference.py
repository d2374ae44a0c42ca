"""Reference models beside gMINT: LiRA, RMIA and calibrated gMINT per cell × mode × attack × K.

Each cell trains an audited model on a seeded split (with a population of control rows), then, for each K in
the config's `ks` (ascending), grows its reference set to K models (`gmint.reference.train_references`, one
checkpoint per model, resumable), extracts the new models' stores, and runs every attack at that K on the same
held-out rows; each result is appended to the JSONL as soon as it is measured, and finished (cell, mode,
attack, K) rows are skipped on a rerun. Rows record each reference model's training seconds, the attack's
parameters, the gmint version and commit, torch, the seeds and the cell's config.

    python -m benchmarks.reference --out benchmarks/results/reference-cpu.jsonl --only mnist-small_cnn
    python -m benchmarks.reference --report --out benchmarks/results/reference-cpu.jsonl

(the config defaults to benchmarks/configs/reference-cpu.toml; the report to --out with .md, its figures under
--out without the suffix).
"""

from __future__ import annotations

import argparse
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.grid import append_row, read_rows, train_config
from benchmarks.speed import machine_info
from gmint.assess.metrics import Estimate
from gmint.data.readers import load_dataset
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.features.settings import ExtractSettings
from gmint.models.io import load_audited
from gmint.models.train import train_audited
from gmint.reference import (
    ATTACKS,
    ReferenceDraw,
    ReferenceExtraction,
    compare_attacks,
    extract_references,
    load_signals,
    train_references,
)
from gmint.reference.compare import AttackResult, Comparison
from gmint.reference.lira import LOSS_ATTACK
from gmint.reference.manifest import MODES
from gmint.reference.report import EPSILON_LABEL, VERSUS_LOSS_LABEL, k_plot, write_comparison

CALIBRATED = ("gmint-calibrated", "gmint-calibrated-norms")
REFERENCE_ATTACKS = ("lira-offline", "lira-offline-global", "lira-online", "lira-online-global", "rmia",
                     "rmia-online")


def cell_name(cfg: Mapping[str, Any]) -> str:
    """The cell's name: its `name`, else `<dataset>-<arch>`."""
    return str(cfg.get("name") or f"{cfg['dataset']}-{cfg['arch']}")


def run_cell(cell: Mapping[str, Any], defaults: Mapping[str, Any], workdir: Path, out: Path, figures: Path, *,
             data_root: Path | None, show_progress: bool, machine: dict[str, Any], workers: int = 1) -> None:
    """One cell: audited model, then per mode and K the reference models, stores and attacks (with `workers`,
    that many reference models train at once, so a K trains ahead up to `workers` models when it is smaller)."""
    cfg = {**defaults, **cell}
    name = cell_name(cfg)
    measured = read_rows(out)
    done = {(r["cell"], r["mode"], r["attack"], r["k"]) for r in measured}
    attacks = list(cfg["attacks"])
    ks = sorted(int(k) for k in cfg["ks"])
    wanted = [(mode, a, k) for mode in cfg["modes"] for a in attacks
              for k in (ks if ATTACKS.get(a).references else [0])]
    if all((name, *w) in done for w in wanted):
        return
    data = load_dataset(str(cfg["dataset"]), data_root, **dict(cfg.get("data_options", {})))
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    split = make_split(data, members=cfg["members"], external=cfg["external"], control=cfg["control"],
                       holdout=float(cfg["holdout"]), protocol=str(cfg["protocol"]), seed=int(cfg["seed"]))
    split.save(folder / "split.json")
    audited_path = folder / "audited.pt"
    audited = train_audited(data, split, arch=str(cfg["arch"]), transform=Transform(size=cfg.get("image_size")),
                            config=train_config(cfg["train"]), out=audited_path,
                            arch_options=dict(cfg.get("arch_options", {})), resume=True, show_progress=show_progress)
    print(f"[{name}] audited: {audited.meta['record']}", flush=True)
    audited_fingerprint = audited.fingerprint  # sha256 over the weights: once, not per row
    if other := rows_of_another_model(measured, name, cfg["modes"], audited_fingerprint, audited.meta["record"]):
        raise SystemExit(f"{out} holds {other} rows of {name} measured on another audited model than "
                         f"{audited_path} (trained again, or on another machine): one table's rows come from one "
                         f"model; move them out of {out}, or write to another --out, and run the cell again")
    settings = ReferenceExtraction(ExtractSettings(layer_setup=str(cfg["layers"]), reduction=str(cfg["reduction"]),
                                                   engine=str(cfg["engine"]), batch_size=int(cfg["batch_size"]),
                                                   seed=int(cfg["seed"])))
    for mode in cfg["modes"]:
        refs = folder / f"references-{mode}"
        for k in ks:
            todo = [a for a in attacks if (name, mode, a, k if ATTACKS.get(a).references else 0) not in done]
            if not todo:
                continue
            t0 = time.perf_counter()
            train_references(data, audited_path, refs, ReferenceDraw(mode=mode, k=max(k, min(workers, ks[-1])),
                                                                     seed=int(cfg["seed"]), init=str(cfg["init"])),
                             resume=(refs / "references.json").exists(),
                             workers=workers, show_progress=show_progress)
            trained = time.perf_counter() - t0
            extract_references(data, refs, k=k, extraction=settings, show_progress=show_progress)
            extracted = time.perf_counter() - t0 - trained
            signals = load_signals(refs, k=k)
            comparison = compare_attacks(signals, todo, [k], n_boot=int(cfg["n_boot"]), seed=int(cfg["seed"]))
            write_comparison(comparison, figures / f"{name}-{mode}-k{k}", title=f"{name}, {mode}, K={k}")
            reference_seconds = [float(load_audited(refs / f"ref-{i:02d}.pt").meta["train_seconds"])  # type: ignore[arg-type]
                                 for i in range(k)]
            for result in comparison.results:
                row = {"cell": name, "dataset": cfg["dataset"], "arch": cfg["arch"], "mode": mode,
                       "attack": result.attack, "k": result.k, **result.to_dict(),
                       "rows": comparison.to_dict()["rows"], "intervals": comparison.intervals,
                       "audited_record": audited.meta["record"], "audited_fingerprint": audited_fingerprint,
                       "audited_train_seconds": audited.meta["train_seconds"],
                       "reference_train_seconds": reference_seconds if result.k else [],
                       "stage_seconds": {"train": round(trained, 1), "extract": round(extracted, 1)},
                       "split": {"members": len(split.members), "external": len(split.external),
                                 "control": len(split.control), "pool": len(split.pool),
                                 "holdout": len(split.holdout), "sha256": split.sha256},
                       "config": {k2: v for k2, v in cfg.items() if k2 != "attacks"}, "machine": machine}
                append_row(out, row)  # locked: cells may run in parallel processes on one file
                done.add((name, mode, result.attack, result.k))
                metrics = result.metrics
                shown = (f"AUC {metrics['auc'].value:.3f} TPR@1% {metrics['tpr_at_1pct_fpr'].value}"
                         if metrics else result.unresolved)
                print(f"[{name}] {mode} K={k} {result.attack:24s} {shown}", flush=True)


def rows_of_another_model(rows: list[dict[str, Any]], cell: str, modes: Sequence[str], fingerprint: str,
                          record: Mapping[str, Any]) -> int:
    """How many of `cell`'s rows in `modes` were measured on an audited model other than this one: by its
    weights' sha256 where a row records it, else by its record (rows written before the fingerprint was).
    Retraining a model on another CPU changes its low bits, so rows measured before and after must not share
    a table."""
    return sum(1 for r in rows if r["cell"] == cell and r["mode"] in modes
               and (r["audited_fingerprint"] != fingerprint if "audited_fingerprint" in r
                    else r["audited_record"] != dict(record)))


def _fmt(metric: Mapping[str, Any] | None) -> str:
    if metric is None:
        return "—"
    if metric.get("value") is None:
        return "n/a"
    return f"{metric['value']:.3f} [{metric['ci95_low']:.3f}, {metric['ci95_high']:.3f}]"


def report(rows: list[dict[str, Any]], config: Mapping[str, Any] | None, figures: Path) -> str:
    """The Markdown report: per cell the attack × K table, the aim checked, and what is pending."""
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    lines = ["# Reference models beside gMINT (CPU scale)", "",
             "Every figure is measured on the same balanced held-out rows (≥ 2,000 per side where the dataset has "
             "them), with bootstrap 95% intervals; a TPR at an FPR is given only where the held-out externals "
             "resolve it. Attacks fit only on the auditor's pool. K reference models are the first K of one set "
             "drawn in complementary pairs of halves of the population (offline: the split's control rows, "
             "disjoint from every candidate). \"AUC − loss threshold\" resamples the attack and the loss "
             "threshold on the same rows (paired: an interval above 0 says the attack reads more than the loss "
             f"threshold on these rows). \"{EPSILON_LABEL}\" is the empirical ε lower bound of the attack's held-out "
             "error rates at the threshold it chose on the pool: for a model trained without differential privacy, "
             "a measured floor on its leakage, not a guarantee. Rows measured before a figure was recorded say "
             "\"not recorded\".", ""]
    for cell in cells:
        mine = [r for r in rows if r["cell"] == cell]
        first = mine[0]
        lines += [f"## {cell}", "",
                  f"Split: {first['split']['members']} members, {first['split']['external']} external, "
                  f"{first['split']['control']} population rows; scored on {first['rows']['members']} + "
                  f"{first['rows']['external']} held-out rows, attacks fitted on {first['rows']['fit_rows']} pool "
                  "rows.", ""]
        for mode in dict.fromkeys(r["mode"] for r in mine):
            at = [r for r in mine if r["mode"] == mode]
            seconds = max((r["reference_train_seconds"] for r in at), key=len, default=[])
            lines += [f"### {mode} reference models", "", _audited_line(at[0]), "",
                      "Training seconds of each reference model: " + ", ".join(f"{s:.0f}" for s in seconds), "",
                      f"| attack | K | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | {VERSUS_LOSS_LABEL} | {EPSILON_LABEL} |",
                      "|---|---|---|---|---|---|---|"]
            for r in sorted(at, key=lambda r: (list(dict.fromkeys(x["attack"] for x in at)).index(r["attack"]),
                                               r["k"])):
                m = r.get("metrics")
                if m is None:
                    lines.append(f"| {r['attack']} | {r['k'] or '—'} | n/a: {r['unresolved']} | | | | |")
                    continue
                tpr01 = m["tpr_at_0.1pct_fpr"]
                lines.append(f"| {r['attack']} | {r['k'] or '—'} | {_fmt(m['auc'])} | {_fmt(m['tpr_at_1pct_fpr'])} | "
                             + (_fmt(tpr01) if tpr01.get("value") is not None else f"n/a ({tpr01['unresolved']})")
                             + f" | {versus_loss_cell(r)} | {epsilon_cell(r)} |")
            lines += ["", *aim_lines(at), ""]
            ks = sorted({r["k"] for r in at if r["k"]})
            if ks:
                plot = figures / f"{cell}-{mode}-vs-k.png"
                k_plot(_as_comparison(mode, at), plot, title=f"{cell}, {mode}")
                lines += [f"![AUC and TPR at 1% FPR against K]({figures.name}/{plot.name})", "",
                          f"![ROC, log scale, K={ks[-1]}]({figures.name}/{cell}-{mode}-k{ks[-1]}/roc_log.png)", ""]
    if config is not None and config.get("notes"):
        lines += ["## Reading the figures", "", str(config["notes"]).strip(), ""]
    if config is not None:
        pending = pending_runs(rows, config)
        if pending:
            lines += ["## Pending", "", "Parts of the config not measured yet (run them with `--only NAME`, "
                      "`--modes` and `--ks`; rows append to the same JSONL):", "", *pending, ""]
    return "\n".join(lines)


def versus_loss_cell(row: Mapping[str, Any]) -> str:
    """A row's AUC − loss threshold, paired on the same rows: "—" for the loss threshold itself, "not recorded"
    for a row written before comparisons measured it (two separate AUCs would not give its interval)."""
    if row["attack"] == LOSS_ATTACK:
        return "—"
    return _fmt(row["auc_minus_loss_threshold"]) if "auc_minus_loss_threshold" in row else "not recorded"


def epsilon_cell(row: Mapping[str, Any]) -> str:
    """A row's ε lower bound to 2 decimals, "not recorded" for a row written before comparisons measured it."""
    return f"{row['epsilon']['epsilon_lower_bound']:.2f}" if "epsilon" in row else "not recorded"


def _audited_line(row: Mapping[str, Any]) -> str:
    """The audited model a table's rows were measured on (one per table: `rows_of_another_model`)."""
    rec = row["audited_record"]
    test = f", test {rec['test_accuracy']:.3f}" if "test_accuracy" in rec else ""
    return (f"Audited model: member accuracy {rec['members_accuracy']:.3f}, external {rec['external_accuracy']:.3f}"
            f"{test}, mean external loss {rec['external_loss']:.4f}; trained in {row['audited_train_seconds']:.0f} s.")


def pending_runs(rows: list[dict[str, Any]], config: Mapping[str, Any]) -> list[str]:
    """One line per config cell and mode with reference-model counts K that have no row yet."""
    measured = {(r["cell"], r["mode"], r["k"]) for r in rows}
    out = []
    for cell in config["cells"]:
        cfg = {**config["defaults"], **cell}
        name = cell_name(cfg)
        for mode in cfg["modes"]:
            missing = [k for k in [0, *sorted(int(k) for k in cfg["ks"])] if (name, mode, k) not in measured]
            if missing:
                shown = "every K" if 0 in missing else "K = " + ", ".join(map(str, missing))
                out.append(f"- {name}, {mode}: {shown}")
    return out


def _as_comparison(mode: str, rows: list[dict[str, Any]]) -> Comparison:
    """The JSONL rows of one cell and mode as a Comparison without scores (what the K plot reads)."""
    results = tuple(AttackResult(r["attack"], r["k"], {n: Estimate.from_dict(e) for n, e in r["metrics"].items()}
                                 if r.get("metrics") else None, unresolved=r.get("unresolved", "")) for r in rows)
    return Comparison(mode, np.empty(0, np.int64), np.empty(0, np.int64), results, 0, 0)


def aim_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The aims, checked at each K: calibrated gMINT ≥ the best of LiRA and RMIA in AUC and TPR at 1% FPR, and
    ≥ the loss threshold's AUC + 0.05 (the issue sets it for the generalising model; shown for every cell)."""
    out = []
    loss_auc = next((r["metrics"]["auc"]["value"] for r in rows if r["attack"] == "loss" and r.get("metrics")), None)
    for k in sorted({r["k"] for r in rows if r["k"]}):
        at = {r["attack"]: r["metrics"] for r in rows if r["k"] == k and r.get("metrics")}
        best = {m: max(((a, at[a][m]["value"]) for a in REFERENCE_ATTACKS if a in at
                        and at[a][m]["value"] is not None), key=lambda p: p[1], default=None)
                for m in ("auc", "tpr_at_1pct_fpr")}
        for cal in CALIBRATED:
            if cal not in at or best["auc"] is None:
                continue
            verdicts = []
            for m, label in (("auc", "AUC"), ("tpr_at_1pct_fpr", "TPR@1%FPR")):
                b, v = best[m], at[cal][m]["value"]
                if b is None or v is None:
                    continue
                verdicts.append(f"{label} {v:.3f} vs the best of LiRA and RMIA {b[1]:.3f} ({b[0]}): "
                                f"{'met' if v >= b[1] else 'not met'}")
            auc = at[cal]["auc"]["value"]
            if loss_auc is not None and auc is not None:
                verdicts.append(f"AUC {auc:.3f} vs the loss threshold's {loss_auc:.3f} + 0.05: "
                                f"{'met' if auc >= loss_auc + 0.05 else 'not met'}")
            out.append(f"- K={k}, {cal}: " + "; ".join(verdicts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("benchmarks/configs/reference-cpu.toml"))
    parser.add_argument("--out", type=Path, required=True, help="JSONL results (appended; done rows skipped)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/reference"), help="models and stores")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--only", action="append", default=None, help="run only the cell of this name (repeatable)")
    parser.add_argument("--ks", default=None, help="override the config's ks, e.g. 1,2,4")
    parser.add_argument("--modes", default=None, help="override every cell's modes, e.g. offline")
    parser.add_argument("--report", action="store_true", help="write the Markdown report from --out and exit")
    parser.add_argument("--markdown", type=Path, default=None, help="the report (default: --out with .md)")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="reference models trained at once, one process "
                        "each (the weights do not depend on it)")
    args = parser.parse_args()
    config = tomllib.loads(args.config.read_text())
    modes = args.modes.split(",") if args.modes else None
    if modes and (unknown := sorted(set(modes) - set(MODES))):
        parser.error(f"--modes: unknown {unknown}; choose from {list(MODES)}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    figures = args.out.with_suffix("")
    if args.report:
        text = report(read_rows(args.out), config, figures)
        (args.markdown or args.out.with_suffix(".md")).write_text(text, encoding="utf-8")
        return
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    defaults = dict(config["defaults"])
    try:
        ks = [int(k) for k in args.ks.split(",")] if args.ks else None
    except ValueError:
        parser.error(f"--ks takes whole numbers separated by commas, e.g. 1,2,4; got {args.ks!r}")
    machine = {key: value for key, value in machine_info(1, torch.device("cpu")).items()
               if key in ("cpu", "cpu_isa", "cores", "torch", "python", "gmint", "commit", "uncommitted_changes",
                          "date")}
    for cell in config["cells"]:
        if args.only and cell_name({**defaults, **cell}) not in args.only:
            continue
        if modes:  # the command line overrides a cell's own modes and ks as well as the defaults
            cell = {**cell, "modes": modes}
        if ks:
            cell = {**cell, "ks": ks}
        run_cell(cell, defaults, args.workdir, args.out, figures, data_root=args.data_root,
                 show_progress=args.progress, machine=machine, workers=args.workers)


if __name__ == "__main__":
    main()
