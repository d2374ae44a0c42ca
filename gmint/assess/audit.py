"""Auditing new samples: per-sample membership scores and a set-level verdict with a p-value.

A data owner asks "were these samples used to train the audited model?". Each candidate gets a MINT
score; the set gets a hypothesis test of H0 "the candidates were not in training", i.e. their scores are
exchangeable with the scores of external samples the audited model never saw. The external reference is
the calibration: the store's held-out external rows (membership 0, role 1), which the MINT classifier was
never fitted on. Rows it was fitted on score lower than fresh externals (T learnt them as external), so
calibrating on them would turn unseen samples into false positives; they are refused.

The test is the one-sided Mann–Whitney U test: rank-based, so it needs no model of the score distribution
and its false-positive rate is at most α whenever H0 holds. `false_positive_rate` and `power` measure that
on sets drawn from scores of known membership.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

from gmint.data.base import ImageSet
from gmint.data.split import EXTERNAL, HOLDOUT, MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, StoreMismatchError
from gmint.features.extract import Rows, extract
from gmint.features.layers import weight_layers
from gmint.features.store import FeatureStore
from gmint.mint.base import TrainedMint
from gmint.models.io import AuditedModel

ALTERNATIVES = {"greater": "candidates > external", "less": "candidates < external",
                "two-sided": "candidates ≠ external"}
# Exact null distribution of U (valid without ties) while it is cheap: n·m up to this many cells.
EXACT_MAX_CELLS = 10_000
# With ties the exact distribution does not apply; for small samples a permutation test replaces the
# normal approximation (whose tie correction is accurate only once both samples are moderately large).
PERMUTATION_MAX_SMALLER, PERMUTATION_MAX_TOTAL, PERMUTATION_RESAMPLES = 8, 500, 9_999
# ITU-R 601-2 luma, the weights PIL uses for mode "L".
LUMA = np.array([0.299, 0.587, 0.114])


# ---------------------------------------------------------------------------------------------------------
# The set-level test


@dataclass(frozen=True)
class SetVerdict:
    """Outcome of the set test: candidates' MINT scores against the external calibration scores.

    `statistic` is U of the candidates: the number of (candidate, calibration) pairs where the candidate
    scores higher, ties counting one half.
    """

    test: str
    alternative: str
    statistic: float
    p_value: float
    n_candidates: int
    n_calibration: int
    mean_candidate: float
    mean_calibration: float

    @property
    def effect(self) -> float:
        """U / (n·m): the probability that a candidate outscores an external sample (0.5 under H0)."""
        return self.statistic / (self.n_candidates * self.n_calibration)

    def rejects(self, alpha: float = 0.05) -> bool:
        """Whether H0 ("not in training") is rejected at level α (p ≤ α)."""
        if not 0.0 < alpha < 1.0:
            raise InputError(f"alpha must be in (0, 1), got {alpha}")
        return self.p_value <= alpha

    def conclusion(self, alpha: float = 0.05) -> str:
        """The verdict in plain language; a non-rejection is never read as proof of non-membership."""
        if self.rejects(alpha):
            return (f"Evidence that these samples were used in training the audited model (p = "
                    f"{self.p_value:.3g} ≤ α = {alpha}).")
        return (f"No evidence that these samples were used in training (p = {self.p_value:.3g} > α = {alpha}); "
                "this is not proof of absence: a model that generalises well leaves little trace of its data.")

    def as_dict(self, alpha: float = 0.05) -> dict[str, object]:
        return {"test": self.test, "alternative": self.alternative, "statistic": self.statistic,
                "p_value": self.p_value, "alpha": alpha, "rejects_h0": self.rejects(alpha),
                "n_candidates": self.n_candidates, "n_calibration": self.n_calibration,
                "mean_candidate": self.mean_candidate, "mean_calibration": self.mean_calibration,
                "effect": self.effect, "conclusion": self.conclusion(alpha)}


def _scores(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise InputError(f"{what} must be a non-empty 1-D array of scores, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{what} contain NaN or Inf")
    return x


def set_test(candidate_scores: Sequence[float] | np.ndarray, external_scores: Sequence[float] | np.ndarray, *,
             alternative: str = "greater", seed: int = 0) -> SetVerdict:
    """Mann–Whitney U test of H0 "candidate scores are exchangeable with external scores".

    The p-value is exact where that is cheap and there are no ties, a permutation p-value for small
    samples with ties (seeded, so a verdict is reproducible), and otherwise the normal approximation with
    tie and continuity correction; `SetVerdict.test` names the one used.

    Args:
        candidate_scores: MINT scores of the samples under audit.
        external_scores: MINT scores of external samples the audited model never saw and the MINT
            classifier was never fitted on (the calibration).
        alternative: `greater` (members score higher: the audit's question), `less` or `two-sided`.
        seed: seeds the permutation p-value.
    """
    if alternative not in ALTERNATIVES:
        raise InputError(f"unknown alternative '{alternative}'; choose from {list(ALTERNATIVES)}")
    x = _scores(candidate_scores, "candidate scores")
    y = _scores(external_scores, "calibration scores")
    n, m = len(x), len(y)
    sides = "one-sided" if alternative != "two-sided" else "two-sided"
    if n == 1:  # one candidate: its rank among m + 1 exchangeable scores is uniform under H0
        above, below = int((y >= x[0]).sum()), int((y <= x[0]).sum())
        p_greater, p_less = (1 + above) / (m + 1), (1 + below) / (m + 1)
        p = {"greater": p_greater, "less": p_less, "two-sided": min(1.0, 2 * min(p_greater, p_less))}[alternative]
        u = float((y < x[0]).sum() + 0.5 * (y == x[0]).sum())
        return SetVerdict(
            test=f"Mann-Whitney U, {sides} ({ALTERNATIVES[alternative]} calibration), exact rank p-value "
                 "(one candidate; ties counted against rejection)",
            alternative=alternative, statistic=u, p_value=float(p), n_candidates=1, n_calibration=m,
            mean_candidate=float(x[0]), mean_calibration=float(y.mean()))
    ties = len(np.unique(np.concatenate([x, y]))) < n + m
    method: str | stats.PermutationMethod
    if not ties and n * m <= EXACT_MAX_CELLS:
        method, how = "exact", "exact"
    elif ties and min(n, m) <= PERMUTATION_MAX_SMALLER and n + m <= PERMUTATION_MAX_TOTAL:
        method = stats.PermutationMethod(n_resamples=PERMUTATION_RESAMPLES, rng=seed)
        how = "permutation p-value (small samples with ties)"
    else:
        method, how = "asymptotic", "normal approximation, tie- and continuity-corrected"
    result = stats.mannwhitneyu(x, y, alternative=alternative, method=method)
    return SetVerdict(
        test=f"Mann-Whitney U, {sides} ({ALTERNATIVES[alternative]} calibration), {how}",
        alternative=alternative, statistic=float(result.statistic), p_value=float(result.pvalue),
        n_candidates=n, n_calibration=m, mean_candidate=float(x.mean()), mean_calibration=float(y.mean()))


# ---------------------------------------------------------------------------------------------------------
# Calibration of the test: how often it rejects on sets of known membership


def _rejection_rate(draws: Sequence[tuple[np.ndarray, np.ndarray]], alpha: float) -> float:
    return float(np.mean([set_test(c, e).rejects(alpha) for c, e in draws]))


def _check_sets(pool: np.ndarray, set_size: int, n_sets: int, what: str) -> None:
    if not 0 < set_size <= len(pool):
        raise InputError(f"set size {set_size} must be between 1 and the {len(pool)} {what} scores")
    if n_sets < 1:
        raise InputError(f"n_sets must be positive, got {n_sets}")


def false_positive_rate(external_scores: Sequence[float] | np.ndarray,
                        calibration_scores: Sequence[float] | np.ndarray, set_size: int = 50, n_sets: int = 1000,
                        alpha: float = 0.05, seed: int = 0, *, resplit: bool = False) -> float:
    """Fraction of external-only candidate sets on which `set_test` rejects H0 (should be ≤ α).

    Each set draws `set_size` scores without replacement from `external_scores` (external samples the
    audited model never saw, disjoint from the calibration) and is tested against `calibration_scores`.

    With `resplit=False` the calibration stays fixed: the rate an audit with *this* calibration set makes.
    It varies around α with the calibration sample itself (by ±0.02-0.03 for a few hundred rows), since the
    test's guarantee holds on average over calibration draws. With `resplit=True` every set re-partitions
    the external and calibration scores together at random into a candidate set and a calibration set of
    the original size, so the rate estimates that average; comparing the two shows whether the calibration
    rows differ from other externals (e.g. rows the classifier was fitted on).
    """
    ext = _scores(external_scores, "external scores")
    cal = _scores(calibration_scores, "calibration scores")
    _check_sets(ext, set_size, n_sets, "external")
    rng = np.random.default_rng(seed)
    if not resplit:
        return _rejection_rate([(rng.choice(ext, set_size, replace=False), cal) for _ in range(n_sets)], alpha)
    pooled = np.concatenate([ext, cal])
    draws = []
    for _ in range(n_sets):
        order = rng.permutation(len(pooled))
        draws.append((pooled[order[:set_size]], pooled[order[set_size:set_size + len(cal)]]))
    return _rejection_rate(draws, alpha)


def power(member_scores: Sequence[float] | np.ndarray, calibration_scores: Sequence[float] | np.ndarray,
          set_size: int = 50, n_sets: int = 1000, alpha: float = 0.05, seed: int = 0) -> float:
    """Fraction of member-only candidate sets (drawn without replacement from `member_scores`, which must
    be held out from the classifier's fit) on which `set_test` rejects H0 against the calibration."""
    members = _scores(member_scores, "member scores")
    cal = _scores(calibration_scores, "calibration scores")
    _check_sets(members, set_size, n_sets, "member")
    rng = np.random.default_rng(seed)
    return _rejection_rate([(rng.choice(members, set_size, replace=False), cal) for _ in range(n_sets)], alpha)


# ---------------------------------------------------------------------------------------------------------
# Candidate images as the audited model expects them


def model_input(audited: AuditedModel) -> tuple[int | None, int | None]:
    """(channels, side) of the audited model's input: from its gmint metadata, else the channels of a
    first convolution; None where unknown."""
    args = audited.meta.get("arch_args")
    if isinstance(args, Mapping) and "in_channels" in args and "image_size" in args:
        return int(args["in_channels"]), int(args["image_size"])
    names = weight_layers(audited.module)
    weight = dict(audited.module.named_parameters())[names[0]] if names else None
    return (int(weight.shape[1]) if weight is not None and weight.dim() == 4 else None), None


def model_classes(audited: AuditedModel) -> list[str] | None:
    """The audited model's class names (index = label), or `0..k-1` when only the count is recorded."""
    if isinstance(audited.meta.get("classes"), list):
        return [str(c) for c in audited.meta["classes"]]  # type: ignore[union-attr]
    if audited.meta.get("num_classes") is not None:
        return [str(c) for c in range(int(audited.meta["num_classes"]))]  # type: ignore[arg-type]
    return None


def load_image_folder(folder: Path, audited: AuditedModel) -> ImageSet:
    """Candidate images from `folder/<class name>/*`, labelled with the audited model's class indices.

    A Weight Modifier needs each image's true label, so images sit in folders named after the model's
    classes (any subset of them). Images of another size are resized to the model's input side (PIL
    bilinear, aspect not kept), as the imagefolder reader does; channels are matched in `score_samples`.
    """
    from gmint.data.readers import load_dataset  # reads image files: imported only when scoring a folder

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} not found")
    if not any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        raise InputError(f"{folder} has no class folders: put each image under {folder}/<class name>/ (the "
                         "label is needed to compute its Weight Modifier)")
    _, side = model_input(audited)
    data = load_dataset("imagefolder", folder, cache=False, size=side)
    return relabel(data, model_classes(audited))


def relabel(data: ImageSet, classes: Sequence[str] | None) -> ImageSet:
    """Map a folder's class names onto the audited model's labels (a folder may hold only some classes).

    Without recorded class names the folders must be named by class index (`0`, `1`, ...).
    """
    lookup = {name: i for i, name in enumerate(classes)} if classes is not None else None
    index: list[int] = []
    for name in data.classes:
        if lookup is not None and name in lookup:
            index.append(lookup[name])
        elif lookup is None and name.isdigit():
            index.append(int(name))
        else:
            known = ", ".join(classes[:12]) + (", …" if len(classes) > 12 else "") if classes else "0, 1, …"
            raise InputError(f"class folder '{name}' is not a class of the audited model (its classes: {known})")
    labels = np.asarray(index, dtype=np.int64)[data.labels]
    names = tuple(classes) if classes is not None else tuple(str(i) for i in range(max(index) + 1))
    return replace(data, labels=labels, classes=names)


def match_channels(data: ImageSet, channels: int | None, *, to_grey: bool = False) -> ImageSet:
    """Candidate images with the audited model's channel count.

    Grey → RGB repeats the channel (lossless). RGB → grey is done only when the image is grey already
    (R = G = B) or with `to_grey` (luma, as PIL's mode "L"): converting colour images silently would
    audit images the model was never shown.
    """
    have = data.images.shape[-1]
    if channels is None or have == channels:
        return data
    if have == 1 and channels == 3:
        return replace(data, images=np.repeat(data.images, 3, axis=-1))
    if have == 3 and channels == 1:
        rgb = data.images
        if (rgb == rgb[..., :1]).all():
            return replace(data, images=np.ascontiguousarray(rgb[..., :1]))
        if not to_grey:
            raise InputError("the candidate images are colour (RGB) but the audited model takes greyscale; "
                             "convert them explicitly with --to-grey (luma) if that is what it was trained on")
        grey = np.rint(rgb.astype(np.float64) @ LUMA).clip(0, 255).astype(np.uint8)[..., None]
        return replace(data, images=grey)
    raise InputError(f"the candidate images have {have} channels, the audited model takes {channels}")


# ---------------------------------------------------------------------------------------------------------
# Candidate rows of a dataset


ROW_CHOICES = ("holdout-members", "holdout-external")


def select_rows(rows: str, split: MembershipSplit | None) -> np.ndarray:
    """Dataset rows to audit: the split's held-out members or externals, or a JSON file listing row ids.

    Args:
        rows: `holdout-members`, `holdout-external` or the path of a JSON list of row ids.
        split: the audited model's membership split (needed for the two named choices).
    """
    if rows in ROW_CHOICES:
        if split is None:
            raise InputError(f"--rows {rows} needs the audited model's membership split")
        side = split.members if rows == "holdout-members" else split.external
        index = np.intersect1d(split.holdout, side)
    else:
        path = Path(rows)
        if not path.is_file():
            raise InputError(f"--rows must be {' or '.join(ROW_CHOICES)} or a JSON file of row ids; {path} not found")
        try:
            listed = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(listed, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in listed):
            raise InputError(f"{path} must hold a JSON list of integer row ids")
        index = np.asarray(listed, dtype=np.int64)
    if len(index) == 0:
        raise InputError(f"no rows selected by --rows {rows}")
    return index


def subsample(index: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of `size` candidate rows (sorted), e.g. to audit a set of a given size."""
    if not 0 < size <= len(index):
        raise InputError(f"a subset of {size} must be between 1 and the {len(index)} candidates")
    return np.sort(np.random.default_rng(seed).choice(index, size, replace=False))


# ---------------------------------------------------------------------------------------------------------
# Scoring candidates and calibrating the verdict


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


def calibration_scores(mint: TrainedMint, store_path: Path, *, exclude: np.ndarray | None = None) -> Calibration:
    """MINT scores of a complete store's held-out external rows (membership 0, role 1).

    Args:
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
                             "calibrate on; audit a subset of them (--sample N)")
        features = store.features(mint.spec.layers, rows)[keep]
        labels = store.column("label")[rows][keep]
    return Calibration(Path(store_path), ids[keep], mint.predict_proba(features, labels).astype(np.float64),
                       int((~keep).sum()), prov)


def _settings(audited: AuditedModel, mint: TrainedMint,
              like: Mapping[str, object] | None) -> tuple[Transform, dict[str, object]]:
    """(transform, extract options) that make candidates' features comparable with the calibration store's."""
    like = like or {}
    recorded = like.get("transform") or audited.meta.get("transform")
    transform = Transform.from_dict(dict(recorded)) if isinstance(recorded, Mapping) else Transform()
    if mint.spec.source == "gradient":
        parameters = list(mint.spec.layers)  # exactly the classifier's layers, nothing more
    elif isinstance(like.get("parameters"), list):
        parameters = [str(p) for p in like["parameters"]]  # type: ignore[union-attr]
    else:
        raise InputError(f"a classifier on '{mint.spec.source}' features needs the calibration store to "
                         "know which layers to extract")
    return transform, {"layers": ",".join(parameters), "reduction": mint.spec.reduction,
                       "source": mint.spec.source, "engine": str(like.get("engine", "vmap")),
                       "loss": str(like.get("loss_function", "cross_entropy")), "seed": int(like.get("seed", 0))}  # type: ignore[call-overload]


def score_samples(audited: AuditedModel, mint: TrainedMint, data: ImageSet, index: np.ndarray | None = None, *,
                  like: Mapping[str, object] | None = None, out: Path | None = None, to_grey: bool = False,
                  batch_size: int = 128, device: str = "cpu", show_progress: bool = False) -> SampleScores:
    """MINT membership probabilities of rows `index` of `data` (all rows by default).

    The rows are extracted (membership and role unknown, -1) into the store `out`, or a temporary one,
    with the classifier's layers and reduction, and that store is checked against its feature spec.
    Images are brought to the audited model's input: resized by its recorded transform, channels matched
    by `match_channels`.

    Args:
        like: provenance of the calibration store, whose transform, engine, loss and seed are reused.
        out: keep the candidates' feature store here (must not exist yet).

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
    transform, settings = _settings(audited, mint, like)
    if transform.size is None and side is not None:
        transform = replace(transform, size=side)  # a no-op at the training size, a resize otherwise
    unknown = np.full(len(index), -1, dtype=np.int8)
    with tempfile.TemporaryDirectory(prefix="gmint-score-") as tmp:
        path = Path(out) if out is not None else Path(tmp) / "candidates.h5"
        if path.exists():
            raise InputError(f"{path} exists; write the candidates' features to a new file")
        extract(audited, data, Rows(index, unknown, unknown), out=path, transform=transform,
                batch_size=batch_size, device=device, show_progress=show_progress, **settings)  # type: ignore[arg-type]
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
        payload = {"verdict": audit.verdict.as_dict(alpha), "calibration_store": str(audit.calibration.store),
                   "dataset": audit.scores.dataset, "scores": audit.scores.records()}
        path.write_text(json.dumps(payload, indent=2))
        return path
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sample_id", "file", "score"])
        writer.writeheader()
        writer.writerows(audit.scores.records())
    return path
