"""Auditing uploaded images: the page's one computation, a thin layer over `gmint score`'s library.

Checked uploads (`limits.check_image`) are laid out as `gmint score --images` expects them, in a temporary
folder that is removed when the request ends: `<tmp>/images/<class name>/<n>.<suffix>`, where the class name
comes from the audited model's own list and `n` is the upload's position. Nothing from the request names a
file: the browser's file names are only echoed back. From there on it is the command's path:
`load_image_folder` (labels, resizing to the model's input, channels), `audit_set` (Weight Modifiers, MINT
scores and the set-level test against the store's held-out externals), with the candidates' store written
into the same temporary folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gmint.assess.candidates import TO_GREY_HINT, load_image_folder
from gmint.assess.scoring import audit_set
from gmint.assess.verdict import SetVerdict
from gmint.errors import InputError
from gmint.serve.audits import PublishedAudit
from gmint.serve.limits import CheckedImage, UploadError

# The dataset name uploads are scored under: never a dataset's own name, so their positions (0, 1, ...) are
# not mistaken for rows of the calibration store or of the classifier's pool.
UPLOADS = "uploads"
TO_GREY_REMEDY = "tick “convert colour images to grey” (to_grey=true)"


@dataclass(frozen=True)
class ImageScore:
    """One uploaded image's membership probability (the MINT classifier's P(member)) under its class."""

    name: str
    label: str
    score: float


@dataclass(frozen=True)
class UploadAudit:
    """The answer to one upload: per-image scores in upload order and the set-level verdict at the audit's α."""

    audit: str
    images: tuple[ImageScore, ...]
    verdict: SetVerdict
    alpha: float
    resized: int = 0  # images of another size than the model's input, resized to it

    def to_dict(self) -> dict[str, object]:
        """The JSON form the API returns (the caveats are added by the caller, who knows the audit)."""
        return {"audit": self.audit, "images": [vars(i) for i in self.images],
                "verdict": self.verdict.to_dict(self.alpha), "resized": self.resized}


def caveats(audit: PublishedAudit, resized: int = 0, n: int = 0) -> list[dict[str, str]]:
    """What to read beside the verdict, in plain language: resized images (`resized` of `n`), the audited
    model's gap, the false-positive rate the verdict is calibrated to, that a non-rejection is not proof of
    absence, and the cost of repeated checks."""
    gap, alpha = audit.gap, audit.manifest.alpha
    notes = []
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
    """Each image's class: one label per image, or a single label for all of them.

    Raises:
        UploadError: a count that is neither 1 nor `n`, or a label that is not one of `classes`.
    """
    if len(labels) not in (1, n):
        raise UploadError(f"{len(labels)} labels for {n} images; give one class per image, or one for all of them")
    known = {c: c for c in classes}
    resolved = []
    for label in labels:
        if label not in known:
            shown = ", ".join(classes[:12]) + (", …" if len(classes) > 12 else "")
            raise UploadError(f"unknown class {label[:40]!r}; the audited model's classes are {shown}")
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


def score_uploads(audit: PublishedAudit, images: Sequence[CheckedImage], labels: Sequence[str], *,
                  to_grey: bool = False, tmp_root: Path | None = None) -> UploadAudit:
    """Score checked uploads and test them as a set, as `gmint score --images` would.

    Args:
        audit: the published audit.
        images: the uploads, each checked by `check_image`.
        labels: their classes (see `resolve_labels`).
        to_grey: convert colour images to grey (luma) for a greyscale model; without it they are refused.
        tmp_root: where the request's temporary folder is made (default: the system's).

    Raises:
        UploadError: labels, sizes or channels that do not fit the audited model.
    """
    if not images:
        raise UploadError("no images to score")
    classes = resolve_labels(labels, len(images), audit.classes)
    check_sizes(images, audit.side)
    with tempfile.TemporaryDirectory(prefix="gmint-serve-", dir=tmp_root) as tmp:
        folder = Path(tmp) / "images"
        for i, (image, label) in enumerate(zip(images, classes, strict=True)):
            (folder / label).mkdir(parents=True, exist_ok=True)
            (folder / label / f"{i}{image.suffix}").write_bytes(image.data)
        try:
            data = replace(load_image_folder(folder, audit.audited), name=UPLOADS)
            # One extraction at a time per audit; the audit's model is shared by every request.
            with audit.lock:
                result = audit_set(audit.audited, audit.mint, data, calibration=audit.store,
                                   out=Path(tmp) / "candidates.h5", to_grey=to_grey)
        except InputError as exc:
            if TO_GREY_HINT in str(exc):
                raise UploadError(str(exc).replace(TO_GREY_HINT, TO_GREY_REMEDY)) from None
            raise
    position = np.array([int(Path(str(f)).stem) for f in result.scores.file])
    order = np.argsort(position)
    scored = tuple(ImageScore(images[int(position[k])].name, classes[int(position[k])], float(result.scores.score[k]))
                   for k in order)
    side = audit.side
    resized = sum(1 for image in images if side is not None and image.size != (side, side))
    return UploadAudit(audit.name, scored, result.verdict, audit.manifest.alpha, resized)
