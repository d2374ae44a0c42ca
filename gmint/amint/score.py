"""Auditing new samples with an aMINT head: each candidate's P(member) and the set-level verdict.

The verdict is the same one-sided Mann–Whitney U test as `gmint score`'s (`gmint.assess.verdict`), calibrated on
the head's stored scores of held-out external rows (never fitted). Candidates the head was fitted on are
refused: the head learnt their labels, so their scores say nothing about membership.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from gmint.amint.forward import forward_rows
from gmint.amint.head import TrainedHead
from gmint.assess.candidates import match_channels, model_input
from gmint.assess.scoring import Audit, Calibration, SampleScores
from gmint.assess.verdict import set_test
from gmint.data.base import ImageSet
from gmint.errors import InputError, Remedy, StoreMismatchError
from gmint.features.provenance import Provenance
from gmint.models.io import AuditedModel


def audit_with_head(audited: AuditedModel, head: TrainedHead, data: ImageSet, index: np.ndarray | None = None, *,
                    head_path: Path, alternative: str = "greater", to_grey: bool = False, batch_size: int = 256,
                    device: str = "cpu") -> Audit:
    """Score candidates with the head and test them as a set against its held-out external calibration.

    Args:
        audited: the audited model the head was trained with.
        head: the aMINT head.
        data: the candidates' dataset.
        index: rows of `data` to audit (all by default).
        head_path: the head's file, named in the result as the calibration's source.
        alternative: the set test's alternative (see `gmint.assess.verdict.set_test`).
        to_grey: convert colour candidates to grey (luma) for a greyscale model.
        batch_size: candidates per forward pass.
        device: where the model runs.

    Raises:
        StoreMismatchError: the head was trained with another model.
        InputError: rows outside `data`, repeated rows, rows the head was fitted on, or no calibration left.
    """
    if audited.fingerprint != head.model_fingerprint:
        raise StoreMismatchError(f"the aMINT head was trained with another model ({head.model_fingerprint[:12]}), "
                                 f"not this audited model ({audited.fingerprint[:12]})")
    index = np.arange(len(data)) if index is None else np.asarray(index, dtype=np.int64)
    if len(index) and (index.min() < 0 or index.max() >= len(data)):
        bad = int(index[(index < 0) | (index >= len(data))][0])
        raise InputError(f"row {bad} is outside the {len(data)} rows of {data.name} (0 to {len(data) - 1})")
    if len(np.unique(index)) < len(index):
        raise InputError("a candidate row is listed more than once; each sample can count only once")
    ids = data.sample_ids[index]
    same = data.name == head.meta.get("dataset")
    if same:
        fitted = np.isin(ids, head.fitted_ids)
        if fitted.any():
            raise InputError(f"{int(fitted.sum())} candidate rows were used to train the aMINT head; their scores "
                             f"say nothing about membership (e.g. sample id {int(ids[np.flatnonzero(fitted)[0]])})")
    keep = ~np.isin(head.calibration_ids, ids) if same else np.ones(len(head.calibration_ids), bool)
    if not keep.any():
        raise InputError(f"every calibration row of {head_path} is a candidate, leaving nothing to calibrate on",
                         Remedy.SUBSET)
    channels, side = model_input(audited)
    data = match_channels(data, channels, to_grey=to_grey)
    transform = audited.transform
    if side is not None and transform.size is None:
        transform = replace(transform, size=side)  # a no-op at the training size, a resize otherwise
    outputs = forward_rows(audited.module, head.module, data, index, transform, batch_size=batch_size,
                           device=device)
    files = data.files[index] if data.files is not None else np.full(len(index), "")
    scores = SampleScores(data.name, ids, files, data.labels[index], outputs.score)
    calibration = Calibration(Path(head_path), head.calibration_ids[keep], head.calibration_scores[keep],
                              int((~keep).sum()), Provenance.read(head.meta))
    return Audit(scores, calibration, set_test(scores.score, calibration.score, alternative=alternative))
