"""Presenting an evaluation: a rich table for the terminal, and JSON + Markdown + CSV + ROC PNGs on disk."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "auc": "AUC",
                 "tpr_at_1pct_fpr": "TPR @ 1% FPR", "tpr_at_0.1pct_fpr": "TPR @ 0.1% FPR"}


def cell(est: dict[str, object]) -> str:
    """'0.571 [0.530, 0.612]', or 'n/a (needs ≥ 1,000 externals, has 360)' for a metric the rows cannot resolve."""
    if est["value"] is None:
        return f"n/a ({est['unresolved']})"
    return f"{est['value']:.3f} [{est['ci95_low']:.3f}, {est['ci95_high']:.3f}]"


# Result sections shown side by side, where present: the classifier, the baseline, the negative control.
COLUMNS = {"mint": "MINT classifier", "loss_threshold": "loss threshold (baseline)",
           "negative_control": "negative control (must be ~chance)"}


def _columns(result: dict[str, object]) -> dict[str, str]:
    return {key: label for key, label in COLUMNS.items() if key in result}


def result_table(result: dict[str, object], title: str = "membership inference test") -> Table:
    """The classifier beside the loss-threshold baseline (and the negative control when evaluated), each
    metric with its bootstrap 95% interval."""
    table = Table(title=title)
    table.add_column("metric")
    columns = _columns(result)
    for label in columns.values():
        table.add_column(label, justify="right")
    for key, label in METRIC_LABELS.items():
        table.add_row(label, *(cell(result[c][key]) for c in columns))  # type: ignore[index]
    return table


def gap_lines(result: dict[str, object]) -> list[str]:
    """The audited model's own view of the same rows: the generalisation gap behind any signal."""
    a = result["audited_model"]  # type: ignore[index]
    rows = result["rows"]  # type: ignore[index]
    return [
        f"evaluated rows: {rows['members']} members, {rows['external']} external (balanced, held out)",
        f"audited model on them: accuracy members {a['members_accuracy']:.3f} vs external "
        f"{a['external_accuracy']:.3f} (gap {a['accuracy_gap']:+.3f}); mean loss members "
        f"{a['members_loss']:.4f} vs external {a['external_loss']:.4f}",
    ]


def print_result(result: dict[str, object], console: Console | None = None) -> None:
    console = console or Console()
    console.print(result_table(result))
    for line in gap_lines(result):
        console.print(line)
    for warning in result.get("warnings", []):  # type: ignore[attr-defined]
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def write_report(result: dict[str, object], out_dir: Path) -> list[Path]:
    """report.json, report.md, scores.csv, roc.png and roc_log.png under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k != "scores"}
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2))
    scores = result["scores"]  # type: ignore[index]
    with open(out_dir / "scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sample_id", "membership", "score"])
        writer.writerows(zip(scores["sample_id"], scores["membership"], scores["score"], strict=True))
    columns = _columns(result)
    lines = ["# Membership inference test report", "", f"| metric | {' | '.join(columns.values())} |",
             "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | {' | '.join(cell(result[c][k]) for c in columns)} |"  # type: ignore[index]
              for k, label in METRIC_LABELS.items()]
    lines += ["", *(f"- **Warning:** {w}" for w in result.get("warnings", [])),  # type: ignore[attr-defined]
              *(f"- {line}" for line in gap_lines(result)), "",
              "Protocol: " + ", ".join(f"{k}={v}" for k, v in result["protocol"].items()), ""]  # type: ignore[union-attr]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
    paths = [out_dir / n for n in ("report.json", "report.md", "scores.csv")]
    protocol = result["protocol"]  # type: ignore[index]
    label = f"{protocol.get('classifier')} MINT on {protocol.get('source', 'gradient')} features"
    return paths + _roc_plots(np.asarray(scores["membership"]), np.asarray(scores["score"]), out_dir, label)


def _roc_plots(membership: np.ndarray, score: np.ndarray, out_dir: Path, label: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(membership, score)
    paths = []
    for name, log in (("roc.png", False), ("roc_log.png", True)):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
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
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths
