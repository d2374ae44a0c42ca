"""What every reader shares: where the data is (root, layouts, `locate`), listing folders, and decoding image
files into one `ImageSet`.

A family module registers its reader with `register_reader`, which also records the reader's on-disk layouts
(`Source`) in SOURCES: `load_dataset` needs the folder before reading, to key the cache.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageOps

from gmint.data.base import DATASETS, ImageSet, Reader
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


# ---------------------------------------------------------------------------------------------------------
# Decoding image files: every Pillow mode to 8 bits, one way
#
# Every file gmint reads as an image — a dataset reader's, a `gmint score` candidate's, a page upload's —
# goes through `decode_pixels`, so a file holds the same pixels as a dataset row, as a candidate and as an
# upload. Pillow's own `convert("L")` clips 16-bit values to 255 (a 16-bit PNG turns white) and drops
# alpha without a word: each mode is scaled here as documented below, or the file is refused in one line.

# Modes that decode to one channel, and to three; a palette's count depends on its colours (`_grey_palette`).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
_PALETTE_MODES = frozenset({"P", "PA"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# EXIF orientations that turn the stored image a quarter: width and height swap.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode_pixels(source: Path | bytes, *, name: str | None = None) -> np.ndarray:
    """One image file → (H, W, C) uint8, C = 1 (grey) or 3 (colour), as every part of gmint reads it.

    The EXIF orientation is applied first (`ImageOps.exif_transpose`): the image is read upright, as every
    viewer and browser shows it, whatever reads it. Then each Pillow mode becomes 8 bits:

    - `1` → 0 or 255; `L` as is; `RGB` as is; `RGBX` drops its padding byte.
    - `I;16`, `I;16B`, `I;16L`, `I;16N` (16-bit grey) → value / 257, rounded: a 16-bit export of an 8-bit
      image (value x 257) gives back exactly that image.
    - `I` (32-bit integers): from a PGM/PPM file, which Pillow scales to 0..65535 (maxval above 255), as
      16-bit; from any other format, kept where every value is in 0..255 and refused otherwise (its scale
      is unknown).
    - `F` (floating point): values all in [0, 1] → x 255, rounded (the usual float image); else values in
      [0, 255] → rounded (Pillow's `convert("F")` of an 8-bit image); anything else is refused.
    - 16-bit-per-channel colour PNGs: Pillow opens them as `RGB`/`RGBA` keeping each channel's high byte,
      which is exact for a 16-bit export of an 8-bit image and within 1 of value / 257 otherwise.
    - `CMYK`, `YCbCr`, `LAB`, `HSV` → RGB by Pillow's conversion.
    - `P` (palette) → RGB, or grey where every palette entry is grey.
    - Transparency (`LA`, `La`, `PA`, `RGBA`, `RGBa`, a palette's or a colour key's): a fully opaque image
      drops it; any pixel that is not fully opaque refuses the file, since compositing it onto an assumed
      background would be a guess.

    Args:
        source: the file, or its bytes.
        name: how messages name it (default: the path).

    Raises:
        InputError: one line naming the file: it cannot be decoded, or its pixels cannot be made 8-bit
            without a guess.
    """
    shown = name if name is not None else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            ImageOps.exif_transpose(img, in_place=True)
            pixels = _eight_bit(img, shown)
    except _DECODE_ERRORS as err:
        raise InputError(f"cannot decode image {shown}: {_first_line(err)}") from None
    return np.ascontiguousarray(pixels if pixels.ndim == 3 else pixels[..., None])


def image_header(path: Path) -> tuple[int, tuple[int, int]]:
    """(C, (W, H)) that `decode_pixels` gives for `path`, read from the file's header where it tells.

    Lets a reader choose one shape for a folder before decoding it once. A palette image, or a mode gmint
    does not read, is decoded: its channels depend on its colours, its refusal comes from `decode_pixels`.
    The orientation is the header's: PNG keeps an EXIF block after its pixels only rarely, and where one
    turns an image that is not resized, decoding finds a size that disagrees with the folder's and says so.
    """
    try:
        with Image.open(path) as img:
            mode, (width, height) = img.mode, img.size
            # Image's own getexif: PNG's decodes the whole file to look for an EXIF block after the pixels.
            turned = Image.Image.getexif(img).get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS
    except _DECODE_ERRORS as err:
        raise InputError(f"cannot decode image {path}: {_first_line(err)}") from None
    if mode in _PALETTE_MODES or mode not in GREY_MODES | COLOUR_MODES:
        h, w, c = decode_pixels(path).shape
        return c, (w, h)
    return (1 if mode in GREY_MODES else 3), ((height, width) if turned else (width, height))


def _eight_bit(img: Image.Image, shown: str) -> np.ndarray:
    """`img`'s pixels as uint8, (H, W) grey or (H, W, 3) colour, by the rules in `decode_pixels`."""
    mode = img.mode
    if mode in _SIXTEEN_BIT or (mode == "I" and img.format == "PPM"):
        values = np.asarray(img).astype(np.int64)
        _refuse_keyed(img, values, shown)
        _check_range(values, 0, 65535, "16-bit", shown)
        return ((values + 128) // 257).astype(np.uint8)  # (v + 128) // 257 == round(v / 257): no ties
    if mode == "I":
        values = np.asarray(img).astype(np.int64)
        _refuse_keyed(img, values, shown)
        _check_range(values, 0, 255, "32-bit integer", shown)
        return values.astype(np.uint8)
    if mode == "F":
        return _from_float(np.asarray(img, dtype=np.float64), shown)
    if mode in _PALETTE_MODES or (mode in ("1", "L", "RGB") and "transparency" in img.info):
        # Pillow applies a palette's alpha or a colour key while converting; the alpha is then checked.
        rgba = _opaque(np.asarray(img.convert("RGBA")), shown)
        grey = _grey_palette(img) if mode in _PALETTE_MODES else mode != "RGB"
        return rgba[..., 0] if grey else rgba[..., :3]
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("LA", "La"):
        return _opaque(np.asarray(img), shown)[..., 0]
    if mode in ("RGBA", "RGBa", "RGBX"):
        pixels = np.asarray(img)
        return (_opaque(pixels, shown) if mode != "RGBX" else pixels)[..., :3]
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode in COLOUR_MODES:  # CMYK, YCbCr, LAB, HSV
        return np.asarray(img.convert("RGB"))
    raise InputError(f"cannot use image {shown}: its pixel mode {mode!r} is not one gmint reads")


def _opaque(pixels: np.ndarray, shown: str) -> np.ndarray:
    """`pixels` (alpha last) if every pixel is fully opaque; else the one-line refusal."""
    clear = int(np.count_nonzero(pixels[..., -1] != 255))
    if clear:
        raise InputError(f"cannot use image {shown}: {clear} of its {pixels[..., -1].size} pixels "
                         f"{'is' if clear == 1 else 'are'} not fully opaque, and compositing them onto a background "
                         "would be a guess; save it without transparency")
    return pixels


def _refuse_keyed(img: Image.Image, values: np.ndarray, shown: str) -> None:
    """Refuse a grey image whose transparency key (a PNG tRNS value) matches any pixel."""
    key = img.info.get("transparency")
    if isinstance(key, int) and not isinstance(key, bool):
        _opaque(np.where(values == key, 0, 255)[..., None], shown)


def _check_range(values: np.ndarray, low: int, high: int, what: str, shown: str) -> None:
    """Refuse integer pixels outside low..high: no scale to 8 bits is known for them."""
    if values.size and (values.min() < low or values.max() > high):
        raise InputError(f"cannot use image {shown}: its {what} pixels range {values.min()}..{values.max()}, "
                         f"outside {low}..{high}, so their scale is unknown; save it as an 8- or 16-bit image")


def _from_float(values: np.ndarray, shown: str) -> np.ndarray:
    """Floating-point pixels in [0, 1] (x 255) or [0, 255], rounded to uint8; anything else refused."""
    if not np.isfinite(values).all():
        raise InputError(f"cannot use image {shown}: its floating-point pixels include NaN or infinity")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise InputError(f"cannot use image {shown}: its floating-point pixels range {low:g}..{high:g}, neither "
                         "0..1 nor 0..255, so their scale is unknown; save it as an 8- or 16-bit image")
    return np.rint(values * 255 if high <= 1 else values).astype(np.uint8)


def _grey_palette(img: Image.Image) -> bool:
    """Whether every entry of `img`'s palette is grey (R = G = B): its image is then read as one channel."""
    entries = np.asarray(img.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    return bool((entries == entries[:, :1]).all())


def _first_line(err: BaseException) -> str:
    return str(err).strip().split("\n")[0][:200] or type(err).__name__


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
    h, w, c = shape
    pixels = decode_pixels(path)
    if native is not None and (pixels.shape[1], pixels.shape[0]) != native:
        raise InputError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]}, its annotation says "
                         f"{native[0]}x{native[1]}")
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
            raise InputError(f"{path}: image is {out.width}x{out.height}, expected {w}x{h}")
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
