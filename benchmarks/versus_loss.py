"""gMINT against the loss threshold in the grid report: does each classifier read more than the one-line loss
threshold it is given, on the same held-out rows?

A white-box auditor holding a model's gradients holds its loss too, so the loss threshold is the floor a gMINT
classifier must reach. Each grid row keeps AUC(classifier) − AUC(loss threshold) with a paired bootstrap interval
on the same rows (whole tracks where rows come in groups), for its first seed's fit, the one bootstrapped. A
probe is *above* the loss threshold where that interval lies above 0, *below* where it lies under 0, and *level*
where it reaches 0. Rows written before the grid kept the paired interval say "not recorded"; a difference of two
separate AUCs is never put in its place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from benchmarks.grid import FRACTIONS, SETUPS, classifier, over_seeds
from gmint.assess.metrics import Estimate
from gmint.mint import DEFAULT_KIND

Row = dict[str, Any]
Key = tuple[str, str, str, str, str]  # cell, signal, setup, fraction, classifier kind
VERDICTS = ("above", "level", "below")
LOSS_ALONE = "(loss only)"  # the end of the name of the default's candidate that reads the loss alone (its floor)


def paired(row: Row) -> Estimate | None:
    """The row's AUC − loss threshold AUC with its paired interval; None for rows that do not keep it."""
    stated = row.get("auc_minus_loss_threshold")
    return Estimate.from_dict(stated) if stated else None


def verdict(row: Row) -> str | None:
    """'above', 'level' or 'below' the loss threshold beyond noise (the paired interval against 0); None for rows
    that do not keep the paired interval."""
    est = paired(row)
    if est is None or est.low is None or est.high is None:
        return None
    return "above" if est.low > 0 else "below" if est.high < 0 else "level"


def difference_text(row: Row) -> str:
    """'+0.047 [+0.031, +0.062] above', or 'not recorded'."""
    est, said = paired(row), verdict(row)
    if est is None or said is None or est.value is None:
        return "not recorded"
    return f"{est.value:+.3f} [{est.low:+.3f}, {est.high:+.3f}] {said}"


def epsilon_text(row: Row) -> str:
    """The ε lower bound at its confidence ('1.23'), '0' where the test shows nothing, '—' where not kept."""
    bound = row.get("epsilon")
    return "—" if not bound else f"{bound['epsilon_lower_bound']:.2f}"


def tpr_text(block: Mapping[str, Any]) -> str:
    """TPR at 1% FPR of a metrics block, or n/a where the held-out externals cannot resolve it."""
    value = block["tpr_at_1pct_fpr"]["value"]
    return "n/a" if value is None else f"{value:.3f}"


def selection_text(row: Row) -> str:
    """What the default's cross-validation on the pool chose, with its CV AUC beside the loss-alone candidate's:
    the measured reason a probe reads what it reads."""
    selection = row.get("model_selection")
    if not selection:
        return "—"
    alone = next((c["auc_mean"] for c in selection.get("cv", []) if c["candidate"].endswith(LOSS_ALONE)), None)
    text = f"{selection['chosen']} (CV {selection['cv_auc']:.3f}"
    return text + (f"; the loss alone {alone:.3f})" if alone is not None else ")")


def cell_table(cells: Iterable[str], rows: Mapping[Key, Row], kinds: tuple[str, ...], names: Mapping[str, str],
               setup: str = "combined", fraction: str = "D100") -> list[str]:
    """Per cell, at one setup and fraction: each classifier's AUC and TPR at 1% FPR (medians over seeds), its first
    seed's paired difference with the loss threshold and the verdict, the loss threshold's own figures, the default's
    ε lower bound and what its model selection chose."""
    head = ["cell", *(f"{names[k]}: AUC (seeds) · TPR@1% · − loss threshold [95%]" for k in kinds),
            "loss threshold AUC · TPR@1%", f"ε ≥ ({names[kinds[0]]})", f"{names[kinds[0]]} chose"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        mine = {k: rows.get((cell, "gMINT", setup, fraction, k)) for k in kinds}
        present = [r for r in mine.values() if r is not None]
        if not present:
            out.append(f"| {cell} | " + " | ".join(["pending"] * (len(head) - 1)) + " |")
            continue
        entries = []
        for row in mine.values():
            if row is None:
                entries.append("pending")
                continue
            auc, tpr = over_seeds(row, "auc"), over_seeds(row, "tpr_at_1pct_fpr").median
            spread = f" ({auc.low:.3f}–{auc.high:.3f})" if auc.seeds > 1 else ""
            entries.append(f"{auc.median:.3f}{spread} · {'n/a' if tpr is None else f'{tpr:.3f}'} · "
                           f"{difference_text(row)}")
        loss = present[0]["loss_threshold"]
        first = mine[kinds[0]]
        out.append(f"| {cell} | " + " | ".join(entries) + f" | {loss['auc']['value']:.3f} · {tpr_text(loss)} | "
                   f"{epsilon_text(first) if first else 'pending'} | {selection_text(first) if first else 'pending'} |")
    return [*out, ""]


def verdict_counts(rows: Iterable[Row], kind: str) -> Counter[str]:
    """How many of `kind`'s gMINT probes are above, level with and below the loss threshold (and not recorded)."""
    return Counter(verdict(r) or "not recorded" for r in rows if r["signal"] == "gMINT" and classifier(r) == kind)


def counts_table(rows: list[Row], kinds: tuple[str, ...], names: Mapping[str, str]) -> list[str]:
    """Per classifier and per setup × fraction: probes above / level / below the loss threshold."""
    columns = [f"{setup} {fraction}" for setup in SETUPS for fraction in FRACTIONS]
    out = ["| classifier | " + " | ".join(columns) + " | all |", "|---|" + "---|" * (len(columns) + 1)]
    for kind in kinds:
        entries = []
        for setup in SETUPS:
            for fraction in FRACTIONS:
                entries.append(_counts(verdict_counts(
                    (r for r in rows if r["setup"] == setup and r["fraction"] == fraction), kind)))
        out.append(f"| {names[kind]} | " + " | ".join(entries) + f" | {_counts(verdict_counts(rows, kind))} |")
    return [*out, "", "Each entry: probes above / level with / below the loss threshold (paired 95% interval of the "
            "AUC difference on the same held-out rows against 0)" + (
                "; rows without the paired interval in brackets." if any(
                    verdict(r) is None for r in rows if r["signal"] == "gMINT") else "."), ""]


def _counts(counts: Counter[str]) -> str:
    text = " / ".join(str(counts[v]) for v in VERDICTS)
    return text + (f" ({counts['not recorded']})" if counts["not recorded"] else "")


def below_cells(cells: Iterable[str], rows: Mapping[Key, Row], kind: str, name: str) -> list[str]:
    """Every cell where `kind` at combined D100 reads below the loss threshold beyond noise, with what was
    measured about why: the pool's cross-validation against the held-out difference."""
    found = []
    for cell in cells:
        row = rows.get((cell, "gMINT", "combined", "D100", kind))
        if row is not None and verdict(row) == "below":
            found.append(f"- {cell}: {difference_text(row)}; on the pool, {selection_text(row)}, fitted on "
                         f"{row['fit_rows']} rows.")
    if not found:
        return []
    return [f"Cells where {name} reads below the loss threshold at combined D100, with its cross-validation on the "
            "pool beside the held-out difference (a pool score above the loss-alone candidate's that the "
            "held-out rows do not bear out is a selection the pool's size could not settle):", "", *found, ""]


def versus_section(cells: list[str], rows: list[Row], indexed: Mapping[Key, Row], kinds: tuple[str, ...],
                   names: Mapping[str, str]) -> list[str]:
    """The report section: every cell at combined D100, the counts over all probes, and the cells below."""
    probes = [r for r in rows if r["cell"] in set(cells) and r["signal"] == "gMINT"]
    if not probes:
        return []
    combined = [r for r in probes if r["setup"] == "combined" and r["fraction"] == "D100"]
    lines = ["### Against the loss threshold, on the same rows", "",
             "AUC − the loss threshold's AUC for the first seed's fit, with the paired bootstrap interval; above / "
             "level / below: the interval above 0, reaching it, under it. TPR at 1% FPR for each. ε: the empirical "
             "lower bound at 95% confidence from the held-out error rates at a threshold chosen on the pool "
             "(a measured floor on leakage for a model trained without DP, not a guarantee).", ""]
    for kind in kinds:
        counts = verdict_counts(combined, kind)
        measured = sum(counts[v] for v in VERDICTS)
        if measured:
            lines.append(f"- {names[kind]}, combined D100: above the loss threshold in {counts['above']} of "
                         f"{measured} cells, level in {counts['level']}, below in {counts['below']}.")
    lines += ["", *cell_table(cells, indexed, kinds, names), *counts_table(probes, kinds, names)]
    if DEFAULT_KIND in kinds:  # the paper's form reads no loss: where it is below, that is the published reading
        lines += below_cells(cells, indexed, DEFAULT_KIND, names[DEFAULT_KIND])
    return lines
