"""The aMINT report: the head's membership metrics read two ways, beside passive gMINT and the loss threshold.

The negatives are always rows nothing was fitted on: the split's held-out externals (official test rows under
the `paper` protocol where the dataset has a test part, held-out train rows otherwise). The positives differ:

- **held-out members** — rows the audited model trained on but the head never saw: the honest reading, the
  question an auditor asks of samples they did not already label;
- **members the head saw** — the pool members whose "member" label the head was trained on: the reading of
  the authors' evaluation, which asks the head about the members it learnt.

Each reading is balanced (the larger side subsampled, seeded) and reported with bootstrap intervals, beside the
loss threshold fitted on the pool. Passive gMINT (an MLP on MEAN Weight Modifiers of the combined layers,
fitted on the pool) runs on the same model and is scored on the held-out reading's rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmint.amint.forward import RowOutputs, forward_rows
from gmint.amint.train import AmintModel
from gmint.assess.evaluate import Evaluation, evaluate_store
from gmint.assess.metrics import Estimate, balance, membership_metrics, resampling_unit, score_collapse
from gmint.assess.report import METRIC_LABELS, format_estimate
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit, one_sided_groups
from gmint.data.transforms import Transform
from gmint.features.extract import extract, split_rows
from gmint.features.settings import ExtractSettings
from gmint.files import atomic_write
from gmint.mint import train_mint
from gmint.mint.threshold import best_threshold
from gmint.progress import progress_bar

READINGS = {
    "held-out members": "members the audited model trained on, never seen by the head, vs never-seen rows",
    "members the head saw": "pool members the head was trained on as 'member', vs never-seen rows",
}
PASSIVE_STORE, PASSIVE_MINT = "audited-gradient.h5", "mint-combined.pt"


@dataclass(frozen=True)
class Reading:
    """One reading's rows and metrics: the head's P(member) at 0.5, and the loss threshold fitted on the pool."""

    name: str
    members: int
    external: int
    amint: dict[str, Estimate]
    loss_threshold: dict[str, Estimate]
    mean_member_score: float
    mean_external_score: float
    intervals: str = "rows"  # what the bootstrap resampled: rows, or whole groups

    def to_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {"name": self.name, "description": READINGS[self.name], "members": self.members,
                "external": self.external, "amint": {k: v.to_dict() for k, v in self.amint.items()},
                "loss_threshold": {k: v.to_dict() for k, v in self.loss_threshold.items()},
                "mean_member_score": self.mean_member_score, "mean_external_score": self.mean_external_score,
                "intervals": self.intervals}


@dataclass(frozen=True)
class AmintReport:
    """What `gmint amint train` reports: the audited model's accuracy, both readings, passive gMINT."""

    protocol: dict[str, object]
    audited_model: dict[str, float]
    readings: tuple[Reading, ...]
    passive: Evaluation | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def reading(self, name: str) -> Reading:
        """The reading called `name` (a key of READINGS)."""
        return next(r for r in self.readings if r.name == name)

    def to_dict(self) -> dict[str, object]:
        """report.json: everything but per-row scores."""
        result: dict[str, object] = {"protocol": self.protocol, "audited_model": self.audited_model,
                                     "readings": [r.to_dict() for r in self.readings], "warnings": list(self.warnings)}
        if self.passive is not None:
            passive = self.passive.to_dict()
            result["passive_gmint"] = {"mint": passive["mint"], "loss_threshold": passive["loss_threshold"],
                                       "rows": passive["rows"], "audited_model": passive["audited_model"],
                                       "protocol": passive["protocol"], "store": passive["store"]}
        return result

    def columns(self) -> dict[str, dict[str, Estimate]]:
        """The result columns side by side: aMINT per reading, passive gMINT, the loss threshold."""
        held = self.reading("held-out members")
        columns = {"aMINT, held-out members": held.amint,
                   "aMINT, members the head saw": self.reading("members the head saw").amint}
        if self.passive is not None:
            columns["passive gMINT, held-out"] = self.passive.mint
        columns["loss threshold, held-out"] = held.loss_threshold
        return columns

    def markdown(self) -> str:
        """report.md: the table of metrics with intervals, the rows and the audited model's accuracy."""
        columns = self.columns()
        taps = self.protocol["taps"]
        tap_names = ", ".join(map(str, taps)) if isinstance(taps, list) else str(taps)
        lines = ["# aMINT report", "",
                 f"{self.protocol['arch']} on {self.protocol['dataset']} ({self.protocol['protocol']} protocol, split "
                 f"{str(self.protocol['split_sha256'])[:12]}), taps {tap_names}; negatives: "
                 f"{self.protocol['negatives']}.", "",
                 "| metric | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for key, label in METRIC_LABELS.items():
            lines.append(f"| {label} | " + " | ".join(format_estimate(m[key]) for m in columns.values()) + " |")
        lines += ["", "Rows (balanced): " + "; ".join(f"{r.name}: {r.members} members vs {r.external} never-seen"
                                                      for r in self.readings) + ".", ""]
        lines += ["Audited model accuracy: " + ", ".join(f"{k.removesuffix('_accuracy')} {v:.3f}"
                                                       for k, v in self.audited_model.items()
                                                       if k.endswith("_accuracy")) + ".", ""]
        lines += [f"- {name}: {text}" for name, text in READINGS.items()]
        lines += [f"- warning: {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def evaluate_amint(amint: AmintModel, data: ImageSet, split: MembershipSplit, *, transform: Transform,
                   passive: bool = True, workdir: Path | None = None, overwrite: bool = False,
                   n_boot: int = 1000, seed: int = 0, batch_size: int = 256, device: str = "cpu",
                   show_progress: bool = False) -> AmintReport:
    """Both readings of the head on the split's held-out rows, and (with `passive`) passive gMINT on the model.

    Args:
        amint: the jointly trained model and head.
        data: the dataset the split indexes.
        split: the model's membership split.
        transform: the model's preprocessing.
        passive: also extract MEAN Weight Modifiers (combined layers) into `workdir` and evaluate an MLP MINT
            classifier fitted on the pool, on the held-out rows.
        workdir: where the passive store and classifier go (default: the model's folder); an existing store of
            this model is resumed.
        overwrite: replace a passive store of another model instead of refusing it.
        n_boot: bootstrap replicates of the 95% intervals.
        seed: seeds the balancing, the bootstrap, the extraction and the passive classifier.
        batch_size: rows per forward pass.
        device: where the model runs.
        show_progress: progress bars.
    """
    model, head = amint.audited.module, amint.head.module
    members, external = np.asarray(split.members), np.asarray(split.external)
    held_m = np.intersect1d(split.holdout, members)
    held_e = np.intersect1d(split.holdout, external)
    pool_m, pool_e = np.intersect1d(split.pool, members), np.intersect1d(split.pool, external)
    rows = np.concatenate([held_m, held_e, pool_m, pool_e])
    with progress_bar("aMINT scores", len(rows), enabled=show_progress) as bar:
        out = forward_rows(model, head, data, rows, transform, batch_size=batch_size, device=device,
                           on_batch=bar.advance)
    pool = out.take(np.concatenate([pool_m, pool_e]))
    pool_y = np.r_[np.ones(len(pool_m), np.int8), np.zeros(len(pool_e), np.int8)]
    threshold = best_threshold(pool_y, -pool.loss)
    readings, warnings = [], []
    for name, positives in (("held-out members", held_m), ("members the head saw", pool_m)):
        groups = None if data.groups is None else np.r_[data.groups[positives], data.groups[held_e]]
        reading, collapsed = _reading(name, out.take(positives), out.take(held_e), threshold, n_boot, seed, groups)
        readings.append(reading)
        warnings += [f"{name}: {collapsed}"] if collapsed else []
    evaluation = None
    if passive:
        folder = Path(workdir) if workdir is not None else amint.folder
        store = extract(amint.audited, data, split_rows(split),
                        ExtractSettings(layer_setup="combined", reduction="mean", seed=seed, transform=transform),
                        out=folder / PASSIVE_STORE, split=split, resume=not overwrite, overwrite=overwrite,
                        show_progress=show_progress)
        mint = train_mint(store, kind="mlp", setup="combined", seed=seed)
        mint.save(folder / PASSIVE_MINT)
        evaluation = evaluate_store(mint, store, n_boot=n_boot, seed=seed)
        warnings += [f"passive gMINT: {w}" for w in evaluation.warnings]
    has_test = bool((data.part == "test").any())
    negatives = ("official test rows" if split.protocol == "paper" and has_test else "held-out external rows") + \
        " the audited model and the head never saw"
    protocol: dict[str, object] = {
        "dataset": data.name, "arch": amint.audited.record.arch, "protocol": split.protocol,
        "split_sha256": split.sha256, "split_seed": split.seed, "seed": seed, "n_boot": n_boot,
        "taps": list(amint.head.spec.taps), "negatives": negatives,
        "model_fingerprint": amint.head.model_fingerprint,
        "amint_config": amint.audited.record.amint_config,
        "train_config": amint.audited.record.train_config,
        "train_seconds": amint.audited.record.train_seconds}
    record = amint.audited.record.training
    return AmintReport(protocol, record.to_dict() if record is not None else {}, tuple(readings), evaluation,
                       tuple(warnings))


def _reading(name: str, positives: RowOutputs, negatives: RowOutputs, threshold: float, n_boot: int,
             seed: int, groups: np.ndarray | None) -> tuple[Reading, str | None]:
    """One reading, balanced by subsampling the larger side; the head's collapse warning, if any. Intervals
    resample whole groups where `groups` (dataset groups of the positives, then the negatives) allow."""
    score = np.r_[positives.score, negatives.score]
    loss = np.r_[positives.loss, negatives.loss]
    y = np.r_[np.ones(len(positives.score), np.int8), np.zeros(len(negatives.score), np.int8)]
    keep = balance(y, seed)
    score, loss, y = score[keep], loss[keep], y[keep]
    units = None if groups is None else one_sided_groups(y, groups[keep])
    reading = Reading(name, int((y == 1).sum()), int((y == 0).sum()),
                      membership_metrics(y, score, n_boot=n_boot, seed=seed, groups=units),
                      membership_metrics(y, -loss, threshold=threshold, n_boot=n_boot, seed=seed, groups=units),
                      float(score[y == 1].mean()), float(score[y == 0].mean()),
                      resampling_unit(units))
    return reading, score_collapse(score)


def write_report(report: AmintReport, folder: Path) -> list[Path]:
    """report.json and report.md in `folder`, each written whole or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("report.json", json.dumps(report.to_dict(), indent=2)), ("report.md", report.markdown())):
        with atomic_write(folder / name) as tmp:
            tmp.write_text(text)
        written.append(folder / name)
    return written
