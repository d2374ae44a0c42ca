"""The ROC figure every report draws: each signal compared on the same held-out rows, read as a person reads it.

Every curve carries its AUC in the legend, the chance line is drawn, and the log-scale panel's false-positive
axis starts where the held-out externals resolve it (one external wrongly called a member is 1/N): below that
the curve is a step artefact of too few negatives, not a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from gmint.assess.metrics import auc
from gmint.errors import InputError
from gmint.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class RocCurve:
    """One signal's held-out scores: its name, each row's membership (1 member, 0 external) and its score."""

    label: str
    membership: np.ndarray
    score: np.ndarray

    @property
    def auc(self) -> float:
        """The curve's area under the ROC."""
        return auc(self.membership, self.score)


def roc_figure(curves: Sequence[RocCurve], path: Path, *, title: str = "") -> Path:
    """Draw `curves` side by side on linear and log axes into the PNG `path`.

    Raises:
        InputError: no curve, or a curve without members or without externals.
    """
    from sklearn.metrics import roc_curve

    if not curves:
        raise InputError("a ROC figure needs at least one signal")
    negatives = min(int(np.sum(c.membership == 0)) for c in curves)
    if negatives == 0 or any(int(np.sum(c.membership == 1)) == 0 for c in curves):
        raise InputError("a ROC curve needs held-out members and externals")
    floor = 1.0 / negatives
    fig, (linear, log) = pyplot().subplots(1, 2, figsize=(9.5, 4.4))
    for curve in curves:
        fpr, tpr, _ = roc_curve(curve.membership, curve.score)
        label = f"{curve.label} (AUC {curve.auc:.3f})"
        linear.plot(fpr, tpr, label=label)
        log.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=label)
    for ax in (linear, log):
        ax.plot([floor, 1], [floor, 1], "--", color="grey", label="chance")
        ax.set_xlabel("false-positive rate (externals called members)")
        ax.set_ylabel("true-positive rate (members found)")
    linear.set_title("ROC")
    log.set_xscale("log")
    log.set_yscale("log")
    log.set_xlim(floor, 1)
    log.set_ylim(floor, 1)
    log.set_title(f"log axes, down to 1/{negatives} held-out externals")
    linear.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


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
