"""The audit's report: report.json for programs, report.html for people, from one set of records.

The page is headed by the answer (the candidates' set verdict, or, without candidates, what the held-out test
measured) and the audited model's own gap; then every signal compared on the same held-out rows, their ROC
curves, the metrics per slice, the most exposed held-out members with their images, the candidates, and the
record of how it was made (versions, seeds, the split's hash, the engine check) with the configuration itself.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
from rich.table import Table as RichTable

from gmint.assess.exposure import contact_sheet, top_k
from gmint.assess.figures import RocCurve, roc_figure
from gmint.assess.metrics import Estimate
from gmint.assess.report import METRIC_LABELS, format_estimate, gap_lines
from gmint.assess.scoring import Audit
from gmint.assess.slices import evaluate_slices, slice_rows
from gmint.audit.html import Figure, Page, Section, Table, write_html
from gmint.audit.run import AuditRun, main_signal
from gmint.experiment import Probe
from gmint.features.store import FeatureStore
from gmint.files import atomic_write
from gmint.version import __version__

SHOWN_METRICS = ("accuracy", "auc", "tpr_at_1pct_fpr")
LOSS_THRESHOLD = "loss threshold (baseline)"
# Candidates listed by name on the page, highest score first; report.json holds them all.
CANDIDATES_SHOWN = 50


def comparison_rows(run: AuditRun) -> list[tuple[str, dict[str, Estimate]]]:
    """(signal, metrics) for every probe, the loss threshold (on the main probe's rows) before the control."""
    by_probe = {m.probe: m.evaluation for m in run.cell.measurements}
    rows = [(name, dict(by_probe[probe].mint)) for name, probe in run.labels.items() if probe.model != "control"]
    rows.append((LOSS_THRESHOLD, dict(by_probe[_main_probe(run)].loss_threshold)))
    rows += [(name, dict(by_probe[probe].mint)) for name, probe in run.labels.items() if probe.model == "control"]
    return rows


def _main_probe(run: AuditRun) -> Probe:
    """The report's reference signal: gMINT on the last (widest) layer setup."""
    return run.labels[main_signal(run.config)]


def write_report(run: AuditRun, out: Path, *, config_text: str = "") -> tuple[Path, Path]:
    """report.json and report.html (with its figures as PNGs beside them) in `out`."""
    figures = out / "figures"
    main = run.cell.evaluation(_main_probe(run))
    held_out = slice_rows(main, main.store)  # the main rows' class, correctness and loss, read from the store once
    rows = comparison_rows(run)
    # The loss threshold's scores: lower loss reads as member (the threshold's own direction).
    curves = [RocCurve(name, held_out.membership, -held_out.loss) if name == LOSS_THRESHOLD else
              RocCurve(name, run.cell.evaluation(run.labels[name]).scores.membership,
                       np.asarray(run.cell.evaluation(run.labels[name]).scores.score, np.float64))
              for name, _ in rows]
    roc = roc_figure(curves, figures / "roc.png", title="every signal on the same held-out rows")
    header = ("signal", *(METRIC_LABELS[k] + (" (95% interval)" if k != "accuracy" else "") for k in SHOWN_METRICS),
              "AUC − loss threshold (paired 95% interval)", "ε lower bound (95%)")
    table = Table("Held-out membership test: every signal on the same rows (AUC 0.5 = chance)", header,
                  tuple((name, *(_cell(metrics[k], k) for k in SHOWN_METRICS), *_beside_loss(run, name))
                        for name, metrics in rows))
    sections = [Section("Every signal, side by side", (
        "Each MINT classifier is fitted on the auditor's pool only and scored on held-out rows it never saw; the "
        "loss threshold is fitted on the same pool; the negative control runs the same pipeline on a model that "
        "never saw the members and should sit near chance. The AUC difference with the loss threshold is measured on "
        "the same resampled rows; the ε lower bound reads the held-out error rates at a threshold chosen on the pool "
        "(Clopper–Pearson bounds).",
        *((f"{main_signal(run.config)}: {main.epsilon.conclusion}.",) if main.epsilon else ())),
        (table,), (Figure(roc, "ROC of every signal; the log panel starts where the held-out externals resolve "
                          "the rate."),))]
    slices = evaluate_slices(held_out, run.config.report.slices, n_boot=run.config.n_boot,
                             seed=run.config.seed) if run.config.report.slices else []
    if slices:
        sections.append(Section("Per slice", ("The main gMINT classifier's metrics on each slice of the held-out "
                                              "rows; a slice with too few externals cannot resolve a low "
                                              "false-positive rate.",),
                                (Table("metrics per slice", ("slicer", "slice", "members", "externals", "AUC",
                                                             "note"),
                                       tuple((s.slicer, s.name, str(s.members), str(s.external),
                                              format_estimate(s.metrics["auc"]), s.note) for s in slices)),)))
    top = run.config.report.top
    exposed = top_k(held_out.sample_id, held_out.score, held_out.label, held_out.loss, top,
                    mask=held_out.membership == 1) if top else []
    if exposed:
        sheet = contact_sheet(exposed, run.data, figures / "exposed.png", title="most exposed held-out members")
        sections.append(Section("The most exposed records", (
            "The held-out members the main classifier scores highest: what a data owner would see at risk first.",),
            (Table("most exposed held-out members", ("rank", "row", "class", "score", "loss"),
                   tuple((str(r.rank), str(r.sample_id), _class(run, r.label), f"{r.score:.3f}", f"{r.loss:.4f}")
                         for r in exposed)),), (Figure(sheet, "their images, with rank, row, class and score"),)))
    if run.candidates is not None:
        sections.append(_candidates_section(run.candidates, run.config.candidates.alpha))
    headline, evidence = _headline(run, rows)
    provenance = _provenance(run)
    page = Page(run.config.report.title, headline, tuple(gap_lines(main)), evidence, tuple(main.warnings),
                tuple(sections), provenance, config_text)
    html = write_html(page, out / "report.html")
    payload = {"headline": headline, "evidence": evidence, "signals": {
        name: {k: v.to_dict() for k, v in metrics.items()} for name, metrics in rows},
        "versus_loss_threshold": {name: run.cell.evaluation(probe).to_dict().get("auc_minus_loss_threshold")
                                  for name, probe in run.labels.items()},
        "epsilon": {name: run.cell.evaluation(probe).to_dict().get("epsilon") for name, probe in run.labels.items()},
        "audited_model": main.audited_model.to_dict(), "rows": {"members": main.rows.members,
                                                               "external": main.rows.external},
        "slices": [s.to_dict() for s in slices], "exposed": [vars(r) for r in exposed],
        "candidates": run.candidates.verdict_dict(run.config.candidates.alpha) if run.candidates else None,
        "provenance": provenance}
    json_path = out / "report.json"
    with atomic_write(json_path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return json_path, html


def _beside_loss(run: AuditRun, name: str) -> tuple[str, str]:
    """A signal's AUC difference with the loss threshold on the same resampled rows, and its ε lower bound."""
    if name not in run.labels:
        return "—", "—"
    evaluation = run.cell.evaluation(run.labels[name])
    versus = format_estimate(evaluation.versus_loss) if evaluation.versus_loss is not None else "n/a"
    epsilon = f"{evaluation.epsilon.value:.2f}" if evaluation.epsilon is not None else "n/a"
    return versus, epsilon


def _cell(estimate: Estimate, key: str) -> str:
    if key == "accuracy":
        return "n/a" if estimate.value is None else f"{estimate.value:.3f}"
    return format_estimate(estimate)


def _candidates_section(audit: Audit, alpha: float) -> Section:
    """The set verdict, then the candidates by score (the first CANDIDATES_SHOWN; report.json has them all)."""
    scores = audit.scores
    order = np.argsort(-np.asarray(scores.score, np.float64), kind="stable")[:CANDIDATES_SHOWN]
    records = scores.records()
    table = Table(f"candidates by score (the first {len(order)} of {len(scores)})",
                  ("file", "class", "labels", "score"),
                  tuple((str(records[i]["file"]), str(records[i]["class"]), str(records[i]["label_source"]),
                         f"{scores.score[i]:.3f}") for i in order))
    return Section("The candidates", (audit.conclusion(alpha),), (table,))


def _class(run: AuditRun, label: int) -> str:
    classes = run.data.classes
    return classes[label] if 0 <= label < len(classes) else str(label)


def _headline(run: AuditRun, rows: list[tuple[str, dict[str, Estimate]]]) -> tuple[str, bool | None]:
    """The answer first: the candidates' verdict where there are candidates, else what the test measured."""
    if run.candidates is not None:
        alpha = run.config.candidates.alpha
        return run.candidates.conclusion(alpha), run.candidates.verdict.rejects(alpha)
    metrics = dict(rows)
    name = main_signal(run.config)
    auc, loss = metrics[name]["auc"], metrics[LOSS_THRESHOLD]["auc"]
    control = next((m["auc"] for n, m in rows if n.startswith("negative control")), None)
    text = (f"{name} tells held-out members from externals at AUC {format_estimate(auc)}; the loss threshold "
            f"reads {format_estimate(loss)}")
    if control is not None:
        text += f"; the negative control {format_estimate(control)} (chance is 0.5)"
    return text + ".", None


def _provenance(run: AuditRun) -> dict[str, object]:
    """What made the figures: versions, seeds, the split's hash, each model and the main store's record."""
    main = run.cell.evaluation(_main_probe(run))
    with FeatureStore.open(main.store) as store:
        recorded = dict(store.provenance)
    import torch

    return {"gmint": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "seed": run.config.seed, "split_sha256": run.cell.split.sha256, "dataset": run.data.name,
            "store": str(main.store), "extraction": {k: recorded.get(k) for k in (
                "engine", "engine_check", "engine_recheck", "engine_restarts", "layers", "reduction", "source",
                "model_check") if k in recorded}}


def comparison_table(rows: list[tuple[str, dict[str, Estimate]]]) -> RichTable:
    """The comparison as a console table: accuracy, AUC and TPR at 1% FPR with their intervals."""
    table = RichTable(title="held-out membership test; 0.5 AUC = chance")
    for col in ("signal", "accuracy", "AUC (95% interval)", "TPR @ 1% FPR (95% interval)"):
        table.add_column(col, justify="left" if col == "signal" else "right")
    for name, metrics in rows:
        table.add_row(name, *(_cell(metrics[k], k) for k in SHOWN_METRICS))
    return table
