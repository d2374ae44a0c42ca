"""The in-memory form every dataset reader returns, and the registry of readers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmint.errors import InputError
from gmint.registry import Registry


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Decoded images of one dataset, all official parts together.

    Members and external samples of a membership split are rows of this one array; `part` keeps the
    official split (`train` / `test`) so the paper's protocol (members and external drawn from the
    official training part) can be followed.

    Attributes:
        name: registry name of the dataset (`digits`, `mnist`, ...).
        images: (N, H, W, C) uint8, decoded once; readers resize to a common size where files differ.
        labels: (N,) int64 class indices in [0, len(classes)).
        sample_ids: (N,) int64 stable row ids (the row's position in the reader's deterministic order).
        part: (N,) str official part of each row (`train` or `test`).
        classes: class names, index = label.
        groups: (N,) int64 group of each row (GTSRB: one physical sign's track), or None when rows are
            independent. Membership splits never put one group on both sides.
        files: (N,) str source file of each row, relative to the dataset root (for IDX and pickle rows,
            the container file, e.g. `data_batch_3`).
        root: the folder the rows were read from, resolved (`files` are relative to it); None for embedded
            data (digits) and for sets built in memory. With the name it tells two reads of one dataset from
            reads of two datasets: sample ids are positions, so they match rows only within one dataset.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    sample_ids: np.ndarray
    part: np.ndarray
    classes: tuple[str, ...]
    groups: np.ndarray | None = None
    files: np.ndarray | None = field(default=None, repr=False)
    root: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise InputError(f"{self.name}: images must be (N, H, W, C) uint8, got {self.images.shape} "
                             f"{self.images.dtype}")
        for column in ("labels", "sample_ids", "part", "groups", "files"):
            value = getattr(self, column)
            if value is not None and len(value) != n:
                raise InputError(f"{self.name}: {column} has {len(value)} rows, images have {n}")
        if n == 0:
            raise InputError(f"{self.name}: the dataset is empty")
        if self.labels.min() < 0 or self.labels.max() >= len(self.classes):
            bad = int(np.flatnonzero((self.labels < 0) | (self.labels >= len(self.classes)))[0])
            where = f" ({self.files[bad]})" if self.files is not None else ""
            raise InputError(f"{self.name}: label {self.labels[bad]} of row {bad}{where} is outside "
                             f"0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.images)

    def take(self, rows: np.ndarray) -> ImageSet:
        """The given rows as a new ImageSet, keeping their sample ids (for subsets in experiments).

        Splits of the subset index its own row positions; stores record the kept sample ids.
        """
        return ImageSet(name=self.name, images=self.images[rows], labels=self.labels[rows],
                        sample_ids=self.sample_ids[rows], part=self.part[rows], classes=self.classes,
                        groups=None if self.groups is None else self.groups[rows],
                        files=None if self.files is None else self.files[rows], root=self.root)

    def files_sha256(self) -> str:
        """Hash of every row's (sample id, file), "" without files: two reads with the same hash name the same
        file by each sample id, so their rows can be matched by id (stores record it; see `root`)."""
        if self.files is None:
            return ""
        digest = hashlib.sha256()
        for sample_id, file in zip(self.sample_ids.tolist(), self.files.tolist(), strict=True):
            digest.update(f"{sample_id}\0{file}\n".encode())
        return digest.hexdigest()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image as a model sees it."""
        _, h, w, c = self.images.shape
        return c, h, w


# A reader takes the dataset root (None for embedded data) and keyword options, returns an ImageSet.
Reader = Callable[..., ImageSet]
DATASETS: Registry[Reader] = Registry("dataset")


@DATASETS.register("digits")
def read_digits(root: Path | None = None) -> ImageSet:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): the offline default.

    Pixel values 0..16 are scaled to 0..255 so every dataset shares one uint8 convention.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    n = len(images)
    return ImageSet(
        name="digits",
        images=images,
        labels=bunch.target.astype(np.int64),
        sample_ids=np.arange(n, dtype=np.int64),
        part=np.full(n, "train"),
        classes=tuple(str(c) for c in range(10)),
    )
