"""Presenting an evaluation: a rich table for the terminal, and JSON + Markdown + CSV + ROC PNGs on disk."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from gmint.assess.evaluate import Evaluation
from gmint.assess.figures import RocCurve, roc_figure
from gmint.assess.metrics import Estimate
from gmint.assess.slices import slice_rows

METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "auc": "AUC",
                 "tpr_at_1pct_fpr": "TPR @ 1% FPR", "tpr_at_0.1pct_fpr": "TPR @ 0.1% FPR"}


def format_estimate(est: Estimate) -> str:
    """'0.571 [0.530, 0.612]', or 'n/a (needs ≥ 1,000 externals, has 360)' for a metric the rows cannot resolve."""
    if est.value is None:
        return f"n/a ({est.unresolved})"
    return f"{est.value:.3f} [{est.low:.3f}, {est.high:.3f}]"


def _columns(result: Evaluation) -> dict[str, dict[str, Estimate]]:
    """Result sections shown side by side, where present: the classifier, the baseline, the negative control."""
    columns = {"MINT classifier": result.mint, "loss threshold (baseline)": result.loss_threshold}
    if result.negative_control is not None:
        columns["negative control (must be ~chance)"] = result.negative_control.metrics
    return columns


def result_table(result: Evaluation, title: str = "membership inference test") -> Table:
    """The classifier beside the loss-threshold baseline (and the negative control when evaluated), each
    metric with its bootstrap 95% interval."""
    table = Table(title=title)
    table.add_column("metric")
    columns = _columns(result)
    for label in columns:
        table.add_column(label, justify="right")
    for key, label in METRIC_LABELS.items():
        table.add_row(label, *(format_estimate(metrics[key]) for metrics in columns.values()))
    return table


def gap_lines(result: Evaluation) -> list[str]:
    """The audited model's own view of the same rows: the generalisation gap behind any signal."""
    a, rows = result.audited_model, result.rows
    return [
        f"evaluated rows: {rows.members} members, {rows.external} external (balanced, held out); 95% intervals "
        f"resample {result.intervals}",
        f"audited model on them: accuracy members {a.members_accuracy:.3f} vs external "
        f"{a.external_accuracy:.3f} (gap {a.accuracy_gap:+.3f}); mean loss members "
        f"{a.members_loss:.4f} vs external {a.external_loss:.4f}",
    ]


def reading_lines(result: Evaluation) -> list[str]:
    """The classifier against the loss threshold on the same rows, its ε lower bound, and the model selection
    it made on the pool (each where the result has it)."""
    lines = []
    if result.versus_loss is not None:
        d = result.versus_loss
        lines.append(f"AUC(MINT classifier) − AUC(loss threshold) on the same rows: {format_estimate(d)} "
                     f"(paired bootstrap, resampling {result.intervals}); "
                     + _difference_reading(d))
    if result.epsilon is not None:
        e = result.epsilon
        lines.append(f"empirical ε lower bound: {e.value:.3f} at {e.confidence:.0%} confidence, δ = {e.delta:g} "
                     f"(held-out FPR {e.fpr:.3f}, FNR {e.fnr:.3f} at the pool's threshold {e.threshold:.4g}; "
                     f"Clopper–Pearson upper bounds {e.fpr_high:.3f}, {e.fnr_high:.3f}): {e.conclusion}")
    selection = result.protocol.get("model_selection")
    if isinstance(selection, dict):
        lines.append(f"model chosen on the pool by {selection.get('folds')}-fold cross-validation over "
                     f"{selection.get('fold_unit')}: {selection.get('chosen')} (mean fold AUC "
                     f"{selection.get('cv_auc')})" + (f"; rule: {selection['rule']}" if selection.get("rule") else ""))
    return lines


def _difference_reading(d: Estimate) -> str:
    """Whether a paired AUC-difference interval shows the classifier above, below or level with the baseline."""
    if d.low is None or d.high is None:
        return "no interval"
    if d.low > 0:
        return "the classifier reads more than the loss"
    if d.high < 0:
        return "the classifier reads less than the loss"
    return "no difference the rows can show"


def print_result(result: Evaluation, console: Console | None = None) -> None:
    """The table, the gap, the comparison with the loss threshold, the ε bound and every warning."""
    console = console or Console()
    console.print(result_table(result))
    for line in (*gap_lines(result), *reading_lines(result)):
        console.print(line, highlight=False)
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def write_report(result: Evaluation, out_dir: Path) -> list[Path]:
    """report.json, report.md, scores.csv and roc.png (the classifier beside the loss threshold) under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(result.to_dict(), indent=2))
    scores = result.scores
    with open(out_dir / "scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sample_id", "membership", "score"])
        writer.writerows(zip(scores.sample_id.tolist(), scores.membership.tolist(), scores.score.tolist(),
                             strict=True))
    columns = _columns(result)
    lines = ["# Membership inference test report", "", f"| metric | {' | '.join(columns)} |",
             "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | {' | '.join(format_estimate(metrics[k]) for metrics in columns.values())} |"
              for k, label in METRIC_LABELS.items()]
    lines += ["", *(f"- **Warning:** {w}" for w in result.warnings),
              *(f"- {line}" for line in (*gap_lines(result), *reading_lines(result))), *_selection_table(result),
              "", "Protocol: " + ", ".join(f"{k}={v}" for k, v in result.protocol.items()
                                          if k not in ("model_selection", "refits")), ""]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
    paths = [out_dir / n for n in ("report.json", "report.md", "scores.csv")]
    label = f"{result.protocol.get('classifier')} MINT on {result.protocol.get('source', 'gradient')} features"
    held_out = slice_rows(result, result.store)  # each scored row's loss, read from the store
    curves = [RocCurve(label, scores.membership, np.asarray(scores.score, np.float64)),
              RocCurve("loss threshold", held_out.membership, -held_out.loss)]
    return [*paths, roc_figure(curves, out_dir / "roc.png", title="the classifier and the loss threshold on the "
                               "same held-out rows")]


def _selection_table(result: Evaluation) -> list[str]:
    """Markdown: each candidate's cross-validation AUC on the pool, where the classifier chose among several."""
    selection = result.protocol.get("model_selection")
    cv = selection.get("cv") if isinstance(selection, dict) else None
    if not isinstance(cv, list):
        return []
    rows = [f"| {c.get('candidate')} | {c.get('auc_mean')} | {c.get('auc_std')} |" for c in cv if isinstance(c, dict)]
    return ["", "Model selection on the pool (mean and spread of the fold AUCs):", "",
            "| candidate | mean AUC | std |", "|---|---|---|", *rows]
