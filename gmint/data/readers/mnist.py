"""MNIST from its IDX files (torchvision's `MNIST/raw` layout), plain or gzipped."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.readers.common import Part, Source, assemble, check_labels, locate, register_reader
from gmint.errors import InputError

_MNIST_PARTS = (("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
IDX_IMAGES, IDX_LABELS = 0x803, 0x801


def _idx_path(folder: Path, stem: str) -> Path | None:
    """The IDX file `stem`, plain or gzipped (torchvision keeps both; the plain one needs no inflating)."""
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array, gzipped or not, checked against its header.

    Layout: big-endian uint32 magic 0x0000TTDD (TT = 0x08 unsigned bytes, DD = number of dimensions), DD
    big-endian uint32 sizes, then exactly prod(sizes) bytes.

    Args:
        path: the IDX file (`.gz` is inflated).
        magic: the magic number expected: IDX_IMAGES or IDX_LABELS.
    """
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f"{path}: corrupt gzip file ({err})") from None
    found = int.from_bytes(raw[:4], "big")
    if len(raw) < 4 or found != magic:
        raise InputError(f"{path}: bad IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected, held = math.prod(dims), len(raw) - header
    if held != expected:
        state = "truncated" if held < expected else "overlong"
        raise InputError(f"{path}: {state} IDX file: its header promises {'x'.join(map(str, dims))} = "
                         f"{expected} bytes of data, it holds {held}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


_MNIST_SOURCES = (Source(
    "idx", ("MNIST/raw", "raw", ""),
    lambda folder: any(_idx_path(folder, images) for _, images, _ in _MNIST_PARTS),
    "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (IDX files, torchvision layout)",
),)


@register_reader("mnist", sources=_MNIST_SOURCES)
def read_mnist(root: Path | str | None = None) -> ImageSet:
    """MNIST from its IDX files: (N, 28, 28, 1), train (60,000) then t10k (10,000), each in file order.

    `files` names the IDX image file of each row. A part whose image file is absent is left out.
    """
    _, folder = locate("mnist", root)
    parts = []
    for part, images_stem, labels_stem in _MNIST_PARTS:
        images_path = _idx_path(folder, images_stem)
        if images_path is None:
            continue
        labels_path = _idx_path(folder, labels_stem)
        if labels_path is None:
            raise InputError(f"mnist: {images_path} has no labels file {folder / labels_stem}[.gz]")
        images = read_idx(images_path, IDX_IMAGES)[..., None]
        labels = check_labels(read_idx(labels_path, IDX_LABELS).astype(np.int64), 10, labels_path)
        if len(images) != len(labels):
            raise InputError(f"mnist: {images_path} holds {len(images)} images but {labels_path.name} "
                             f"{len(labels)} labels")
        parts.append(Part(part, images, labels, np.full(len(labels), images_path.name)))
    return assemble("mnist", folder, parts, tuple(str(d) for d in range(10)))
