"""What every reader shares: where the data is (root, layouts, `locate`), listing folders, and decoding image
files into one `ImageSet` (each file by `pixels.decode_pixels`).

A family module registers its reader with `register_reader`, which also records the reader's on-disk layouts
(`Source`) in SOURCES: `load_dataset` needs the folder before reading, to key the cache.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from gmint.data.base import DATASETS, ImageSet, Reader
from gmint.data.readers.pixels import decode_pixels
from gmint.errors import InputError, Remedy
from gmint.progress import progress_bar
from gmint.registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
# Decoding threads: PIL releases the GIL while decoding.
WORKERS = min(8, os.cpu_count() or 1)
_PROGRESS_MIN = 1000
_CHUNK = 128


# ---------------------------------------------------------------------------------------------------------
# Where the data is


def resolve_root(root: Path | str | None) -> Path:
    """The data root: `root` if given, else $GMINT_DATA — never a guess, so a run states where its data is."""
    if root is None:
        root = os.environ.get("GMINT_DATA") or None
        if root is None:
            raise InputError("no data root given", Remedy.DATA_ROOT)
    path = Path(root).expanduser().resolve()
    if not path.is_dir():  # given, so no advice to give one: only what is wrong with it
        raise InputError(f"data root {path} {'is a file, not a folder' if path.exists() else 'does not exist'}")
    return path


@dataclass(frozen=True)
class Source:
    """One on-disk layout of a dataset: the folders it may sit in under a data root, and how to recognise it.

    Attributes:
        layout: name of the layout (`idx`, `pickle`, `folders`, ...), the value of a reader's `layout` option.
        folders: candidate folders relative to the data root, most specific first; "" is the root itself, so
            a root that points straight at the dataset folder works too.
        looks_like: whether a candidate folder holds this layout.
        expected: the layout as a user would look for it, quoted when nothing is found.
    """

    layout: str
    folders: tuple[str, ...]
    looks_like: Callable[[Path], bool]
    expected: str

    def find(self, root: Path) -> Path | None:
        """The first candidate folder under `root` that holds this layout, or None."""
        for sub in self.folders:
            folder = root / sub
            if folder.is_dir() and self.looks_like(folder):
                return folder
        return None


# Each dataset's layouts, preferred first.
SOURCES: Registry[tuple[Source, ...]] = Registry("dataset source")


def register_reader(name: str, *aliases: str, sources: tuple[Source, ...]) -> Callable[[Reader], Reader]:
    """Decorator registering a reader in DATASETS and its layouts in SOURCES under the same names."""

    def add(reader: Reader) -> Reader:
        SOURCES.register(name, *aliases)(sources)
        return DATASETS.register(name, *aliases)(reader)

    return add


def locate(name: str, root: Path | str | None, layout: str = "auto") -> tuple[str, Path]:
    """(layout, folder) of dataset `name` under `root`: its first layout found (`auto`) or the one asked."""
    sources = SOURCES.get(name)
    layouts = [source.layout for source in sources]
    if layout != "auto" and layout not in layouts:
        raise InputError(f"{name}: unknown layout '{layout}'; choose from {['auto', *layouts]}")
    chosen = [source for source in sources if layout in ("auto", source.layout)]
    base = resolve_root(root)
    for source in chosen:
        folder = source.find(base)
        if folder is not None:
            return source.layout, folder
    expected = " or ".join(source.expected for source in chosen)
    raise InputError(f"{name}: no {expected} under the data root {base}; the data root is the folder that holds "
                     "the dataset's usual folder, or that folder itself")


def subfolders(folder: Path) -> list[str]:
    """Names of the visible folders in `folder`, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that reads digit runs as numbers, so 9.jpg comes before 10.jpg."""
    return tuple(int(token) if token.isdecimal() else token for token in re.split(r"(\d+)", name))


def image_files(folder: Path) -> list[Path]:
    """The visible image files (IMAGE_SUFFIXES, any case) in `folder`, in natural order."""
    files = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return sorted((p for p in files if p.is_file()), key=lambda p: natural_key(p.name))


def positive_int(name: str, option: str, value: object) -> int:
    """`value` of dataset `name`'s `option`, refused unless it is a positive integer (bools are not)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{name}: option {option} must be a positive integer, got {value!r}")
    return value


def check_labels(labels: np.ndarray, n_classes: int, source: Path) -> np.ndarray:
    """Labels outside 0..n_classes-1 are an error naming the file they came from."""
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise InputError(f"{source}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{n_classes - 1}")
    return labels


def decode_image(path: Path, shape: tuple[int, int, int], *, resize: bool = False,
                 box: tuple[int, int, int, int] | None = None,
                 native: tuple[int, int] | None = None) -> np.ndarray:
    """One image file → (H, W, C) uint8 of `shape` (C = 1 grey, 3 RGB), decoded by `decode_pixels`.

    Channels are matched after decoding: grey is repeated into RGB, colour becomes grey by Pillow's luma
    (ITU-R 601-2), as a dataset of mixed files needs one shape.

    Args:
        path: the image file.
        shape: (H, W, C) wanted.
        resize: resize to (W, H) with PIL bilinear (which filters when shrinking); otherwise another size
            is an error.
        box: crop first (PIL box, right/lower edges exclusive).
        native: the (W, H) an annotation promises; another size is an error.
    """
    pixels = decode_pixels(path)
    if native is not None and (pixels.shape[1], pixels.shape[0]) != native:
        raise InputError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]}, its annotation says "
                         f"{native[0]}x{native[1]}")
    return fit_pixels(pixels, shape, resize=resize, box=box, shown=str(path))


def fit_pixels(pixels: np.ndarray, shape: tuple[int, int, int], *, resize: bool = False,
               box: tuple[int, int, int, int] | None = None, shown: str = "image") -> np.ndarray:
    """Decoded (H, W, C) pixels brought to `shape` as `decode_image` brings a file's: cropped to `box`, channels
    matched (grey repeated, colour to Pillow's luma), then resized (PIL bilinear) where `resize` allows.

    Raises:
        InputError: another size than `shape` without `resize`, naming the image as `shown`.
    """
    h, w, c = shape
    if box is None and pixels.shape == shape:
        return pixels  # the common case: nothing to crop, convert or resize
    out = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    if box is not None:
        out = out.crop(box)
    mode = "L" if c == 1 else "RGB"
    if out.mode != mode:
        out = out.convert(mode)
    if out.size != (w, h):
        if not resize:
            raise InputError(f"{shown}: image is {out.width}x{out.height}, expected {w}x{h}")
        out = out.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(out).reshape(h, w, c)


def _decode_all(jobs: Sequence[Callable[[], np.ndarray]], shape: tuple[int, int, int],
                what: str) -> np.ndarray:
    """Run decode jobs on a thread pool into one (N, *shape) array.

    Jobs go in chunks: per-future overhead rivals decoding a 32x32 JPEG. Chunks are awaited in order, so
    the bad file reported is the first in the dataset's order.
    """
    images = np.empty((len(jobs), *shape), dtype=np.uint8)

    def run(chunk: range) -> int:
        for i in chunk:
            images[i] = jobs[i]()
        return len(chunk)

    chunks = [range(i, min(i + _CHUNK, len(jobs))) for i in range(0, len(jobs), _CHUNK)]
    with ThreadPoolExecutor(WORKERS) as pool, \
            progress_bar(f"decode {what}", len(jobs), enabled=len(jobs) >= _PROGRESS_MIN) as bar:
        futures = [pool.submit(run, chunk) for chunk in chunks]
        try:
            for future in futures:
                bar.advance(future.result())
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return images


# One row of a file-based dataset before decoding: (part, file, label), in the dataset's final order.
Entry = tuple[str, Path, int]


def decode_set(name: str, folder: Path, entries: Sequence[Entry], classes: tuple[str, ...],
               shape: tuple[int, int, int], *, jobs: Sequence[Callable[[], np.ndarray]] | None = None,
               groups: np.ndarray | None = None) -> ImageSet:
    """Decode the listed files into an ImageSet, with row positions as sample ids.

    Args:
        name: the dataset's registry name.
        folder: the dataset folder; `files` are recorded relative to it.
        entries: the rows, in order.
        classes: class names, index = label.
        shape: (H, W, C) of every image.
        jobs: one decoder per entry, where plain `decode_image(path, shape)` is not enough (resizing,
            cropping).
        groups: (N,) group of each row, if rows are not independent.
    """
    if not entries:
        raise InputError(f"{name}: no images found under {folder}")
    if jobs is None:
        jobs = [partial(decode_image, path, shape) for _, path, _ in entries]
    return ImageSet(
        name=name,
        images=_decode_all(jobs, shape, name),
        labels=np.array([label for _, _, label in entries], dtype=np.int64),
        sample_ids=np.arange(len(entries), dtype=np.int64),
        part=np.array([part for part, _, _ in entries]),
        classes=classes,
        groups=groups,
        files=np.array([path.relative_to(folder).as_posix() for _, path, _ in entries]),
    )


class Part(NamedTuple):
    """One official part of an array-file dataset (IDX, pickle), decoded."""

    part: str
    images: np.ndarray
    labels: np.ndarray
    files: np.ndarray


def assemble(name: str, folder: Path, parts: Sequence[Part], classes: tuple[str, ...]) -> ImageSet:
    """Concatenate the parts found, in official order, with row positions as sample ids."""
    if not parts:
        raise InputError(f"{name}: no data files in {folder}")
    shapes = sorted({p.images.shape[1:] for p in parts})
    if len(shapes) > 1:
        raise InputError(f"{name}: the parts in {folder} hold images of different shapes {shapes}")
    labels = np.concatenate([p.labels for p in parts])
    return ImageSet(
        name=name,
        images=np.concatenate([p.images for p in parts]),
        labels=labels,
        sample_ids=np.arange(len(labels), dtype=np.int64),
        part=np.concatenate([np.full(len(p.labels), p.part) for p in parts]),
        classes=classes,
        files=np.concatenate([p.files for p in parts]),
    )
