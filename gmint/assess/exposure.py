"""The most exposed records: the samples with the highest membership scores, as a table and as images.

An aggregate metric says whether a model leaks; a data owner or a model owner next asks *which* records
leak. The K highest-scoring held-out members of an evaluation (or the K highest-scoring candidates of a
`gmint score` run) are listed with their dataset row id, true class, score and the audited model's loss on
them, written as a CSV, and drawn as a contact sheet of their images so a person can see what is at risk.
Ties in the score are broken by the smaller row id, so the list is one list.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gmint.assess.evaluate import Evaluation
from gmint.assess.figures import pyplot, save_png
from gmint.assess.scoring import SampleScores
from gmint.assess.slices import slice_rows
from gmint.data.base import ImageSet
from gmint.errors import InputError
from gmint.features.store import FeatureStore

CSV_COLUMNS = ("rank", "sample_id", "label", "score", "loss")


@dataclass(frozen=True)
class ExposedRecord:
    """One of the top-K: its rank (1 = highest score), dataset row id, true class, score and loss."""

    rank: int
    sample_id: int
    label: int
    score: float
    loss: float


def top_k(sample_id: np.ndarray, score: np.ndarray, label: np.ndarray, loss: np.ndarray, k: int,
          mask: np.ndarray | None = None) -> list[ExposedRecord]:
    """The `k` rows with the highest score (among `mask`, when given), highest first, ties by smaller id.

    Args:
        sample_id: (N,) dataset row ids.
        score: (N,) membership scores.
        label: (N,) true classes.
        loss: (N,) the audited model's loss.
        k: how many (fewer when fewer rows qualify).
        mask: (N,) bool, the rows that may be listed (e.g. members only).

    Raises:
        InputError: k below 1, or columns of different lengths.
    """
    if k < 1:
        raise InputError(f"the exposure list needs a positive number of records, got {k}")
    n = len(sample_id)
    if any(len(a) != n for a in (score, label, loss)) or (mask is not None and len(mask) != n):
        raise InputError("top-K: every column must have one value per row")
    rows = np.flatnonzero(mask) if mask is not None else np.arange(n)
    order = rows[np.lexsort((np.asarray(sample_id)[rows], -np.asarray(score, np.float64)[rows]))][:k]
    return [ExposedRecord(rank + 1, int(sample_id[i]), int(label[i]), float(score[i]), float(loss[i]))
            for rank, i in enumerate(order)]


def write_csv(records: Sequence[ExposedRecord], path: Path) -> Path:
    """rank, sample_id, label, score, loss — one line per record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(asdict(r) for r in records)
    return path


def contact_sheet(records: Sequence[ExposedRecord], data: ImageSet, path: Path, *, title: str = "") -> Path:
    """A PNG grid of the records' images (found by row id in `data`), each captioned with its rank, row id,
    class and score.

    Raises:
        InputError: a record whose row id is not in `data` (another dataset than the one scored).
    """
    if not records:
        raise InputError("no records to draw")
    position = {int(i): p for p, i in enumerate(data.sample_ids)}
    missing = [r.sample_id for r in records if r.sample_id not in position]
    if missing:
        raise InputError(f"row {missing[0]} is not in {data.name}: give the dataset the rows were scored from")
    cols = min(len(records), max(1, math.ceil(math.sqrt(len(records)))))
    rows = math.ceil(len(records) / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, records, strict=False):
        image = data.images[position[r.sample_id]]
        ax.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None,
                  vmin=0, vmax=255, interpolation="nearest")
        name = data.classes[r.label] if 0 <= r.label < len(data.classes) else str(r.label)
        ax.set_title(f"#{r.rank} row {r.sample_id}\n{name[:14]} · {r.score:.3f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path, dpi=110)


def exposed_members(evaluation: Evaluation, store_path: Path, k: int) -> list[ExposedRecord]:
    """The `k` evaluated (held-out) members with the highest MINT scores, with class and loss from the store."""
    rows = slice_rows(evaluation, store_path)
    return top_k(rows.sample_id, rows.score, rows.label, rows.loss, k, mask=rows.membership == 1)


def exposed_candidates(scores: SampleScores, store_path: Path, k: int) -> list[ExposedRecord]:
    """The `k` candidates of a `gmint score` run with the highest MINT scores, with the audited model's loss
    on each read from the candidates' feature store."""
    with FeatureStore.open(store_path) as store:
        loss_of = dict(zip(store.column("sample_id").tolist(), store.column("loss").tolist(), strict=True))
    loss = np.array([loss_of[int(i)] for i in scores.sample_id], dtype=np.float64)
    return top_k(scores.sample_id, scores.score, scores.label, loss, k)
