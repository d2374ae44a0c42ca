"""Presenting an evaluation: a rich table for the terminal, and JSON + Markdown + CSV + ROC PNGs on disk."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table

from gmint.assess.evaluate import Evaluation
from gmint.assess.metrics import Estimate
from gmint.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def print_result(result: Evaluation, console: Console | None = None) -> None:
    """The table, the gap and every warning, on the terminal."""
    console = console or Console()
    console.print(result_table(result))
    for line in gap_lines(result):
        console.print(line)
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def write_report(result: Evaluation, out_dir: Path) -> list[Path]:
    """report.json, report.md, scores.csv, roc.png and roc_log.png under `out_dir`."""
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
    lines += ["", *(f"- **Warning:** {w}" for w in result.warnings), *(f"- {line}" for line in gap_lines(result)),
              "", "Protocol: " + ", ".join(f"{k}={v}" for k, v in result.protocol.items()), ""]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
    paths = [out_dir / n for n in ("report.json", "report.md", "scores.csv")]
    label = f"{result.protocol.get('classifier')} MINT on {result.protocol.get('source', 'gradient')} features"
    return paths + _roc_plots(scores.membership, np.asarray(scores.score, np.float64), out_dir, label)


def _roc_plots(membership: np.ndarray, score: np.ndarray, out_dir: Path, label: str) -> list[Path]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(membership, score)
    paths = []
    for name, log in (("roc.png", False), ("roc_log.png", True)):
        fig, ax = pyplot().subplots(figsize=(4.5, 4.5))
        ax.plot(fpr, tpr, label=label)
        ax.plot([1e-4, 1], [1e-4, 1], "--", color="grey", label="chance")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
        ax.set_xlabel("false-positive rate (external called member)")
        ax.set_ylabel("true-positive rate (members found)")
        ax.legend(loc="lower right")
        paths.append(save_png(fig, out_dir / name))
    return paths


def pyplot() -> ModuleType:
    """matplotlib.pyplot on its file-only backend (no display needed), imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """Lay the figure out and write it as a PNG, whole or not at all (its folder created), then free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return path
