"""Auditing uploaded images: the page's one computation, a thin layer over `gmint score`'s library.

Checked uploads (`limits.check_image`: each decoded once, by the decoder every gmint reader uses, and brought
to the model's input side) become one in-memory image set in upload order (`upload_set`), as
`load_image_folder` would read the same files from a candidate folder: each image under the class the person
chose from the audited model's own list, or, where they asked for the model's prediction, with no class
(UNLABELLED) under the `predicted` label source. Every image needs one of the two choices: none is made for
the person, since an image scored under a class it does not show gets a meaningless score. No upload is
written anywhere, and nothing from the request names a file: the browser's file names are only echoed back.
From there on it is the library's path: `audit_set` (Weight Modifiers, MINT scores and the set-level test
against the store's held-out externals), with the candidates' feature store in a temporary folder removed
when the request ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmint.assess.candidates import PREDICTED_LABELS, TRUE_LABELS, UNLABELLED
from gmint.assess.scoring import Audit, audit_set
from gmint.data.base import ImageSet
from gmint.errors import InputError, Remedy
from gmint.serve.audits import PublishedAudit
from gmint.serve.limits import CheckedImage, UploadError

# The dataset name uploads are scored under: never a dataset's own name, so their positions (0, 1, ...) are
# never taken for rows of the store or of the pool.
UPLOADS = "uploads"
TO_GREY_REMEDY = "tick “convert colour images to grey” (to_grey=true) if that is what it was trained on"
# The label that asks for the audited model's prediction instead of a class (a class so named is refused
# when the audit is loaded, so the two never meet).
PREDICTED = PREDICTED_LABELS.name


@dataclass(frozen=True)
class ImageScore:
    """One uploaded image's membership probability (the MINT classifier's P(member)) under its label.

    `label_source` is `true` for the class the person gave, `predicted` for the audited model's prediction.
    """

    name: str
    label: str
    label_source: str
    score: float


@dataclass(frozen=True)
class UploadAudit:
    """The answer to one upload: per-image scores in upload order and the set-level verdict at the audit's α."""

    audit: str
    images: tuple[ImageScore, ...]
    result: Audit
    alpha: float
    resized: int = 0  # images of another size than the model's input, resized to it

    @property
    def predicted(self) -> int:
        """How many images were scored under the model's prediction."""
        return self.result.scores.n_predicted

    def to_dict(self) -> dict[str, object]:
        """The JSON form the API returns (the caveats are added by the caller, who knows the audit)."""
        return {"audit": self.audit, "images": [vars(i) for i in self.images],
                "verdict": self.result.verdict_dict(self.alpha), "resized": self.resized}


def caveats(audit: PublishedAudit, resized: int = 0, n: int = 0, predicted: int = 0) -> list[dict[str, str]]:
    """What to read beside the verdict, in plain language: resized images (`resized` of `n`), images labelled
    by the model's prediction (`predicted`), the audited model's gap, the false-positive rate the verdict is
    calibrated to, that a non-rejection is not proof of absence, and the cost of repeated checks."""
    gap, alpha = audit.gap, audit.manifest.alpha
    notes = []
    if predicted:
        notes.append({"topic": "predicted_labels",
                      "text": f"{predicted} of your {n} images {'was' if predicted == 1 else 'were'} scored under "
                              "the class the model itself predicts, not a class you gave. Where the prediction is "
                              "wrong, the image is judged as if it showed that class. The comparison then uses only "
                              "held-out images the model classifies correctly, so the false-positive rate below is "
                              "not guaranteed for these images. Give each image its class where you know it."})
    if resized:
        notes.append({"topic": "resized",
                      "text": f"{resized} of your {n} images {'was' if resized == 1 else 'were'} resized to "
                              f"{audit.side}x{audit.side} pixels, the model's input: a resized image is not the "
                              "file the model may have been trained on, and it can score differently. Upload "
                              "images at the model's own size where you have them."})
    if gap is None:
        gap_text = ("This model's checkpoint records no accuracy on its training images and on images it never "
                    "saw, so how much trace its training data leaves is unknown.")
    else:
        gap_text = (f"The audited model is {gap.members_accuracy:.1%} accurate on the images it was trained on and "
                    f"{gap.external_accuracy:.1%} on images it never saw (a gap of {100 * gap.accuracy_gap:+.1f} "
                    "points). Membership leaves a trace only where a model treats its training images differently: "
                    "the smaller this gap, the weaker any evidence can be.")
    return [
        *notes,
        {"topic": "gap", "text": gap_text},
        {"topic": "false_positive_rate",
         "text": f"The verdict is calibrated to a false-positive rate of {alpha:g}: when none of the images were used "
                 f"in training, it says “evidence” in at most {alpha:.0%} of checks. It compares your images with "
                 f"{audit.n_calibration} held-out images the model never saw, from {audit.mint.spec.dataset}; "
                 "images of another kind can score differently for that reason alone."},
        {"topic": "absence",
         "text": "“No evidence” is not proof that the images were not used: a model that generalises well leaves "
                 "little trace of its training data, and a few images give the test little power."},
        {"topic": "repeats",
         "text": "Checking many sets, or the same images again, and keeping the one that says “evidence” raises "
                 f"the false-positive rate above {alpha:g}."},
    ]


def resolve_labels(labels: Sequence[str], n: int, classes: Sequence[str]) -> list[str]:
    """Each image's label, a class or PREDICTED (the model's prediction): one per image, or one for all.

    Raises:
        UploadError: no labels, a count that is neither 1 nor `n`, an empty label (no choice made), or a label
            that is neither one of `classes` nor PREDICTED.
    """
    if not labels:
        raise UploadError(f"no labels: choose each image's class, or “{PREDICTED}” for the model's prediction "
                          "(labels: one per image, or one for all of them)")
    if len(labels) not in (1, n):
        raise UploadError(f"{len(labels)} labels for {n} images; give one class per image, or one for all of them")
    known = {c: c for c in (*classes, PREDICTED)}
    resolved = []
    for i, label in enumerate(labels):
        if not label.strip():
            which = f"image {i + 1} has no label: choose its class" if len(labels) > 1 else \
                "the one label for every image is empty: choose their class"
            raise UploadError(f"{which}, or “{PREDICTED}” for the model's prediction")
        if label not in known:
            shown = ", ".join(classes[:12]) + (", …" if len(classes) > 12 else "")
            raise UploadError(f"unknown class {label[:40]!r}; the audited model's classes are {shown} (or "
                              f"“{PREDICTED}” for the model's prediction)")
        resolved.append(known[label])  # the model's own string from here on, never the request's
    return resolved * n if len(resolved) == 1 else resolved


def check_sizes(images: Sequence[CheckedImage], side: int | None) -> None:
    """Images of several sizes can be stacked only when the model's input side is known (they are resized to it).

    Raises:
        UploadError: sizes differ and the model does not record its input side.
    """
    if side is not None:
        return
    first = images[0]
    odd = next((i for i in images if i.size != first.size), None)
    if odd is not None:
        raise UploadError(f"{odd.name} is {odd.size[0]}x{odd.size[1]} but {first.name} is {first.size[0]}x"
                          f"{first.size[1]}, and this audited model records no input size to resize them to; "
                          "upload images of one size")


def upload_set(images: Sequence[CheckedImage], labels: Sequence[str], classes: Sequence[str]) -> ImageSet:
    """The checked uploads as one image set, row k = upload k, holding the pixels `load_image_folder` reads
    from the same files laid out as a candidate folder.

    As there, the set is greyscale only where every image is (a grey image beside colour ones has its channel
    repeated, which is what converting it to RGB does), and an image labelled PREDICTED has class UNLABELLED,
    after the model's classes, for the `predicted` label source to label. The images are of one size already:
    the model's side (`check_image`), or their own common size (`check_sizes`).

    Args:
        images: the uploads, each checked by `check_image`.
        labels: each image's label as `resolve_labels` gives it: one of `classes`, or PREDICTED.
        classes: the audited model's classes.
    """
    channels = 1 if all(image.pixels.shape[2] == 1 for image in images) else 3
    pixels = [image.pixels if image.pixels.shape[2] == channels else np.repeat(image.pixels, 3, axis=2)
              for image in images]
    names = (*classes, UNLABELLED) if PREDICTED in labels else tuple(classes)
    n = len(images)
    return ImageSet(name=UPLOADS, images=np.stack(pixels), sample_ids=np.arange(n, dtype=np.int64),
                    labels=np.array([names.index(UNLABELLED if label == PREDICTED else label) for label in labels],
                                    dtype=np.int64),
                    part=np.full(n, "train"), classes=names)


def score_uploads(audit: PublishedAudit, images: Sequence[CheckedImage], labels: Sequence[str], *,
                  to_grey: bool = False, tmp_root: Path | None = None) -> UploadAudit:
    """Score checked uploads and test them as a set, as `gmint score` scores a folder of the same files.

    Args:
        audit: the published audit.
        images: the uploads, each checked by `check_image` at the audit's input side.
        labels: their classes, or PREDICTED for the model's prediction (see `resolve_labels`).
        to_grey: convert colour images to grey (luma) for a greyscale model; without it they are refused.
        tmp_root: where the request's temporary folder for the candidates' feature store is made (default:
            the system's).

    Raises:
        UploadError: labels, sizes or channels that do not fit the audited model.
    """
    if not images:
        raise UploadError("no images to score")
    chosen = resolve_labels(labels, len(images), audit.classes)
    check_sizes(images, audit.side)
    data = upload_set(images, chosen, audit.classes)
    source = PREDICTED_LABELS if PREDICTED in chosen else TRUE_LABELS
    with tempfile.TemporaryDirectory(prefix="gmint-serve-", dir=tmp_root) as tmp:
        try:
            # One extraction at a time per audit; the audit's model is shared by every request.
            with audit.lock:
                result = audit_set(audit.audited, audit.mint, data, calibration=audit.store,
                                   out=Path(tmp) / "candidates.h5", to_grey=to_grey, labels=source.name)
        except InputError as exc:
            if exc.remedy is Remedy.TO_GREY:
                raise UploadError(f"{exc.message}; {TO_GREY_REMEDY}") from None
            raise
    scored = tuple(ImageScore(image.name, str(record["class"]), str(record["label_source"]), float(score))
                   for image, record, score in zip(images, result.scores.records(), result.scores.score, strict=True))
    resized = sum(1 for image in images if image.resized)
    return UploadAudit(audit.name, scored, result, audit.manifest.alpha, resized)
