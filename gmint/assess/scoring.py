"""Auditing new samples: each candidate's MINT score, the external scores it is calibrated on, the set audit.

A data owner asks "were these samples used to train the audited model?". Each candidate gets a MINT score;
the set is tested (`gmint.assess.verdict`) against the calibration: the store's held-out external rows
(membership 0, role 1), which the MINT classifier was never fitted on. Rows it was fitted on score lower
than fresh externals (T learnt them as external), so calibrating on them would turn unseen samples into
false positives; they are refused.

Whether a candidate *is* one of those rows is decided by identity, never by position (see
`gmint.assess.origin`).

Candidates are extracted exactly like the calibration store: its recorded settings are read back
(`ExtractSettings.recorded`), with the classifier's parameters, reduction and source.

A candidate without a true class may be scored under the audited model's own prediction (the `predicted`
label source). Its Weight Modifier is then that of a correctly classified sample, so the calibration keeps
only held-out rows the model classifies correctly (whose stored Weight Modifiers are the same under either
label), and every output says that the labels were predicted.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gmint.assess.candidates import (
    LABEL_SOURCES,
    UNLABELLED,
    check_labels,
    label_candidates,
    match_channels,
    model_classes,
    model_input,
)
from gmint.assess.origin import DataOrigin, same_dataset, same_items
from gmint.assess.verdict import SetVerdict, set_test
from gmint.data.base import ImageSet
from gmint.data.split import EXTERNAL, HOLDOUT
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy, StoreMismatchError
from gmint.features.extract import Rows, extract
from gmint.features.provenance import Provenance
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.mint.base import TrainedMint
from gmint.models.io import AuditedModel

# The columns of a scores CSV, one row per candidate (`SampleScores.records`).
SCORE_COLUMNS = ("sample_id", "file", "label", "class", "label_source", "score")


@dataclass(frozen=True)
class SampleScores:
    """Per-sample membership probabilities of candidates, with the label each was scored under.

    Attributes:
        dataset: the candidates' source (a dataset's name, or a candidate folder's).
        sample_id: (N,) their row ids in that source.
        file: (N,) their files, relative to the source's folder ("" where rows have none).
        label: (N,) the class each Weight Modifier was computed under (the audited model's index).
        score: (N,) P(member).
        classes: class names of `label` (empty where unknown).
        predicted: (N,) bool: the label is the audited model's prediction, not a true class (None: none is).
        label_source: the label source they were scored under (a name in LABEL_SOURCES).
    """

    dataset: str
    sample_id: np.ndarray
    file: np.ndarray
    label: np.ndarray
    score: np.ndarray
    classes: tuple[str, ...] = ()
    predicted: np.ndarray | None = None
    label_source: str = "true"

    def __len__(self) -> int:
        return len(self.score)

    @property
    def n_predicted(self) -> int:
        """How many candidates were scored under the model's prediction instead of a true class."""
        return int(self.predicted.sum()) if self.predicted is not None else 0

    def records(self) -> list[dict[str, object]]:
        """One {sample_id, file, label, class, label_source, score} per candidate: the rows of the scores file.
        `label_source` is `predicted` where the label is the audited model's prediction, else `true`."""
        predicted = self.predicted if self.predicted is not None else np.zeros(len(self), bool)
        return [{"sample_id": int(i), "file": str(f), "label": int(y),
                 "class": self.classes[y] if 0 <= y < len(self.classes) else str(y),
                 "label_source": "predicted" if p else "true", "score": float(s)}
                for i, f, y, p, s in zip(self.sample_id, self.file, self.label.tolist(), predicted, self.score,
                                         strict=True)]


@dataclass(frozen=True)
class Calibration:
    """External scores the verdict is calibrated on: held-out external rows of a store, never fitted."""

    store: Path
    sample_id: np.ndarray
    score: np.ndarray
    excluded: int          # held-out external rows dropped because they are also candidates
    provenance: Provenance
    misclassified: int = 0  # held-out external rows dropped because the model misclassifies them (predicted labels)


@dataclass(frozen=True)
class Audit:
    """Scores of the candidates, the calibration and the set-level verdict."""

    scores: SampleScores
    calibration: Calibration
    verdict: SetVerdict

    def labels_note(self) -> str:
        """What every reading of the verdict must say when labels were predicted ("" when none were)."""
        n = self.scores.n_predicted
        if not n:
            return ""
        return (f"Labels: {n} of the {len(self.scores)} candidates were scored under the audited model's own "
                "predicted class, not a true class; the calibration keeps only the held-out external samples the "
                f"model classifies correctly ({self.calibration.misclassified} misclassified left out), so the "
                "false-positive rate is not guaranteed to be α.")

    def conclusion(self, alpha: float = 0.05) -> str:
        """The verdict in plain language, with the labels note where labels were predicted."""
        return " ".join(part for part in (self.verdict.conclusion(alpha), self.labels_note()) if part)

    def verdict_dict(self, alpha: float = 0.05) -> dict[str, object]:
        """The verdict's JSON form at level α, its conclusion with the labels note, and the label source."""
        return {**self.verdict.to_dict(alpha), "conclusion": self.conclusion(alpha),
                "label_source": self.scores.label_source, "predicted_labels": self.scores.n_predicted}


def _describe(data: ImageSet, row: int) -> str:
    """A candidate as messages name it: its file where it has one, else its sample id."""
    if data.files is not None and data.files[row]:
        return str(data.files[row])
    return f"sample id {int(data.sample_ids[row])}"


# ---------------------------------------------------------------------------------------------------------
# Calibration, scores, the set audit


def _calibration_store(mint: TrainedMint, store_path: Path) -> Provenance:
    """The provenance of a complete store that fits the classifier (else StoreMismatchError)."""
    with FeatureStore.open(store_path) as store:
        store.require_complete()
        provenance = Provenance.read(store.provenance)
        mint.spec.check(provenance, store.dims, str(store_path))
        return provenance


def calibration_scores(mint: TrainedMint, store_path: Path, *, exclude: np.ndarray | None = None,
                       predicted: bool = False) -> Calibration:
    """MINT scores of a complete store's held-out external rows (membership 0, role 1).

    Args:
        mint: the MINT classifier.
        store_path: a complete store of its audited model.
        exclude: sample ids of the store's rows to leave out (the candidates that are rows of it, see
            `same_items`): a sample cannot be compared with itself.
        predicted: candidates are scored under the model's predictions: keep only the rows the model
            classifies correctly, whose Weight Modifiers (computed under the true class) are what they would be
            under its prediction.

    Raises:
        StoreMismatchError: the store does not fit the classifier (other model, reduction, layers).
        InputError: no held-out external rows, some of them used to fit the classifier, or the store's rows
            cannot be told from the classifier's (see `same_dataset`).
    """
    prov = _calibration_store(mint, store_path)
    with FeatureStore.open(store_path) as store:
        rows = (store.column("membership") == EXTERNAL) & (store.column("role") == HOLDOUT)
        ids = store.column("sample_id")[rows]
        if not rows.any():
            raise InputError(f"{store_path} has no held-out external rows (membership 0, role 1) to calibrate "
                             "the verdict on")
        fitted_on = DataOrigin.of_classifier(mint)
        if not same_dataset(fitted_on, DataOrigin.of_store(prov, store_path)):
            raise InputError(f"{store_path} was read from {prov.dataset_root}, the MINT classifier was fitted "
                             f"on rows read from {fitted_on.root}: its held-out rows cannot be checked against those "
                             "it was fitted on; calibrate on a store of the classifier's own dataset folder")
        fitted = np.isin(ids, mint.fitted_ids)
        if fitted.any():
            raise InputError(f"{int(fitted.sum())} calibration rows of {store_path} were used to fit the MINT "
                             "classifier; the verdict needs external scores it has never been fitted on")
        candidate = np.isin(ids, exclude) if exclude is not None else np.zeros(len(ids), bool)
        correct = store.column("pred")[rows] == store.column("label")[rows] if predicted else np.ones(len(ids), bool)
        keep = ~candidate & correct
        if not (~candidate).any():
            raise InputError(f"every held-out external row of {store_path} is a candidate, leaving nothing to "
                             "calibrate on", Remedy.SUBSET)
        if not keep.any():
            raise InputError(f"the audited model misclassifies every held-out external row of {store_path} left to "
                             "calibrate predicted labels on")
        features = mint.inputs(store, rows)[keep]
        labels = store.column("label")[rows][keep]
    return Calibration(Path(store_path), ids[keep], mint.predict_proba(features, labels).astype(np.float64),
                       int(candidate.sum()), prov, int((~candidate & ~correct).sum()))


def candidate_settings(audited: AuditedModel, mint: TrainedMint, like: Provenance | None, *,
                       side: int | None = None, batch_size: int = 128, device: str = "cpu") -> ExtractSettings:
    """How candidates are extracted: as the calibration store `like` records (else with the audited model's
    transform and the recorded defaults), over the classifier's parameters, with its reduction and source.

    A transform without a size is given the model's input `side`: a no-op at the training size, a resize otherwise.

    Raises:
        InputError: a classifier on features other than Weight Modifiers, and no recorded parameters to read.
    """
    settings = ExtractSettings.recorded(like or Provenance(), batch_size=batch_size, device=device)
    transform = settings.transform
    if transform is None:
        description = audited.record.description
        transform = description.transform if description is not None else Transform()
    if transform.size is None and side is not None:
        transform = replace(transform, size=side)
    if mint.spec.source == "gradient":
        parameters = tuple(mint.spec.layers)  # exactly the classifier's layers, nothing more
    elif not isinstance(settings.layer_setup, str):  # the recorded parameter names
        parameters = settings.layer_setup
    else:
        raise InputError(f"a classifier on '{mint.spec.source}' features needs the calibration store to "
                         "know which layers to extract")
    return replace(settings, layer_setup=parameters, reduction=mint.spec.reduction, source=mint.spec.source,
                   transform=transform)


def score_samples(audited: AuditedModel, mint: TrainedMint, data: ImageSet, index: np.ndarray | None = None, *,
                  like: Provenance | None = None, out: Path | None = None, to_grey: bool = False,
                  labels: str = "true", batch_size: int = 128, device: str = "cpu",
                  show_progress: bool = False) -> SampleScores:
    """MINT membership probabilities of rows `index` of `data` (all rows by default).

    The rows are extracted (membership and role unknown, -1) into the store `out`, or a temporary one,
    with the classifier's layers and reduction, and that store is checked against its feature spec.
    Images are brought to the audited model's input: resized by its recorded transform, channels matched
    by `match_channels`. Each is scored under its true class, or, under the `predicted` label source where it
    has none, under the audited model's prediction (`label_candidates`).

    Args:
        audited: the audited model the classifier was trained on.
        mint: the MINT classifier.
        data: the candidates' dataset.
        index: rows of `data` to score.
        like: provenance of the calibration store, whose transform, engine, loss and seed are reused.
        out: keep the candidates' feature store here (must not exist yet).
        to_grey: convert colour candidates to grey (luma) for a greyscale model.
        labels: a name in LABEL_SOURCES: what labels candidates without a true class.
        batch_size: candidates per extraction batch.
        device: where the audited model runs.
        show_progress: show a progress bar for the extraction.

    Raises:
        StoreMismatchError: the classifier was trained on another model's features.
        InputError: repeated rows, rows the classifier was fitted on (see `same_items`), candidates without a
            class under `true` labels, or images that cannot be matched.
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
    check_labels(data, index, labels)
    channels, side = model_input(audited)
    _refuse_fitted(mint, data, index, side)
    data = match_channels(data, channels, to_grey=to_grey)
    settings = candidate_settings(audited, mint, like, side=side, batch_size=batch_size, device=device)
    transform = settings.transform or audited.transform  # candidate_settings always names one
    chosen = label_candidates(audited, data, index, transform, labels=labels, batch_size=batch_size, device=device)
    # The candidates alone, each under the label it is scored with (ids, files and folder kept).
    scored = replace(data.take(index), labels=chosen.label, classes=_classes(audited, data, chosen.label))
    unknown = np.full(len(index), -1, dtype=np.int8)
    with tempfile.TemporaryDirectory(prefix="gmint-score-") as tmp:
        path = Path(out) if out is not None else Path(tmp) / "candidates.h5"
        if path.exists():
            raise InputError(f"{path} exists; write the candidates' features to a new file")
        extract(audited, scored, Rows(np.arange(len(index)), unknown, unknown), settings, out=path,
                show_progress=show_progress)
        with FeatureStore.open(path) as store:
            # Candidates may come from any source (a folder, another dataset): only the dataset name is
            # allowed to differ from what the classifier was trained on.
            mint.spec.check(replace(Provenance.read(store.provenance), dataset=mint.spec.dataset), store.dims,
                            str(path))
            features = mint.inputs(store, np.ones(len(store), bool))
    if not np.isfinite(features).all():
        raise InputError("the candidates' Weight Modifiers contain NaN or Inf")
    files = scored.files if scored.files is not None else np.full(len(index), "")
    return SampleScores(data.name, scored.sample_ids, files, scored.labels,
                        mint.predict_proba(features, scored.labels).astype(np.float64), scored.classes,
                        chosen.predicted, LABEL_SOURCES.get(labels).name)


def _refuse_fitted(mint: TrainedMint, data: ImageSet, index: np.ndarray, side: int | None) -> None:
    """Refuse candidates that are rows the classifier was fitted on (`same_items`): their scores say nothing."""
    rows = same_items(data, index, DataOrigin.of_classifier(mint), side=side)
    fitted = (rows >= 0) & np.isin(rows, mint.fitted_ids)
    if fitted.any():
        raise InputError(f"{int(fitted.sum())} candidates were used to fit the MINT classifier; their scores say "
                         f"nothing about membership (e.g. {_describe(data, int(index[np.flatnonzero(fitted)[0]]))})")


def _classes(audited: AuditedModel, data: ImageSet, labels: np.ndarray) -> tuple[str, ...]:
    """Class names of the labels candidates are scored under: their own set's (without UNLABELLED, which no
    scored candidate keeps), else, where predictions go beyond them, the audited model's."""
    own = tuple(c for c in data.classes if c != UNLABELLED)
    if len(labels) and int(labels.max()) < len(own):
        return own
    named = model_classes(audited)
    return tuple(named) if named is not None else tuple(str(i) for i in range(int(labels.max(initial=0)) + 1))


def audit_set(audited: AuditedModel, mint: TrainedMint, data: ImageSet, index: np.ndarray | None = None, *,
              calibration: Path, out: Path | None = None, alternative: str = "greater", to_grey: bool = False,
              labels: str = "true", batch_size: int = 128, device: str = "cpu",
              show_progress: bool = False) -> Audit:
    """Score candidates and test them as a set against the held-out external rows of `calibration`.

    The calibration is read (and checked) first, so a wrong store fails before any extraction. Candidates
    that are rows of the calibration store (the same rows of its dataset, or the same files: `same_items`)
    are left out of the calibration; when any candidate is labelled by the model's prediction, so are the
    rows the model misclassifies (see `calibration_scores`).

    Args:
        audited: the audited model the classifier was trained on.
        mint: the MINT classifier.
        data: the candidates' dataset.
        index: rows of `data` to audit (all by default).
        calibration: a complete store of the audited model with held-out external rows.
        out: keep the candidates' feature store here (must not exist yet).
        alternative: the set test's alternative (see `set_test`).
        to_grey: convert colour candidates to grey (luma) for a greyscale model.
        labels: a name in LABEL_SOURCES: what labels candidates without a true class.
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
    predicted = check_labels(data, index, labels)
    provenance = _calibration_store(mint, calibration)
    side = model_input(audited)[1]
    _refuse_fitted(mint, data, index, side)  # before the calibration: a fitted candidate is the first problem
    rows = same_items(data, index, DataOrigin.of_store(provenance, calibration), side=side)
    cal = calibration_scores(mint, calibration, exclude=rows[rows >= 0], predicted=bool(predicted.any()))
    scores = score_samples(audited, mint, data, index, like=cal.provenance, out=out, to_grey=to_grey, labels=labels,
                           batch_size=batch_size, device=device, show_progress=show_progress)
    return Audit(scores, cal, set_test(scores.score, cal.score, alternative=alternative))


def write_scores(audit: Audit, path: Path, *, alpha: float = 0.05) -> Path:
    """Per-sample scores as CSV (sample_id, file, label, class, label_source, score), or as JSON with the verdict
    for a `.json` path. `label_source` says, per candidate, whether its label is a true class or the audited
    model's prediction."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = audit.scores.records()
    if path.suffix.lower() == ".json":
        payload = {"verdict": audit.verdict_dict(alpha), "calibration_store": str(audit.calibration.store),
                   "dataset": audit.scores.dataset, "label_source": audit.scores.label_source, "scores": records}
        path.write_text(json.dumps(payload, indent=2))
        return path
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(SCORE_COLUMNS))
        writer.writeheader()
        writer.writerows(records)
    return path
