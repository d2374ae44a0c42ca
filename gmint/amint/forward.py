"""One eval-mode pass of the audited model with its head over dataset rows: P(member), loss and correctness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gmint.amint.head import MintHead
from gmint.amint.taps import TapCollector
from gmint.data.base import ImageSet
from gmint.data.transforms import Transform


@dataclass(frozen=True)
class RowOutputs:
    """Per row: the head's P(member), the audited model's cross-entropy loss, and whether it was right."""

    rows: np.ndarray
    score: np.ndarray
    loss: np.ndarray
    correct: np.ndarray

    def take(self, rows: np.ndarray) -> RowOutputs:
        """The outputs of `rows` (each must be among this object's rows), in the order given."""
        where = {int(r): i for i, r in enumerate(self.rows)}
        idx = np.asarray([where[int(r)] for r in rows], dtype=np.int64)
        return RowOutputs(self.rows[idx], self.score[idx], self.loss[idx], self.correct[idx])


@torch.no_grad()
def forward_rows(model: nn.Module, head: MintHead, data: ImageSet, rows: np.ndarray, transform: Transform, *,
                 batch_size: int = 256, device: str = "cpu",
                 on_batch: Callable[[int], None] | None = None) -> RowOutputs:
    """Head scores and the model's losses on `rows` of `data`, model and head in eval mode (modes restored).

    Eval mode makes each row's score independent of its batch-mates (BatchNorm uses running statistics).
    """
    rows = np.asarray(rows, dtype=np.int64)
    modes = model.training, head.training
    model.eval()
    head.eval()
    collector = TapCollector(model, head.spec.taps)
    scores, losses, correct = [], [], []
    try:
        with collector.attached():
            for start in range(0, len(rows), batch_size):
                idx = rows[start:start + batch_size]
                x = transform(data.images[idx]).to(device)
                y = torch.from_numpy(data.labels[idx]).to(device)
                logits, taps = collector(model, x)
                scores.append(torch.sigmoid(head(taps).double()).cpu().numpy())
                losses.append(F.cross_entropy(logits.double(), y, reduction="none").cpu().numpy())
                correct.append((logits.argmax(1) == y).cpu().numpy())
                if on_batch:
                    on_batch(len(idx))
    finally:
        model.train(modes[0])
        head.train(modes[1])
    empty = np.zeros(0)
    return RowOutputs(rows, np.concatenate(scores) if scores else empty, np.concatenate(losses) if losses else empty,
                      np.concatenate(correct) if correct else empty.astype(bool))
