"""Presenting a comparison of attacks: one table, one log-scale ROC plot, and AUC / TPR against K.

Files under the report folder: comparison.json (every result with its parameters), comparison.md (the table),
scores.csv (each attack's score per evaluation row), roc_log.png (each attack at its largest K, its AUC in the
legend) and vs_k.png (AUC and TPR at 1% FPR against the number of reference models).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from rich.table import Table

from gmint.assess.figures import pyplot, save_png
from gmint.assess.metrics import EPSILON_CONFIDENCE, chance_level
from gmint.assess.report import METRIC_LABELS, format_estimate
from gmint.files import atomic_write
from gmint.reference.compare import AttackResult, Comparison

COLUMNS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "balanced_accuracy")
K_METRICS = ("auc", "tpr_at_1pct_fpr")  # the K figure's panels, left to right
VERSUS_LOSS_LABEL = "AUC − loss threshold [95%]"  # the paired difference's column (AttackResult.versus_loss)
EPSILON_LABEL = f"ε ≥ ({EPSILON_CONFIDENCE:.0%})"  # the empirical ε lower bound's column (AttackResult.epsilon)


def result_label(result: AttackResult) -> str:
    """'rmia (K=4)', or the name alone for an attack that reads no reference model."""
    return f"{result.attack} (K={result.k})" if result.k else result.attack


def _cells(result: AttackResult) -> list[str]:
    """The metric columns, the paired difference with the loss threshold ("—" for the loss threshold), then the
    ε lower bound ("—" where the attack had no pool threshold to read it at)."""
    if result.metrics is None:
        return [f"n/a ({result.unresolved})"] + [""] * (len(COLUMNS) + 1)
    versus = "—" if result.versus_loss is None else format_estimate(result.versus_loss)
    epsilon = "—" if result.epsilon is None else f"{result.epsilon.value:.2f}"
    return [format_estimate(result.metrics[c]) for c in COLUMNS] + [versus, epsilon]


def comparison_table(comparison: Comparison, title: str = "membership attacks side by side") -> Table:
    """One row per attack and K: AUC, TPR at 1% and 0.1% FPR, balanced accuracy, each with its 95% interval,
    AUC(attack) − AUC(loss threshold) on the same rows with its paired interval, and the ε lower bound."""
    table = Table(title=title)
    table.add_column("attack")
    table.add_column("K", justify="right")
    for c in COLUMNS:
        table.add_column(METRIC_LABELS[c], justify="right")
    table.add_column(VERSUS_LOSS_LABEL, justify="right")
    table.add_column(EPSILON_LABEL, justify="right")
    for r in comparison.results:
        table.add_row(r.attack, str(r.k) if r.k else "—", *_cells(r))
    return table


def comparison_markdown(comparison: Comparison) -> str:
    """The table as Markdown, with the rows it was measured on."""
    rows = comparison.to_dict()["rows"]
    assert isinstance(rows, dict)
    lines = [f"Held-out rows: {rows['members']} members, {rows['external']} external (balanced); attacks fitted on "
             f"{rows['fit_rows']} pool rows; reference set: {comparison.mode}; 95% intervals resample "
             f"{comparison.intervals}; \"{VERSUS_LOSS_LABEL}\" resamples both attacks on the same rows (an interval "
             f"above 0: the attack reads more than the loss threshold on these rows); \"{EPSILON_LABEL}\" is the "
             "empirical ε lower bound of the attack's error rates on these rows at the threshold it chose on the "
             "pool (for a model trained without differential privacy, a measured floor on its leakage, not a "
             "guarantee).", "",
             "| attack | K | " + " | ".join([*(METRIC_LABELS[c] for c in COLUMNS), VERSUS_LOSS_LABEL, EPSILON_LABEL])
             + " |",
             "|---|---|" + "---|" * (len(COLUMNS) + 2)]
    lines += [f"| {r.attack} | {r.k or '—'} | " + " | ".join(_cells(r)) + " |" for r in comparison.results]
    return "\n".join(lines) + "\n"


def write_comparison(comparison: Comparison, out_dir: Path, title: str = "") -> list[Path]:
    """comparison.json, comparison.md, scores.csv, roc_log.png and vs_k.png under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / n for n in ("comparison.json", "comparison.md", "scores.csv", "roc_log.png", "vs_k.png")]
    with atomic_write(paths[0]) as tmp:
        tmp.write_text(json.dumps(comparison.to_dict(), indent=2))
    with atomic_write(paths[1]) as tmp:
        tmp.write_text(f"# {title or 'Membership attacks side by side'}\n\n{comparison_markdown(comparison)}",
                       encoding="utf-8")
    scored = [r for r in comparison.results if r.score is not None]
    with atomic_write(paths[2]) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sample_id", "membership", *map(result_label, scored)])
        columns = [comparison.sample_id.tolist(), comparison.membership.tolist(),
                   *(np.asarray(r.score).tolist() for r in scored)]
        writer.writerows(zip(*columns, strict=True))
    roc_plot(comparison, paths[3], title)
    k_plot(comparison, paths[4], title)
    return paths


def _largest_k(comparison: Comparison) -> list[AttackResult]:
    """Each attack's result at its largest K that ran (the reference-free ones as they are)."""
    best: dict[str, AttackResult] = {}
    for r in comparison.results:
        if r.score is not None and (r.attack not in best or r.k > best[r.attack].k):
            best[r.attack] = r
    return list(best.values())


def roc_plot(comparison: Comparison, path: Path, title: str = "") -> Path:
    """Log-scale ROC: each attack at its largest K, the AUC in its legend entry, chance dashed."""
    from sklearn.metrics import roc_curve

    fig, ax = pyplot().subplots(figsize=(6, 5.5))
    for r in _largest_k(comparison):
        fpr, tpr, _ = roc_curve(comparison.membership, np.asarray(r.score, np.float64))
        assert r.metrics is not None
        ax.plot(fpr, tpr, label=f"{result_label(r)}  AUC {r.metrics['auc'].value:.3f}")
    n_ext = int((comparison.membership == 0).sum())
    ax.plot([1e-4, 1], [1e-4, 1], "--", color="grey", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1 / max(n_ext, 1), 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("false-positive rate (external called member)")
    ax.set_ylabel("true-positive rate (members found)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    return save_png(fig, path)


def k_plot(comparison: Comparison, path: Path, title: str = "") -> Path:
    """AUC and TPR at 1% FPR against K, one line per attack (reference-free attacks as dotted horizontal
    lines), chance dashed on both panels (`chance_level`: at 1% FPR a blind score finds 1% of members).

    One legend in a narrow panel of its own serves both panels, so that it covers no line, and each attack keeps
    one colour in both (`attack_colours`).
    """
    ks = sorted({r.k for r in comparison.results if r.k})
    colours = attack_colours([r.attack for r in comparison.results])
    fig, (*panels, key) = pyplot().subplots(1, 3, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1, 0.45]})
    for ax, metric in zip(panels, K_METRICS, strict=True):
        for attack, colour in colours.items():
            points = [(r.k, r.metrics[metric]) for r in comparison.results
                      if r.attack == attack and r.metrics is not None and r.metrics[metric].value is not None]
            if not points:
                continue
            if points[0][0] == 0:  # no references: the same at every K
                value = points[0][1].value
                ax.axhline(value, linestyle=":", linewidth=1, label=attack, color=colour)
                continue
            x = [k for k, _ in points]
            y = [float(est.value or 0.0) for _, est in points]
            low = [float(est.low if est.low is not None else v) for (_, est), v in zip(points, y, strict=True)]
            high = [float(est.high if est.high is not None else v) for (_, est), v in zip(points, y, strict=True)]
            err = [[v - lo for v, lo in zip(y, low, strict=True)], [hi - v for v, hi in zip(y, high, strict=True)]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=attack, color=colour)
        ax.axhline(chance_level(metric), linestyle="--", linewidth=1, color="grey", label="chance (AUC 0.5; TPR = FPR)")
        ax.set_xscale("log", base=2)
        if ks:
            ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("reference models K")
        ax.set_ylabel(f"{METRIC_LABELS[metric]} on held-out rows")
    entries = {label: handle for ax in panels for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    key.legend(entries.values(), entries.keys(), loc="center left", fontsize=7, frameon=False)
    key.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)


def attack_colours(attacks: list[str]) -> dict[str, tuple[float, float, float]]:
    """One distinct colour per attack name, in order of first appearance: `tab20`'s ten strong shades first
    (matplotlib's usual ten), then its ten light ones, so that no two attacks of one figure share a colour."""
    shades = pyplot().colormaps["tab20"].colors
    palette = [*shades[0::2], *shades[1::2]]
    return {name: palette[i % len(palette)] for i, name in enumerate(dict.fromkeys(attacks))}
