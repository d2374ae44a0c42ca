"""The grid beside the paper: Markdown, JSON and PNG reports from the grid's JSONL and gMINT's Table 2.

    python -m benchmarks.report --grid benchmarks/results/grid-cpu.jsonl --paper ../shared/paper/gmint-table2.csv \
        --config benchmarks/configs/grid-cpu.toml --out benchmarks/results/grid-cpu.md

Per protocol, in the paper's layout (dataset × architecture × layer setup, D100/D10/D1): gMINT's accuracy with
the paper's beside it, then AUC and TPR at 1% FPR with their bootstrap intervals, each the median over the MINT
classifier's seeds with their range beside it (one seed alone can be a fit stuck at chance); a table of what
explains each cell (the audited model's accuracy, epochs, whether it memorised its members, loss quantiles, the
loss threshold and the negative control on the same rows); a heat map of ours − paper per protocol and one ROC
plot per dataset; and, over the whole grid, how many probes have a seed whose fit collapsed to chance. Cells the
results do not hold yet read "pending".
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.grid import FRACTIONS, PROBES, SETUPS, classifier, grid_cells, over_seeds
from benchmarks.versus_loss import Key, versus_section
from gmint.assess.figures import pyplot, save_png
from gmint.assess.metrics import Estimate, control_off_chance
from gmint.mint import DEFAULT_KIND

PAPER_DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "gtsrb": "GTSRB", "tiny_imagenet": "Tiny ImageNet"}
PAPER_ARCHS = {"mobilenet": "MobileNet", "resnet50": "ResNet50", "resnet101": "ResNet100",
               "densenet121": "DenseNet121", "xception": "Xception", "vit": "ViT"}
Row = dict[str, Any]
PaperTable = dict[tuple[str, str, str, str], float]
# A seed's fit counts as collapsed when it reads at most AT_CHANCE while another seed of the same probe reaches
# REACHED, on the same held-out rows. On the grid's 1,000 balanced held-out rows one standard error of a chance
# accuracy is 0.016: AT_CHANCE lies within it of 0.5, REACHED six of them above, so the two seeds disagree on
# whether there is a signal at all, which row noise cannot explain.
AT_CHANCE = 0.51
REACHED = 0.60
SPREAD_POINTS = (5, 10)  # seed ranges wider than these (in points: 0.05, 0.10) are counted
COLLAPSE_METRICS = {"accuracy": ("accuracy",), "AUC": ("auc",), "accuracy or AUC": ("accuracy", "auc")}
# How the report names each classifier kind; the default first, the paper's form beside it.
KIND_NAMES = {DEFAULT_KIND: "gmint's default", "mlp": "the paper's MLP"}


def kinds_in(rows: Iterable[Row]) -> tuple[str, ...]:
    """The classifier kinds the rows fitted, in KIND_NAMES' order (others after them, by name)."""
    present = {classifier(r) for r in rows}
    return (*(k for k in KIND_NAMES if k in present), *sorted(present - set(KIND_NAMES)))


def kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, f"`{kind}`")


def paper_table(path: Path) -> PaperTable:
    """(dataset, architecture, setup, fraction) → the paper's accuracy in %."""
    table = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for fraction in FRACTIONS:
                table[(row["dataset"], row["architecture"], row["setup"], fraction)] = float(row[fraction])
    return table


def paper_value(paper: PaperTable, dataset: str, arch: str, setup: str, fraction: str) -> float | None:
    return paper.get((PAPER_DATASETS.get(dataset, ""), PAPER_ARCHS.get(arch, ""), setup, fraction))


def unresolved(est: Estimate) -> str:
    """'n/a (needs ≥ 100 externals, has 50)': a metric the held-out rows cannot resolve (its value is None)."""
    return f"n/a ({est.unresolved})" if est.unresolved else "n/a"


def ci(est: Estimate, percent: bool = False) -> str:
    """'0.912 [0.880, 0.940]' (or in % with `percent`), or n/a for an unresolved metric."""
    if est.value is None or est.low is None or est.high is None:
        return unresolved(est)
    k = 100.0 if percent else 1.0
    fmt = ".1f" if percent else ".3f"
    return f"{est.value * k:{fmt}} [{est.low * k:{fmt}}, {est.high * k:{fmt}}]"


def point(est: Estimate, percent: bool = False) -> str:
    """The value alone ('0.125', or '12.5' in %), or n/a for an unresolved metric."""
    if est.value is None:
        return unresolved(est)
    return f"{est.value * 100:.1f}" if percent else f"{est.value:.3f}"


def seed_range(row: Row, metric: str, percent: bool = False) -> str:
    """'0.90–0.93': the range of a metric over the classifier's seeds ('' for one seed)."""
    spread = over_seeds(row, metric)
    if spread.seeds < 2 or spread.low is None or spread.high is None:
        return ""
    k, fmt = (100.0, ".1f") if percent else (1.0, ".3f")
    return f"{spread.low * k:{fmt}}–{spread.high * k:{fmt}}"


def headline(row: Row, metric: str, percent: bool = False) -> str:
    """A row's figure for `metric`: the median over its classifier seeds ('0.912', or '91.2' in %), or n/a."""
    median = over_seeds(row, metric).median
    if median is None:
        return unresolved(metrics(row["mint"])[metric])
    return f"{median * 100:.1f}" if percent else f"{median:.3f}"


def table_entry(row: Row, metric: str, percent: bool) -> str:
    """A table's entry: the median over seeds with their range; accuracy alone, AUC and TPR with the bootstrap
    interval of the first seed's fit (the only one bootstrapped), named as that seed's where its figure is not
    the median: '0.912 [0.880, 0.940] (seeds 0.90–0.93)', '0.640 (seeds 0.500–0.700; seed 0: 0.500 [0.46,
    0.54])'."""
    est, median = metrics(row["mint"])[metric], headline(row, metric, percent)
    first = point(est, percent)
    spread = seed_range(row, metric, percent)
    seed_zero = first if percent else ci(est)
    if median == first:
        return seed_zero + (f" (seeds {spread})" if spread else "")
    return f"{median} (seeds {spread}; seed {row['mint_seeds']['seeds'][0]}: {seed_zero})"


def metrics(row_metrics: Mapping[str, Any]) -> dict[str, Estimate]:
    """A row's metrics (name → JSON estimate) as estimates."""
    return {name: Estimate.from_dict(est) for name, est in row_metrics.items()}


def index_rows(rows: Iterable[Row]) -> dict[Key, Row]:
    """(cell, signal, setup, fraction, classifier kind) → row."""
    return {(r["cell"], r["signal"], r["setup"], r["fraction"], classifier(r)): r for r in rows}


def memorised(row: Row) -> str:
    """'✓' when the audited model reached its target member accuracy, '✗' when not, '' without a target."""
    reached = row["model"]["record"].get("reached_target")
    return "" if reached is None else ("✓" if reached else "✗")


def layout_table(cells: list[tuple[str, str, str]], rows: dict[Key, Row], paper: PaperTable, metric: str,
                 kind: str) -> list[str]:
    """One protocol's table of one classifier kind in the paper's layout; accuracy cells carry the paper's figure
    beside ours."""
    percent = metric == "accuracy"
    head = "| dataset | architecture | memorised | setup | " + " | ".join(FRACTIONS) + " |"
    out = [head, "|---|---|---|---|" + "---|" * len(FRACTIONS)]
    for name, dataset, arch in cells:
        first = rows.get((name, "gMINT", "combined", "D100", kind))
        mark = memorised(first) if first else "pending"
        for setup in SETUPS:
            entries = []
            for fraction in FRACTIONS:
                row = rows.get((name, "gMINT", setup, fraction, kind))
                ref = paper_value(paper, dataset, arch, setup, fraction)
                text = "pending" if row is None else table_entry(row, metric, percent)
                if percent:
                    text += f" · paper {ref:.2f}" if ref is not None else " · paper —"
                entries.append(text)
            out.append(f"| {dataset} | {arch} | {mark} | {setup} | " + " | ".join(entries) + " |")
    return [*out, ""]


def baseline_table(cells: list[tuple[str, str, str]], rows: dict[Key, Row], kinds: tuple[str, ...]) -> list[str]:
    """What explains each cell: the audited model, its losses, the loss threshold and the negative control (for
    each classifier kind, separated by ' · ')."""
    out = ["| cell | epochs | memorised | accuracy members / external / test | loss q10/q50/q90 members | "
           "external | test | loss threshold acc % / AUC / TPR@1% | gMINT combined AUC | negative control "
           "combined acc % / AUC | fit rows D100/D10/D1 | intervals resample | extraction rows/s | train s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, _, _ in cells:
        row = next((r for k in kinds if (r := rows.get((name, "gMINT", "combined", "D100", k)))), None)
        controls = [rows.get((name, "negative control", "combined", "D100", k)) for k in kinds]
        if row is None:
            out.append(f"| {name} | pending |" + " |" * 12)
            continue
        rec, model = row["model"]["record"], row["model"]
        accs = " / ".join(f"{rec[f'{s}_accuracy']:.3f}" if f"{s}_accuracy" in rec else "—"
                          for s in ("members", "external", "test"))

        def quantiles(side: str, record: Mapping[str, float] = rec) -> str:
            keys = [f"{side}_loss_q{q}" for q in (10, 50, 90)]
            return "/".join(f"{record[k]:.2g}" for k in keys) if all(k in record for k in keys) else "—"

        lt = metrics(row["loss_threshold"])
        nc = " · ".join(f"{headline(c, 'accuracy', True)} / {headline(c, 'auc')}" if c else "pending"
                        for c in controls)
        combined = " · ".join(headline(r, "auc") if (r := rows.get((name, "gMINT", "combined", "D100", k)))
                              else "pending" for k in kinds)
        extraction = row.get("extraction", {})
        fit = "/".join(str(r["fit_rows"]) if (r := rows.get((name, "gMINT", "combined", f, classifier(row))))
                       else "—" for f in FRACTIONS)
        out.append(f"| {name} | {model['epochs_done']} of {model['train_config']['epochs']} | {memorised(row)} | "
                   f"{accs} | {quantiles('members')} | {quantiles('external')} | {quantiles('test')} | "
                   f"{point(lt['accuracy'], True)} / {point(lt['auc'])} / {point(lt['tpr_at_1pct_fpr'])} | "
                   f"{combined} | {nc} | {fit} | {row.get('intervals', 'rows')} | "
                   f"{extraction.get('rows_per_second') or '—'} | "
                   f"{model['train_seconds']:.0f} |")
    return [*out, ""]


def controls_off_chance(cells: list[tuple[str, str, str]], rows: Iterable[Row]) -> list[str]:
    """The negative-control probes whose AUC interval excludes chance, each with why that matters, and how
    many of them chance alone would give (one in twenty 95% intervals)."""
    names = {name for name, _, _ in cells}
    controls = [r for r in rows if r["cell"] in names and r["signal"] == "negative control"]
    found = [f"- {r['cell']} {r['setup']} {r['fraction']} ({kind_name(classifier(r))}): {text}" for r in controls
             if (text := control_off_chance(metrics(r["mint"])["auc"]))]
    if not found:
        return []
    return ["### Negative controls off chance", "",
            f"{len(found)} of {len(controls)} control probes have an AUC interval that excludes 0.5; chance alone "
            f"would give about {len(controls) / 20:.1f}. Scattered single probes are that; every probe of a cell "
            "on one side of chance is a protocol that leaks.", "", *found, ""]


@dataclass(frozen=True)
class Collapses:
    """How a grid's probes spread over their classifier seeds, for one or more metrics (a probe counts where any
    of them does)."""

    probes: int
    collapsed: int        # a seed at AT_CHANCE or below while another reaches REACHED
    first_collapsed: int  # of those, the first seed's figure (the one a row measures itself) is at chance
    wider_than: tuple[int, ...]  # probes whose seed range is wider than each of SPREAD_POINTS


def count_collapses(rows: list[Row], names: tuple[str, ...]) -> Collapses:
    """Collapses counted over `rows` on the metrics `names` (e.g. ("accuracy", "auc"))."""
    collapsed = first = 0
    wider = [0] * len(SPREAD_POINTS)
    for row in rows:
        spreads = {name: over_seeds(row, name) for name in names}
        at_chance = [name for name, s in spreads.items() if s.low is not None and s.high is not None
                     and s.low <= AT_CHANCE and s.high >= REACHED]
        collapsed += bool(at_chance)
        first += any((v := metrics(row["mint"])[name].value) is not None and v <= AT_CHANCE for name in at_chance)
        widths = [round(100 * (s.high - s.low), 6)  # in points, rounded: 0.55 − 0.50 is not wider than 5
                  for s in spreads.values() if s.low is not None and s.high is not None]
        for i, points in enumerate(SPREAD_POINTS):
            wider[i] += any(width > points for width in widths)
    return Collapses(len(rows), collapsed, first, tuple(wider))


def collapsed_fits(cells: list[tuple[str, str, str]], rows: Iterable[Row], config_path: Path,
                   out: Path) -> list[str]:
    """The section "Collapsed fits in this grid": over the gMINT probes of `cells`, per classifier kind, how many
    have a seed whose fit stopped at chance while another found the signal, how many stated such a seed as their
    figure before the median did, how wide the seed ranges run; and, where the rows do not hold gmint's default,
    the command that measures it (`config_path`, and a results file named after `out`)."""
    names = {name for name, _, _ in cells}
    probes = [r for r in rows if r["cell"] in names and r["signal"] == "gMINT"]
    if not probes:
        return []
    widths = " | ".join(f"seed range > {p} points" for p in SPREAD_POINTS)
    table = [f"| classifier | metric | a seed ≤ {AT_CHANCE:.2f}, another ≥ {REACHED:.2f} | of those, the first seed "
             f"at chance | {widths} |", "|---|---|---|---|" + "---|" * len(SPREAD_POINTS)]
    within = []
    for kind in kinds_in(probes):
        mine = [r for r in probes if classifier(r) == kind]
        for label, metric in COLLAPSE_METRICS.items():
            c = count_collapses(mine, metric)
            table.append(f"| {kind_name(kind)} | {label} | {c.collapsed} | {c.first_collapsed} | "
                         + " | ".join(map(str, c.wider_than)) + " |")
        narrow = len(mine) - c.wider_than[0]  # c: accuracy or AUC, the last of COLLAPSE_METRICS
        within.append(f"{kind_name(kind)}: {narrow} of {len(mine)} ({100 * narrow / len(mine):.0f}%)")
    unrecorded = sum("classifier" not in r for r in probes)
    default = sum(classifier(r) == DEFAULT_KIND for r in probes)
    before = f"All {unrecorded}" if unrecorded == len(probes) else f"{unrecorded} of the {len(probes)}"
    results = out.with_name(f"{out.stem}-{DEFAULT_KIND}.jsonl")
    lines = ["## Collapsed fits in this grid", "",
             f"A MINT classifier's fit collapses when it stops at chance where the same recipe with another seed "
             f"finds the signal: on the same held-out rows one seed reads ≤ {AT_CHANCE:.2f} while another reaches "
             f"≥ {REACHED:.2f}. Over the {len(probes)} gMINT probes of these rows (negative controls sit at chance by "
             "design and are left out):", "", *table, "",
             f"Probes whose seeds all lie within {SPREAD_POINTS[0]} points of each other in accuracy and AUC: "
             + "; ".join(within) + ". The tables state the median over seeds, never the first seed alone.", ""]
    if unrecorded:
        lines += [f"{before} rows were measured before gmint's fits stopped collapsing and before its default "
                  f"classifier (`{DEFAULT_KIND}`, chosen by cross-validation on the pool): they show the paper's "
                  "form, an MLP on MEAN features, as fitted then.", ""]
    if not default:
        lines += [f"The default classifier (`{DEFAULT_KIND}`) is not in these rows. Measuring it needs the grid's "
                  "stores, which are not kept with the results: rerunning the grid regenerates them (it trains the "
                  "models and extracts the stores again, then fits the default) into a new results file, since a "
                  "run into this one skips every finished probe:", "", "```bash",
                  f"python -m benchmarks.grid --config {config_path} --out {results}", "```", ""]
    return lines


def differences(cells: list[tuple[str, str, str]], rows: dict[Key, Row], paper: PaperTable,
                kind: str) -> np.ndarray:
    """(cells, setups × fractions) of ours (`kind`'s median over seeds) − paper in accuracy points; NaN where either
    is missing."""
    grid = np.full((len(cells), len(SETUPS) * len(FRACTIONS)), np.nan)
    for i, (name, dataset, arch) in enumerate(cells):
        for j, (setup, fraction) in enumerate((s, f) for s in SETUPS for f in FRACTIONS):
            row = rows.get((name, "gMINT", setup, fraction, kind))
            ref = paper_value(paper, dataset, arch, setup, fraction)
            value = over_seeds(row, "accuracy").median if row else None
            if value is not None and ref is not None:
                grid[i, j] = 100 * value - ref
    return grid


def text_colour(rgba: tuple[float, ...]) -> str:
    """'white' on a dark cell, 'black' on a light one: whichever contrasts more with the cell's colour.

    Contrast is the WCAG ratio of relative luminances, (lighter + 0.05) / (darker + 0.05), luminance taken on
    the linearised sRGB channels; white wins below a luminance of about 0.18, which the map's deep reds and
    blues are and its pale middle is not.
    """
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "white" if 1.05 / (luminance + 0.05) > (luminance + 0.05) / 0.05 else "black"


def heat_map(protocol: str, cells: list[tuple[str, str, str]], diff: np.ndarray, out: Path,
             kind: str = "") -> Path:
    """Ours (the median over classifier seeds) − paper per cell, setup and fraction in points, each cell's number
    written in the colour that reads on it (`text_colour`); the colour bar is the legend, clipped at ±50 points."""
    fig, ax = pyplot().subplots(figsize=(10, 0.35 * len(cells) + 2.2))
    image = ax.imshow(np.ma.masked_invalid(diff), cmap="RdBu", vmin=-50, vmax=50, aspect="auto")
    ax.set_xticks(range(diff.shape[1]), [f"{s} {f}" for s in SETUPS for f in FRACTIONS], rotation=60, ha="right",
                  fontsize=7)
    ax.set_yticks(range(len(cells)), [f"{d} · {a}" for _, d, a in cells], fontsize=7)
    ax.set_xlabel("layer setup and share of the auditor's pool fitted on (D100 / D10 / D1: 100 / 10 / 1%)")
    ax.set_ylabel("dataset · audited architecture")
    for i, j in zip(*np.nonzero(np.isfinite(diff)), strict=True):
        ax.text(j, i, f"{diff[i, j]:.0f}", ha="center", va="center", fontsize=6,
                color=text_colour(image.cmap(image.norm(diff[i, j]))))
    fig.colorbar(image, ax=ax, label="gMINT accuracy (median over seeds) − paper (points)")
    ax.set_title(f"{protocol} protocol, {kind_name(kind) if kind else 'gMINT'}: ours − paper (blank: pending)",
                 fontsize=9)
    return save_png(fig, out)


KIND_STYLES = ("-", "--", "-.")  # line styles of the classifier kinds, in kinds_in order; the loss threshold ':'


def roc_plot(dataset: str, protocol: str, cells: list[list[Row]], out: Path) -> Path:
    """One dataset's ROC curves (log FPR) at combined D100: per cell, each classifier kind's curve (the cell's
    rows, in kinds_in order) and the loss threshold's, in the cell's colour."""
    fig, ax = pyplot().subplots(figsize=(6, 5))
    for i, rows in enumerate(cells):
        curves = [(row["roc"]["mint"], metrics(row["mint"])["auc"], style, kind_name(classifier(row)))
                  for row, style in zip(rows, KIND_STYLES, strict=False)]
        curves.append((rows[0]["roc"]["loss_threshold"], metrics(rows[0]["loss_threshold"])["auc"], ":", "loss"))
        for roc, est, style, label in curves:
            ax.plot(np.maximum(roc["fpr"], 1e-3), roc["tpr"], style, color=f"C{i}",
                    label=f"{rows[0]['arch']} {label} (AUC {point(est)})")
    chance = np.logspace(-3, 0, 50)
    ax.plot(chance, chance, color="grey", lw=0.5, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(f"{dataset}, {protocol} protocol: combined setup, D100")
    ax.legend(fontsize=6, loc="lower right")
    return save_png(fig, out)


def environment(rows: list[Row]) -> list[str]:
    commits = sorted({f"{r['code']['commit']}{'+changes' if r['code'].get('uncommitted_changes') else ''}"
                      for r in rows})
    versions = sorted({f"gmint {r['code']['gmint']}, torch {r['code']['torch']}, Python {r['code']['python']}"
                       for r in rows})
    return [f"- Code: commit(s) {', '.join(commits) or '—'}; {'; '.join(versions) or '—'}."]


def report(rows: list[Row], paper: PaperTable, config: Mapping[str, Any], config_text: str, out: Path, *,
           config_path: Path) -> dict[str, Any]:
    """Write the Markdown report `out`, its JSON twin and PNGs beside it; return the JSON summary. `config_path`
    is where `config` was read from, for the command that reruns the grid."""
    cells = grid_cells(config)
    indexed = index_rows(rows)
    figures = out.with_name(out.stem + "-figures")
    figures.mkdir(parents=True, exist_ok=True)
    expected = {c.name: c.config_sha256 for c in cells}
    stale = sorted({r["cell"] for r in rows if expected.get(r["cell"]) not in (None, r["config_sha256"])})
    kinds = kinds_in(rows) or (DEFAULT_KIND,)
    done = {r["cell"] for r in rows if all((r["cell"], p.signal, p.setup, p.fraction, k) in indexed
                                           for p in PROBES for k in kinds)}
    lines = [
        "# gMINT's Table 2 on CPU, beside the paper", "",
        "Every figure is measured on held-out rows the MINT classifier never saw; accuracy is on a balanced set "
        "(50% = chance). The paper's figures (gMINT, Table 2) are a reference for the method, not a target: its "
        "audited models were trained 300 epochs on 11,000–40,000 members at full width; these on 1,000 members "
        "at reduced width (see the config), each until it classified 99% of its members correctly or hit the "
        "epoch cap (memorised ✓ / ✗). Intervals are 95% bootstrap intervals (resampling rows, or whole tracks "
        "where a row says so: frames of one sign are not independent). Every table states the median over the "
        "MINT classifier's training seeds on the same rows, with their range (\"seeds\") beside it; the "
        "interval is the first seed's fit's, the only one bootstrapped, and is named as that seed's where its "
        "figure is not the median (how often one seed's fit collapsed to chance: \"Collapsed fits in this grid\" at "
        "the end). Under the `paper` protocol the held-out "
        "externals come from the official test part where there is one (MNIST, CIFAR-10, Tiny ImageNet); "
        "GTSRB has none, and is split by frame under `paper` and by track (physical sign) under `grouped`, "
        "where member and external tracks are drawn as same-class pairs so that every class is level between "
        "them in the pool and in the holdout. "
        f"Classifiers: {', '.join(kind_name(k) for k in kinds)}"
        + (f" — {kind_name(DEFAULT_KIND)} (`{DEFAULT_KIND}`) reads the Weight Modifiers as per-layer log-norms and "
           "signed logs beside the per-sample loss and correctness, with the model chosen by cross-validation on "
           "the pool; the paper's MLP (`mlp`) is the paper's form, an MLP on MEAN features, fitted on the same pool "
           "and scored on the same rows" if DEFAULT_KIND in kinds else "") + ".", "",
        f"- Cells finished: {len(done)} of {len(cells)}; rows: {len(rows)}.",
        f"- Config sha256: {hashlib.sha256(config_text.encode()).hexdigest()[:16]} (each row also records its "
        "cell's settings hash).",
        *environment(rows),
        *([f"- Rows of another config (not shown): {', '.join(stale)}."] if stale else []), ""]
    summary: dict[str, Any] = {"cells": {}, "config_sha256": hashlib.sha256(config_text.encode()).hexdigest()[:16]}
    for protocol in dict.fromkeys(c.protocol for c in cells):
        mine = [(c.name, c.dataset, c.arch) for c in cells if c.protocol == protocol]
        lines += [f"## `{protocol}` protocol", "",
                  *versus_section([n for n, _, _ in mine], rows, indexed, kinds, KIND_NAMES)]
        for kind in kinds:
            diff = differences(mine, indexed, paper, kind)
            heat = heat_map(protocol, mine, diff, figures / f"{protocol}-{kind}-minus-paper.png", kind)
            finite = diff[np.isfinite(diff)]
            title = kind_name(kind)
            lines += [f"### With {title}", "",
                      f"Ours − paper over {finite.size} filled entries (cell × setup × fraction): median "
                      f"{np.median(finite):+.1f} points, "
                      f"{int((finite >= -1).sum())} within 1 point or above." if finite.size else "No cell yet.", "",
                      f"![ours − paper]({figures.name}/{heat.name})", "",
                      f"#### Accuracy % (ours · paper), {title}", "",
                      *layout_table(mine, indexed, paper, "accuracy", kind),
                      f"#### AUC [95% CI], {title}", "", *layout_table(mine, indexed, paper, "auc", kind),
                      f"#### TPR at 1% FPR [95% CI], {title}", "",
                      *layout_table(mine, indexed, paper, "tpr_at_1pct_fpr", kind)]
        lines += ["### What explains each cell", "", *baseline_table(mine, indexed, kinds),
                  *controls_off_chance(mine, rows)]
        for dataset in dict.fromkeys(d for _, d, _ in mine):
            with_roc = [curves for n, d, _ in mine if d == dataset and (curves := [
                row for k in kinds if "roc" in (row := indexed.get((n, "gMINT", "combined", "D100", k), {}))])]
            if with_roc:
                plot = roc_plot(dataset, protocol, with_roc, figures / f"{protocol}-{dataset}-roc.png")
                lines += [f"![ROC {dataset}]({figures.name}/{plot.name})", ""]
        for name, dataset, arch in mine:
            summary["cells"][name] = {
                f"{setup}/{fraction}": {
                    **{f"ours_accuracy_{kind}": over_seeds(r, "accuracy").median if (r := indexed.get(
                        (name, "gMINT", setup, fraction, kind))) else None for kind in kinds},
                    "paper_accuracy": paper_value(paper, dataset, arch, setup, fraction)}
                for setup in SETUPS for fraction in FRACTIONS}
    lines += collapsed_fits([(c.name, c.dataset, c.arch) for c in cells], rows, config_path, out)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, required=True)
    parser.add_argument("--paper", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.grid.read_text().splitlines() if line.strip()]
    text = args.config.read_text()
    report(rows, paper_table(args.paper), tomllib.loads(text), text, args.out, config_path=args.config)


if __name__ == "__main__":
    main()
