"""GTSRB's official training layout: PPM images and a GT-000CC.csv annotation per class folder."""

from __future__ import annotations

import csv
import re
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.readers.common import (
    Source,
    decode_image,
    decode_set,
    locate,
    positive_int,
    register_reader,
    subfolders,
)
from gmint.errors import InputError

GTSRB_CLASSES = tuple(f"{c:05d}" for c in range(43))
_GT_HEADER = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_GT_FILENAME = re.compile(r"(\d+)_(\d+)\.\w+")


class _Sign(NamedTuple):
    """One annotated frame of GTSRB: frames of one track show the same physical sign."""

    path: Path
    label: int
    track: int
    frame: int
    size: tuple[int, int]
    roi: tuple[int, int, int, int]


def _read_gt(csv_path: Path, label: int) -> list[_Sign]:
    """Every frame a GT-000CC.csv lists, checked against its folder (ClassId) and the files present."""
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if not rows or tuple(rows[0]) != _GT_HEADER:
        raise InputError(f"{csv_path}: header is not {';'.join(_GT_HEADER)}")
    signs = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            filename, *numbers = row
            width, height, x1, y1, x2, y2, class_id = map(int, numbers)
        except ValueError:
            raise InputError(f"{csv_path} line {line}: expected {';'.join(_GT_HEADER)}, got "
                             f"{';'.join(row)!r}") from None
        path = csv_path.parent / filename
        if class_id != label:
            raise InputError(f"{path}: ClassId {class_id} in {csv_path.name} does not match its folder "
                             f"{csv_path.parent.name}")
        name = _GT_FILENAME.fullmatch(filename)
        if name is None:
            raise InputError(f"{csv_path} line {line}: {filename!r} is not named TRACK_FRAME.ppm")
        if not path.is_file():
            raise InputError(f"{csv_path} line {line}: the listed file {path} is missing")
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise InputError(f"{path}: ROI ({x1}, {y1}, {x2}, {y2}) does not fit its {width}x{height} image")
        signs.append(_Sign(path, label, int(name[1]), int(name[2]), (width, height), (x1, y1, x2, y2)))
    return signs


_GTSRB_SOURCES = (Source(
    "official", ("GTSRB/Final_Training/Images", "Final_Training/Images", "Images", ""),
    lambda folder: any(folder.glob("[0-9][0-9][0-9][0-9][0-9]/GT-*.csv")),
    "GTSRB/Final_Training/Images/000CC/ with GT-000CC.csv (official training layout)",
),)


@register_reader("gtsrb", sources=_GTSRB_SOURCES)
def read_gtsrb(root: Path | str | None = None, *, size: int = 64, roi: bool = False) -> ImageSet:
    """GTSRB's training images, resized to size x size (PIL bilinear), cropped to the annotated ROI if `roi`.

    Labels come from the class folders, named `00000`..`00042` (also the class names), and each CSV's ClassId
    must agree. Rows are ordered by class, track, frame; `groups` numbers the tracks (class, track) in that
    order, since the ~30 frames of a track show one physical sign and must stay on one side of a split. All
    rows are part `train` (the official test set has no tracks). The ROI's X2/Y2 are taken as exclusive edges,
    which leaves the documented border of at least 5 px on every side.
    """
    size = positive_int("gtsrb", "size", size)
    _, folder = locate("gtsrb", root)
    signs: list[_Sign] = []
    for class_name in subfolders(folder):
        if not re.fullmatch(r"\d{5}", class_name):
            continue
        label = int(class_name)
        if label >= len(GTSRB_CLASSES):
            raise InputError(f"gtsrb: class folder {folder / class_name} is outside 00000..00042")
        gt = folder / class_name / f"GT-{class_name}.csv"
        if not gt.is_file():
            raise InputError(f"gtsrb: missing {gt} (each class folder holds its GT-000CC.csv)")
        signs += _read_gt(gt, label)
    signs.sort(key=lambda s: (s.label, s.track, s.frame))
    track_ids: dict[tuple[int, int], int] = {}
    groups = np.array([track_ids.setdefault((s.label, s.track), len(track_ids)) for s in signs],
                      dtype=np.int64)
    shape = (size, size, 3)
    jobs = [partial(decode_image, s.path, shape, resize=True, box=s.roi if roi else None, native=s.size)
            for s in signs]
    entries = [("train", s.path, s.label) for s in signs]
    return decode_set("gtsrb", folder, entries, GTSRB_CLASSES, shape, jobs=jobs, groups=groups)
