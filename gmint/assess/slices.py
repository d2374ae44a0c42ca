"""Results per slice of the evaluated rows (as TF-Privacy's SlicingSpec): where membership leaks most.

An audit's headline AUC averages over every kind of sample; the risk is rarely spread evenly. A *slicer*
cuts the evaluated rows into named slices — by true class, by whether the audited model classifies the
row correctly, by deciles of its loss — and each slice gets the full set of membership metrics with
their bootstrap intervals and its row counts. A slice holding only members or only externals has no
metric; one whose externals are too few to reach 1% FPR (fewer than 100) cannot resolve a TPR there and
is flagged, so a striking figure on 12 rows is not read as a finding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from gmint.assess.evaluate import Evaluation
from gmint.assess.metrics import METRIC_NAMES, Estimate, externals_needed, membership_metrics
from gmint.errors import InputError
from gmint.features.store import FeatureStore
from gmint.registry import Registry


@dataclass(frozen=True)
class SliceRows:
    """The evaluated rows with what slicers read: each row's sample id, membership (1 member, 0 external),
    MINT score, true class, whether the audited model classifies it correctly, and its loss."""

    sample_id: np.ndarray
    membership: np.ndarray
    score: np.ndarray
    label: np.ndarray
    correct: np.ndarray
    loss: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.sample_id)
        if any(len(a) != n for a in (self.membership, self.score, self.label, self.correct, self.loss)):
            raise InputError("slice rows: every column must have one value per evaluated row")


# A slicer cuts the rows into named slices: [(slice name, boolean mask over the rows)], disjoint, covering all.
Slicer = Callable[[SliceRows], list[tuple[str, np.ndarray]]]
SLICERS: Registry[Slicer] = Registry("slicer")


@SLICERS.register("class")
def by_class(rows: SliceRows) -> list[tuple[str, np.ndarray]]:
    """One slice per true class present among the rows."""
    return [(f"class {int(c)}", rows.label == c) for c in np.unique(rows.label)]


@SLICERS.register("correct")
def by_correctness(rows: SliceRows) -> list[tuple[str, np.ndarray]]:
    """Rows the audited model classifies correctly, and those it gets wrong."""
    return [("correctly classified", rows.correct.astype(bool)), ("misclassified", ~rows.correct.astype(bool))]


@SLICERS.register("loss-decile")
def by_loss_decile(rows: SliceRows) -> list[tuple[str, np.ndarray]]:
    """Ten slices by the audited model's loss, cut at the deciles of the evaluated rows' losses (members and
    externals together); tied losses stay in one slice, so a slice may be empty or larger than a tenth."""
    edges = np.quantile(rows.loss, np.linspace(0.1, 0.9, 9))
    decile = np.searchsorted(edges, rows.loss, side="right")  # 0 … 9
    bounds = [float(rows.loss.min()), *map(float, edges), float(rows.loss.max())]
    return [(f"loss decile {d + 1} [{bounds[d]:.3g}, {bounds[d + 1]:.3g}]", decile == d) for d in range(10)]


@dataclass(frozen=True)
class SliceResult:
    """One slice's rows and metrics; `note` says why a metric is missing or not to be trusted."""

    slicer: str
    name: str
    members: int
    external: int
    metrics: dict[str, Estimate]
    note: str = ""

    @property
    def too_small(self) -> bool:
        """The slice cannot resolve a rate: one side is missing, or its externals cannot reach 1% FPR."""
        return bool(self.note)

    def to_dict(self) -> dict[str, object]:
        """The JSON form of report.json's `slices` entries."""
        return {"slicer": self.slicer, "slice": self.name, "members": self.members, "external": self.external,
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()}, "too_small": self.too_small,
                "note": self.note}


def parse_slicers(text: str) -> list[str]:
    """`class,correct,loss-decile` → the slicer names, each checked against SLICERS."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise InputError(f"slices need one or more of {SLICERS.names()}, comma-separated")
    for name in names:
        SLICERS.get(name)
    return list(dict.fromkeys(names))


def slice_rows(evaluation: Evaluation, store_path: Path) -> SliceRows:
    """The evaluated rows of `evaluation` with their class, correctness and loss, read from its store."""
    with FeatureStore.open(store_path) as store:
        ids = store.column("sample_id")
        position = {int(i): p for p, i in enumerate(ids)}
        try:
            at = np.array([position[int(i)] for i in evaluation.scores.sample_id], dtype=np.int64)
        except KeyError as exc:
            raise InputError(f"evaluated row {exc.args[0]} is not in {store_path}") from None
        label, pred, loss = store.column("label")[at], store.column("pred")[at], store.column("loss")[at]
    s = evaluation.scores
    return SliceRows(np.asarray(s.sample_id), np.asarray(s.membership), np.asarray(s.score, np.float64), label,
                     pred == label, loss.astype(np.float64))


def evaluate_slices(rows: SliceRows, slicers: Sequence[str], *, n_boot: int = 1000,
                    seed: int = 0) -> list[SliceResult]:
    """Every metric with its interval per slice of every slicer (slices without rows are left out).

    Args:
        rows: the evaluated rows.
        slicers: names in SLICERS.
        n_boot: bootstrap replicates per slice.
        seed: seeds each slice's bootstrap.
    """
    results = []
    needed = externals_needed(0.01)
    for slicer in slicers:
        for name, mask in SLICERS.get(slicer)(rows):
            y = rows.membership[mask]
            members, external = int((y == 1).sum()), int((y == 0).sum())
            if members + external == 0:
                continue
            if members == 0 or external == 0:
                side = "members" if external == 0 else "externals"
                none = Estimate(None, None, None, f"only {side} in this slice")
                results.append(SliceResult(slicer, name, members, external, dict.fromkeys(METRIC_NAMES, none),
                                           f"only {side}: no membership metric"))
                continue
            metrics = membership_metrics(y, rows.score[mask], n_boot=n_boot, seed=seed)
            note = f"{external} externals cannot resolve 1% FPR (needs ≥ {needed})" if external < needed else ""
            results.append(SliceResult(slicer, name, members, external, metrics, note))
    return results


def _cell(est: Estimate) -> str:
    return "n/a" if est.value is None else f"{est.value:.3f} [{est.low:.3f}, {est.high:.3f}]"


SLICE_COLUMNS = {"accuracy": "accuracy", "auc": "AUC", "tpr_at_1pct_fpr": "TPR @ 1% FPR"}


def slices_table(results: Sequence[SliceResult]) -> Table:
    """The slices as a rich table: rows, accuracy, AUC and TPR @ 1% FPR with intervals, and the flag."""
    table = Table(title="membership inference test per slice")
    for col in ("slicer", "slice", "members", "external", *SLICE_COLUMNS.values(), "flag"):
        table.add_column(col, justify="right" if col in ("members", "external") else "left")
    for r in results:
        table.add_row(r.slicer, r.name, str(r.members), str(r.external),
                      *(_cell(r.metrics[k]) for k in SLICE_COLUMNS), r.note)
    return table


def slices_markdown(results: Sequence[SliceResult]) -> list[str]:
    """The slices as a Markdown section (appended to report.md)."""
    lines = ["## Per slice", "", "| slicer | slice | members | external | " + " | ".join(SLICE_COLUMNS.values())
             + " | flag |", "|---" * (5 + len(SLICE_COLUMNS)) + "|"]
    lines += [f"| {r.slicer} | {r.name} | {r.members} | {r.external} | "
              + " | ".join(_cell(r.metrics[k]) for k in SLICE_COLUMNS) + f" | {r.note} |" for r in results]
    return [*lines, ""]


def add_to_report(results: Sequence[SliceResult], out_dir: Path) -> list[Path]:
    """Put the slices into a report folder written by `gmint.assess.report.write_report`: a `slices` list in
    report.json and a "Per slice" section at the end of report.md."""
    import json

    out_dir = Path(out_dir)
    report_json, report_md = out_dir / "report.json", out_dir / "report.md"
    if not report_json.exists() or not report_md.exists():
        raise InputError(f"{out_dir} holds no report.json/report.md to add the slices to")
    payload = json.loads(report_json.read_text())
    payload["slices"] = [r.to_dict() for r in results]
    report_json.write_text(json.dumps(payload, indent=2))
    with report_md.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(slices_markdown(results)) + "\n")
    return [report_json, report_md]
