"""Auditing uploaded images: the page's one computation, a thin layer over `gmint score`'s library.

Checked uploads (`limits.check_image`) are laid out as `gmint score --images` expects them, in a temporary
folder that is removed when the request ends: `<tmp>/images/<class name>/<n>.<suffix>`, where the class name
comes from the audited model's own list and `n` is the upload's position, or `<tmp>/images/<n>.<suffix>` for
an image the person asked to label with the model's prediction (`gmint score --labels predicted`). Every
image needs one of the two choices: none is made for the person, since an image scored under a class it
does not show gets a meaningless score. Nothing from the request names a file: the browser's file names
are only echoed back. From there on it is the command's path: `load_image_folder` (labels, resizing to the
model's input, channels), `audit_set` (Weight Modifiers, MINT scores and the set-level test against the
store's held-out externals), with the candidates' store written into the same temporary folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gmint.assess.candidates import PREDICTED_LABELS, TRUE_LABELS, load_image_folder
from gmint.assess.scoring import Audit, audit_set
from gmint.data.readers.common import decode_pixels
from gmint.errors import InputError, Remedy
from gmint.serve.audits import PublishedAudit
from gmint.serve.limits import CheckedImage, UploadError

# The dataset name uploads are scored under: never a dataset's own name (their temporary folder is their
# own source as well), so their positions (0, 1, ...) are never taken for rows of the store or of the pool.
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


def decoded(image: CheckedImage) -> CheckedImage:
    """`image` once decoded as `gmint score` decodes its file (`decode_pixels`), with its size as read (upright).

    A file gmint refuses (pixels that are not fully opaque, values with no known scale to 8 bits) is refused
    here by its display name, before anything is written; the size is the one after its EXIF orientation,
    which the size checks and the count of resized images need.

    Raises:
        UploadError: the image cannot be made 8-bit without a guess.
    """
    try:
        pixels = decode_pixels(image.data, name=image.name)
    except InputError as exc:
        raise UploadError(str(exc)) from None
    return replace(image, size=(pixels.shape[1], pixels.shape[0]))


def score_uploads(audit: PublishedAudit, images: Sequence[CheckedImage], labels: Sequence[str], *,
                  to_grey: bool = False, tmp_root: Path | None = None) -> UploadAudit:
    """Score checked uploads and test them as a set, as `gmint score --images` would.

    Args:
        audit: the published audit.
        images: the uploads, each checked by `check_image`.
        labels: their classes, or PREDICTED for the model's prediction (see `resolve_labels`).
        to_grey: convert colour images to grey (luma) for a greyscale model; without it they are refused.
        tmp_root: where the request's temporary folder is made (default: the system's).

    Raises:
        UploadError: labels, sizes or channels that do not fit the audited model.
    """
    if not images:
        raise UploadError("no images to score")
    chosen = resolve_labels(labels, len(images), audit.classes)
    images = [decoded(image) for image in images]
    check_sizes(images, audit.side)
    source = PREDICTED_LABELS if PREDICTED in chosen else TRUE_LABELS
    with tempfile.TemporaryDirectory(prefix="gmint-serve-", dir=tmp_root) as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, (image, label) in enumerate(zip(images, chosen, strict=True)):
            place = folder if label == PREDICTED else folder / label  # loose at the top: no class, predicted
            place.mkdir(exist_ok=True)
            (place / f"{i}{image.suffix}").write_bytes(image.data)
        try:
            data = replace(load_image_folder(folder, audit.audited, labels=source.name), name=UPLOADS)
            # One extraction at a time per audit; the audit's model is shared by every request.
            with audit.lock:
                result = audit_set(audit.audited, audit.mint, data, calibration=audit.store,
                                   out=Path(tmp) / "candidates.h5", to_grey=to_grey, labels=source.name)
        except InputError as exc:
            if exc.remedy is Remedy.TO_GREY:
                raise UploadError(f"{exc.message}; {TO_GREY_REMEDY}") from None
            raise
    records = result.scores.records()
    position = np.array([int(Path(str(r["file"])).stem) for r in records])
    scored = tuple(ImageScore(images[int(position[k])].name, str(records[k]["class"]),
                              str(records[k]["label_source"]), float(result.scores.score[k]))
                   for k in np.argsort(position))
    side = audit.side
    resized = sum(1 for image in images if side is not None and image.size != (side, side))
    return UploadAudit(audit.name, scored, result, audit.manifest.alpha, resized)
