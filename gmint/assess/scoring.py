"""Auditing new samples: each candidate's MINT score, the external scores it is calibrated on, the set audit.

A data owner asks "were these samples used to train the audited model?". Each candidate gets a MINT score;
the set is tested (`gmint.assess.verdict`) against the calibration: the store's held-out external rows
(membership 0, role 1), which the MINT classifier was never fitted on. Rows it was fitted on score lower
than fresh externals (T learnt them as external), so calibrating on them would turn unseen samples into
false positives; they are refused.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gmint.assess.candidates import match_channels, model_input
from gmint.assess.verdict import SetVerdict, set_test
from gmint.data.base import ImageSet
from gmint.data.split import EXTERNAL, HOLDOUT
from gmint.data.transforms import Transform
from gmint.errors import InputError, StoreMismatchError
from gmint.features.extract import Rows, extract
from gmint.features.store import FeatureStore
from gmint.mint.base import TrainedMint
from gmint.models.io import AuditedModel

# The remedy named when every calibration row is also a candidate; callers with an option of their own
# for it (the CLI's --sample) put its name in this phrase's place.
SUBSET_HINT = "audit a subset of them"


@dataclass(frozen=True)
class SampleScores:
    """Per-sample membership probabilities of candidates (sample id and file of their dataset)."""

    dataset: str
    sample_id: np.ndarray
    file: np.ndarray
    label: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    def records(self) -> list[dict[str, object]]:
        """One {sample_id, file, score} per candidate: the rows of the scores file."""
        return [{"sample_id": int(i), "file": str(f), "score": float(s)}
                for i, f, s in zip(self.sample_id, self.file, self.score, strict=True)]


@dataclass(frozen=True)
class Calibration:
    """External scores the verdict is calibrated on: held-out external rows of a store, never fitted."""

    store: Path
    sample_id: np.ndarray
    score: np.ndarray
    excluded: int          # held-out external rows dropped because they are also candidates
    provenance: dict[str, object]


@dataclass(frozen=True)
class Audit:
    """Scores of the candidates, the calibration and the set-level verdict."""

    scores: SampleScores
    calibration: Calibration
    verdict: SetVerdict


@dataclass(frozen=True)
class _Extraction:
    """How candidates are extracted so that their features compare with the calibration store's."""

    transform: Transform
    layers: str
    reduction: str
    source: str
    engine: str
    loss: str
    seed: int


def calibration_scores(mint: TrainedMint, store_path: Path, *, exclude: np.ndarray | None = None) -> Calibration:
    """MINT scores of a complete store's held-out external rows (membership 0, role 1).

    Args:
        mint: the MINT classifier.
        store_path: a complete store of its audited model.
        exclude: sample ids to leave out (the candidates, when they come from the store's dataset): a
            sample cannot be compared with itself.

    Raises:
        StoreMismatchError: the store does not fit the classifier (other model, reduction, layers).
        InputError: no held-out external rows, or some of them were used to fit the classifier.
    """
    with FeatureStore.open(store_path) as store:
        store.require_complete()
        prov = store.provenance
        mint.spec.check(prov, store.dims, str(store_path))
        rows = (store.column("membership") == EXTERNAL) & (store.column("role") == HOLDOUT)
        ids = store.column("sample_id")[rows]
        if not rows.any():
            raise InputError(f"{store_path} has no held-out external rows (membership 0, role 1) to calibrate "
                             "the verdict on")
        fitted = np.isin(ids, mint.fitted_ids)
        if fitted.any():
            raise InputError(f"{int(fitted.sum())} calibration rows of {store_path} were used to fit the MINT "
                             "classifier; the verdict needs external scores it has never been fitted on")
        keep = ~np.isin(ids, exclude) if exclude is not None else np.ones(len(ids), bool)
        if not keep.any():
            raise InputError(f"every held-out external row of {store_path} is a candidate, leaving nothing to "
                             f"calibrate on; {SUBSET_HINT}")
        features = store.features(mint.spec.layers, rows)[keep]
        labels = store.column("label")[rows][keep]
    return Calibration(Path(store_path), ids[keep], mint.predict_proba(features, labels).astype(np.float64),
                       int((~keep).sum()), prov)


def _extraction(audited: AuditedModel, mint: TrainedMint, like: Mapping[str, object] | None) -> _Extraction:
    """The calibration store's settings (else the audited model's transform and extract's defaults)."""
    like = like or {}
    recorded = like.get("transform") or audited.meta.get("transform")
    transform = Transform.from_dict(dict(recorded)) if isinstance(recorded, Mapping) else Transform()
    recorded_parameters, seed = like.get("parameters"), like.get("seed", 0)
    if mint.spec.source == "gradient":
        parameters = list(mint.spec.layers)  # exactly the classifier's layers, nothing more
    elif isinstance(recorded_parameters, list):
        parameters = [str(p) for p in recorded_parameters]
    else:
        raise InputError(f"a classifier on '{mint.spec.source}' features needs the calibration store to "
                         "know which layers to extract")
    return _Extraction(transform, ",".join(parameters), mint.spec.reduction, mint.spec.source,
                       str(like.get("engine", "vmap")), str(like.get("loss_function", "cross_entropy")),
                       seed if isinstance(seed, int) else 0)


def score_samples(audited: AuditedModel, mint: TrainedMint, data: ImageSet, index: np.ndarray | None = None, *,
                  like: Mapping[str, object] | None = None, out: Path | None = None, to_grey: bool = False,
                  batch_size: int = 128, device: str = "cpu", show_progress: bool = False) -> SampleScores:
    """MINT membership probabilities of rows `index` of `data` (all rows by default).

    The rows are extracted (membership and role unknown, -1) into the store `out`, or a temporary one,
    with the classifier's layers and reduction, and that store is checked against its feature spec.
    Images are brought to the audited model's input: resized by its recorded transform, channels matched
    by `match_channels`.

    Args:
        audited: the audited model the classifier was trained on.
        mint: the MINT classifier.
        data: the candidates' dataset.
        index: rows of `data` to score.
        like: provenance of the calibration store, whose transform, engine, loss and seed are reused.
        out: keep the candidates' feature store here (must not exist yet).
        to_grey: convert colour candidates to grey (luma) for a greyscale model.
        batch_size: candidates per extraction batch.
        device: where the audited model runs.
        show_progress: show a progress bar for the extraction.

    Raises:
        StoreMismatchError: the classifier was trained on another model's features.
        InputError: repeated rows, rows the classifier was fitted on, or images that cannot be matched.
    """
    if audited.fingerprint != mint.spec.model_fingerprint:
        raise StoreMismatchError("the MINT classifier was trained on features of another model "
                                 f"({mint.spec.model_fingerprint[:12]}), not this audited model "
                                 f"({audited.fingerprint[:12]})")
    index = np.arange(len(data)) if index is None else np.asarray(index, dtype=np.int64)
    if len(np.unique(index)) < len(index):
        raise InputError("a candidate row is listed more than once; each sample can count only once")
    if len(index) and (index.min() < 0 or index.max() >= len(data)):
        raise InputError(f"candidate row outside the {len(data)} rows of {data.name}")
    ids = data.sample_ids[index]
    if data.name == mint.spec.dataset:
        fitted = np.isin(ids, mint.fitted_ids)
        if fitted.any():
            raise InputError(f"{int(fitted.sum())} candidate rows were used to fit the MINT classifier; their "
                             "scores say nothing about membership (e.g. sample id "
                             f"{int(ids[np.flatnonzero(fitted)[0]])})")
    channels, side = model_input(audited)
    data = match_channels(data, channels, to_grey=to_grey)
    how = _extraction(audited, mint, like)
    transform = how.transform
    if transform.size is None and side is not None:
        transform = replace(transform, size=side)  # a no-op at the training size, a resize otherwise
    unknown = np.full(len(index), -1, dtype=np.int8)
    with tempfile.TemporaryDirectory(prefix="gmint-score-") as tmp:
        path = Path(out) if out is not None else Path(tmp) / "candidates.h5"
        if path.exists():
            raise InputError(f"{path} exists; write the candidates' features to a new file")
        extract(audited, data, Rows(index, unknown, unknown), out=path, transform=transform, layers=how.layers,
                reduction=how.reduction, source=how.source, engine=how.engine, loss=how.loss, seed=how.seed,
                batch_size=batch_size, device=device, show_progress=show_progress)
        with FeatureStore.open(path) as store:
            # Candidates may come from any source (a folder, another dataset): only the dataset name is
            # allowed to differ from what the classifier was trained on.
            mint.spec.check({**store.provenance, "dataset": mint.spec.dataset}, store.dims, str(path))
            features = store.features(mint.spec.layers)
    if not np.isfinite(features).all():
        raise InputError("the candidates' Weight Modifiers contain NaN or Inf")
    files = data.files[index] if data.files is not None else np.full(len(index), "")
    return SampleScores(data.name, ids, files, data.labels[index],
                        mint.predict_proba(features, data.labels[index]).astype(np.float64))


def audit_set(audited: AuditedModel, mint: TrainedMint, data: ImageSet, index: np.ndarray | None = None, *,
              calibration: Path, out: Path | None = None, alternative: str = "greater", to_grey: bool = False,
              batch_size: int = 128, device: str = "cpu", show_progress: bool = False) -> Audit:
    """Score candidates and test them as a set against the held-out external rows of `calibration`.

    The calibration is read (and checked) first, so a wrong store fails before any extraction. Candidates
    drawn from the calibration store's own dataset are left out of the calibration.

    Args:
        audited: the audited model the classifier was trained on.
        mint: the MINT classifier.
        data: the candidates' dataset.
        index: rows of `data` to audit (all by default).
        calibration: a complete store of the audited model with held-out external rows.
        out: keep the candidates' feature store here (must not exist yet).
        alternative: the set test's alternative (see `set_test`).
        to_grey: convert colour candidates to grey (luma) for a greyscale model.
        batch_size: candidates per extraction batch.
        device: where the audited model runs.
        show_progress: show a progress bar for the extraction.

    Raises:
        InputError: a row of `index` is outside `data` (a negative one would otherwise count from the end).
    """
    index = np.arange(len(data)) if index is None else np.asarray(index, dtype=np.int64)
    if len(index) and (index.min() < 0 or index.max() >= len(data)):
        bad = int(index[(index < 0) | (index >= len(data))][0])
        raise InputError(f"row {bad} is outside the {len(data)} rows of {data.name} (0 to {len(data) - 1})")
    same = data.name == mint.spec.dataset
    cal = calibration_scores(mint, calibration, exclude=data.sample_ids[index] if same else None)
    scores = score_samples(audited, mint, data, index, like=cal.provenance, out=out, to_grey=to_grey,
                           batch_size=batch_size, device=device, show_progress=show_progress)
    return Audit(scores, cal, set_test(scores.score, cal.score, alternative=alternative))


def write_scores(audit: Audit, path: Path, *, alpha: float = 0.05) -> Path:
    """Per-sample scores as CSV (sample_id, file, score), or as JSON with the verdict for a `.json` path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        payload = {"verdict": audit.verdict.to_dict(alpha), "calibration_store": str(audit.calibration.store),
                   "dataset": audit.scores.dataset, "scores": audit.scores.records()}
        path.write_text(json.dumps(payload, indent=2))
        return path
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sample_id", "file", "score"])
        writer.writeheader()
        writer.writerows(audit.scores.records())
    return path
