"""Dataset readers: each official on-disk layout → one `ImageSet`, registered in `DATASETS`.

A reader takes the data root — the folder holding the dataset's usual folder (`MNIST/`, `GTSRB/`, ...) or
that folder itself — and keyword options. `load_dataset` is the entry point: it resolves the root and serves
decoded images from the cache (`gmint.data.cache`) while the source files are unchanged.

Row order is deterministic (official part `train` before `test`, then the order each reader documents), so
`sample_ids`, the row positions, are stable across machines and runs and a membership manifest can name them.

CIFAR's python format is a pickle, and unpickling can run code. gmint reads pickles only from under the data
root the user names, and through an unpickler that admits nothing but numpy arrays, lists and bytes.
"""

from __future__ import annotations

import csv
import gzip
import inspect
import math
import os
import pickle
import re
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from gmint.data.base import DATASETS, ImageSet, Reader
from gmint.data.cache import cached
from gmint.errors import InputError
from gmint.progress import progress_bar
from gmint.registry import Registry

ROOT_HINT = "pass --data-root or set GMINT_DATA"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GTSRB_CLASSES = tuple(f"{c:05d}" for c in range(43))
_PROGRESS_MIN = 1000
_CHUNK = 128
_WORKERS = min(8, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------------------
# Where the data is


def resolve_root(root: Path | str | None) -> Path:
    """The data root: `root` if given, else $GMINT_DATA — never a guess, so a run states where its data is."""
    if root is None:
        root = os.environ.get("GMINT_DATA") or None
        if root is None:
            raise InputError(f"no data root given: {ROOT_HINT}")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise InputError(f"data root {path} is not a folder; {ROOT_HINT}")
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
        for sub in self.folders:
            folder = root / sub
            if folder.is_dir() and self.looks_like(folder):
                return folder
        return None


# Each dataset's layouts, preferred first; `load_dataset` needs the folder before reading, to key the cache.
SOURCES: Registry[tuple[Source, ...]] = Registry("dataset source")


def _register(name: str, *aliases: str, sources: tuple[Source, ...]) -> Callable[[Reader], Reader]:
    """Register a reader in DATASETS and its layouts in SOURCES under the same names."""

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
    raise InputError(f"{name}: no {expected} under {base}; {ROOT_HINT}")


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _natural(name: str) -> tuple[str | int, ...]:
    """Sort key that reads digit runs as numbers, so 9.jpg comes before 10.jpg."""
    return tuple(int(token) if token.isdecimal() else token for token in re.split(r"(\d+)", name))


def _image_files(folder: Path) -> list[Path]:
    files = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return sorted((p for p in files if p.is_file()), key=lambda p: _natural(p.name))


def _positive_int(name: str, option: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{name}: option {option} must be a positive integer, got {value!r}")
    return value


def _check_labels(labels: np.ndarray, n_classes: int, source: Path) -> np.ndarray:
    """Labels outside 0..n_classes-1 are an error naming the file they came from."""
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise InputError(f"{source}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{n_classes - 1}")
    return labels


# ---------------------------------------------------------------------------------------------------------
# Decoding image files


def _decode(path: Path, shape: tuple[int, int, int], *, resize: bool = False,
            box: tuple[int, int, int, int] | None = None,
            native: tuple[int, int] | None = None) -> np.ndarray:
    """One image file → (H, W, C) uint8 of `shape` (C = 1 grey, 3 RGB).

    `box` crops first (PIL box, right/lower edges exclusive); `native` is the (W, H) an annotation promises.
    A size other than `shape` is an error unless `resize` (PIL bilinear, which filters when shrinking).
    """
    h, w, c = shape
    mode = "L" if c == 1 else "RGB"
    try:
        with Image.open(path) as img:
            if native is not None and img.size != native:
                raise InputError(f"{path}: image is {img.width}x{img.height}, its annotation says "
                                 f"{native[0]}x{native[1]}")
            out = img.crop(box) if box is not None else img
            if out.mode != mode:
                out = out.convert(mode)
            if out.size != (w, h):
                if not resize:
                    raise InputError(f"{path}: image is {out.width}x{out.height}, expected {w}x{h}")
                out = out.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(out)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot decode image {path}: {err}") from None
    return pixels.reshape(h, w, c)


def _probe(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (W, H)) from the file header alone, without decoding pixels."""
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot decode image {path}: {err}") from None


def _decode_all(jobs: Sequence[Callable[[], np.ndarray]], shape: tuple[int, int, int],
                what: str) -> np.ndarray:
    """Run decode jobs on a thread pool (PIL releases the GIL while decoding) into one (N, *shape) array.

    Jobs go in chunks: per-future overhead rivals decoding a 32x32 JPEG. Chunks are awaited in order, so
    the bad file reported is the first in the dataset's order.
    """
    images = np.empty((len(jobs), *shape), dtype=np.uint8)

    def run(chunk: range) -> int:
        for i in chunk:
            images[i] = jobs[i]()
        return len(chunk)

    chunks = [range(i, min(i + _CHUNK, len(jobs))) for i in range(0, len(jobs), _CHUNK)]
    with ThreadPoolExecutor(_WORKERS) as pool, \
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
_Entry = tuple[str, Path, int]


def _decode_set(name: str, folder: Path, entries: Sequence[_Entry], classes: tuple[str, ...],
                shape: tuple[int, int, int], *, jobs: Sequence[Callable[[], np.ndarray]] | None = None,
                groups: np.ndarray | None = None) -> ImageSet:
    """Decode the listed files (plain `_decode` unless `jobs` says otherwise) into an ImageSet."""
    if not entries:
        raise InputError(f"{name}: no images found under {folder}")
    if jobs is None:
        jobs = [partial(_decode, path, shape) for _, path, _ in entries]
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


class _Part(NamedTuple):
    """One official part of an array-file dataset (IDX, pickle), decoded."""

    part: str
    images: np.ndarray
    labels: np.ndarray
    files: np.ndarray


def _assemble(name: str, folder: Path, parts: Sequence[_Part], classes: tuple[str, ...]) -> ImageSet:
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


# ---------------------------------------------------------------------------------------------------------
# MNIST: IDX files

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


@_register("mnist", sources=_MNIST_SOURCES)
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
        labels = _check_labels(read_idx(labels_path, IDX_LABELS).astype(np.int64), 10, labels_path)
        if len(images) != len(labels):
            raise InputError(f"mnist: {images_path} holds {len(images)} images but {labels_path.name} "
                             f"{len(labels)} labels")
        parts.append(_Part(part, images, labels, np.full(len(labels), images_path.name)))
    return _assemble("mnist", folder, parts, tuple(str(d) for d in range(10)))


# ---------------------------------------------------------------------------------------------------------
# CIFAR: python pickles, or class-per-folder images


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only the globals CIFAR's pickles use, so a tampered file fails instead of running code.

    numpy rebuilds arrays with `_reconstruct`/`ndarray`/`dtype`; `_codecs.encode` is how Python 3 writes
    bytes at protocol 2.
    """

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}, which CIFAR files never hold")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    """A CIFAR pickle (Python 2 strings kept as bytes, as in the official files) through `_ArrayUnpickler`."""
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # a damaged pickle can raise almost any exception type
        raise InputError(f"cannot read {path} as a CIFAR pickle: {err}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a CIFAR pickle (holds a {type(obj).__name__}, expected a dict)")
    return obj


def _cifar_batch(path: Path, label_key: bytes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3), labels) of one batch: b'data' rows are 3072 bytes, R then G then B planes."""
    batch = _load_pickle(path)
    data = batch.get(b"data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise InputError(f"{path}: not a CIFAR batch (b'data' must be an (N, 3072) uint8 array)")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not a CIFAR batch (no list of integers under {label_key!r})") from None
    if labels.shape != (len(data),):
        raise InputError(f"{path}: holds {len(data)} images but {labels.size} labels")
    _check_labels(labels, n_classes, path)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_cifar_pickles(name: str, folder: Path, meta_file: str, names_key: bytes, label_key: bytes,
                        batches: Sequence[tuple[str, str]]) -> ImageSet:
    """The batches present (part, file name), in the given order, with class names from the meta pickle."""
    meta_path = folder / meta_file
    if not meta_path.is_file():
        raise InputError(f"{name}: missing {meta_path} (the class names)")
    names = _load_pickle(meta_path).get(names_key)
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise InputError(f"{meta_path}: no list of class names under {names_key!r}")
    classes = tuple(n.decode() for n in names)
    parts = []
    for part, filename in batches:
        path = folder / filename
        if path.is_file():
            images, labels = _cifar_batch(path, label_key, len(classes))
            parts.append(_Part(part, images, labels, np.full(len(labels), filename)))
    return _assemble(name, folder, parts, classes)


def _read_class_folders(name: str, folder: Path, classes: tuple[str, ...],
                        shape: tuple[int, int, int]) -> ImageSet:
    """`folder/{train,test}/<class>/*` with a fixed class list: train then test, class by class, files in
    natural order. Every class folder must exist in each part present; any other folder is an error."""
    entries: list[_Entry] = []
    for part in ("train", "test"):
        part_dir = folder / part
        if not part_dir.is_dir():
            continue
        found = _subfolders(part_dir)
        unexpected = [c for c in found if c not in classes]
        if unexpected:
            raise InputError(f"{name}: unexpected folder {part_dir / unexpected[0]}; the class folders are "
                             f"{', '.join(classes)}")
        missing = [c for c in classes if c not in found]
        if missing:
            raise InputError(f"{name}: missing class folder {part_dir / missing[0]}")
        entries += [(part, path, label) for label, c in enumerate(classes)
                    for path in _image_files(part_dir / c)]
    return _decode_set(name, folder, entries, classes, shape)


_CIFAR10_BATCHES = (*(("train", f"data_batch_{i}") for i in range(1, 6)), ("test", "test_batch"))
_CIFAR10_SOURCES = (
    Source("pickle", ("cifar-10-batches-py", ""),
           lambda folder: any((folder / f).is_file()
                              for f in ("batches.meta", *(f for _, f in _CIFAR10_BATCHES))),
           "cifar-10-batches-py/ (python pickles)"),
    Source("folders", ("cifar-10-images", ""),
           lambda folder: (folder / "train").is_dir() or (folder / "test").is_dir(),
           "cifar-10-images/{train,test}/<class>/NNNN.jpg (JPEG folders)"),
)


@_register("cifar10", sources=_CIFAR10_SOURCES)
def read_cifar10(root: Path | str | None = None, *, layout: str = "auto") -> ImageSet:
    """CIFAR-10, (N, 32, 32, 3), train then test; `layout` `pickle`, `folders` or `auto` (pickles first).

    `pickle`: `cifar-10-batches-py/`, exact pixels; data_batch_1..5 (those present) then test_batch, in batch
    order. `folders`: `cifar-10-images/{train,test}/<class>/NNNN.jpg`, lossy JPEG; class by class in the
    official class order, files numerically. The two orders differ, and so do the sample ids.
    """
    kind, folder = locate("cifar10", root, layout)
    if kind == "pickle":
        return _read_cifar_pickles("cifar10", folder, "batches.meta", b"label_names", b"labels",
                                   _CIFAR10_BATCHES)
    return _read_class_folders("cifar10", folder, CIFAR10_CLASSES, (32, 32, 3))


_CIFAR100_SOURCES = (Source(
    "pickle", ("cifar-100-python", ""),
    lambda folder: any((folder / f).is_file() for f in ("meta", "train", "test")),
    "cifar-100-python/{train,test,meta} (python pickles)",
),)


@_register("cifar100", sources=_CIFAR100_SOURCES)
def read_cifar100(root: Path | str | None = None) -> ImageSet:
    """CIFAR-100 with its 100 fine labels, (N, 32, 32, 3): `train` then `test` pickle, in file order."""
    _, folder = locate("cifar100", root)
    return _read_cifar_pickles("cifar100", folder, "meta", b"fine_label_names", b"fine_labels",
                               (("train", "train"), ("test", "test")))


# ---------------------------------------------------------------------------------------------------------
# GTSRB: official training layout, PPM + GT-000CC.csv per class

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


@_register("gtsrb", sources=_GTSRB_SOURCES)
def read_gtsrb(root: Path | str | None = None, *, size: int = 64, roi: bool = False) -> ImageSet:
    """GTSRB's training images, resized to size x size (PIL bilinear), cropped to the annotated ROI if `roi`.

    Labels come from the class folders, named `00000`..`00042` (also the class names), and each CSV's ClassId
    must agree. Rows are ordered by class, track, frame; `groups` numbers the tracks (class, track) in that
    order, since the ~30 frames of a track show one physical sign and must stay on one side of a split. All
    rows are part `train` (the official test set has no tracks). The ROI's X2/Y2 are taken as exclusive edges,
    which leaves the documented border of at least 5 px on every side.
    """
    size = _positive_int("gtsrb", "size", size)
    _, folder = locate("gtsrb", root)
    signs: list[_Sign] = []
    for class_name in _subfolders(folder):
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
    jobs = [partial(_decode, s.path, shape, resize=True, box=s.roi if roi else None, native=s.size)
            for s in signs]
    entries = [("train", s.path, s.label) for s in signs]
    return _decode_set("gtsrb", folder, entries, GTSRB_CLASSES, shape, jobs=jobs, groups=groups)


# ---------------------------------------------------------------------------------------------------------
# Tiny ImageNet

_TINY_SOURCES = (Source(
    "official", ("tiny-imagenet-200", ""),
    lambda folder: (folder / "wnids.txt").is_file(),
    "tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/ and val/ (official layout)",
),)


def _tiny_train(folder: Path, wnids: tuple[str, ...]) -> list[_Entry]:
    train = folder / "train"
    if not train.is_dir():
        return []
    unexpected = [w for w in _subfolders(train) if w not in wnids]
    if unexpected:
        raise InputError(f"tiny_imagenet: {train / unexpected[0]} is not a class listed in "
                         f"{folder / 'wnids.txt'}")
    entries: list[_Entry] = []
    for label, wnid in enumerate(wnids):
        images = train / wnid / "images"
        if not images.is_dir():
            raise InputError(f"tiny_imagenet: missing folder {images} (class {wnid} of wnids.txt)")
        entries += [("train", path, label) for path in _image_files(images)]
    return entries


def _tiny_val(folder: Path, wnids: tuple[str, ...]) -> list[_Entry]:
    """val/images labelled by val_annotations.txt (file, wnid, box, tab-separated), ordered by class then
    numeric index like train."""
    val = folder / "val"
    if not val.is_dir():
        return []
    annotations = val / "val_annotations.txt"
    if not annotations.is_file():
        raise InputError(f"tiny_imagenet: missing {annotations} (the labels of val/images)")
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    entries: list[_Entry] = []
    for line, text in enumerate(annotations.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        filename, wnid, *_ = [*text.split("\t"), ""]
        if wnid not in label_of:
            raise InputError(f"{annotations} line {line}: class {wnid!r} is not listed in wnids.txt")
        path = val / "images" / filename
        if not path.is_file():
            raise InputError(f"{annotations} line {line}: the listed file {path} is missing")
        entries.append(("test", path, label_of[wnid]))
    return sorted(entries, key=lambda e: (e[2], _natural(e[1].name)))


@_register("tiny_imagenet", "tiny-imagenet", sources=_TINY_SOURCES)
def read_tiny_imagenet(root: Path | str | None = None) -> ImageSet:
    """Tiny ImageNet, (N, 64, 64, 3) (greyscale files made RGB): train, then val as part `test`.

    Classes are the wnids in wnids.txt order; rows go class by class, files by numeric index. The unlabelled
    official test/ folder is not read.
    """
    _, folder = locate("tiny_imagenet", root)
    wnids_path = folder / "wnids.txt"
    wnids = tuple(line.strip() for line in wnids_path.read_text().splitlines() if line.strip())
    if not wnids or len(set(wnids)) != len(wnids):
        raise InputError(f"{wnids_path}: expected one distinct wnid per line")
    entries = _tiny_train(folder, wnids) + _tiny_val(folder, wnids)
    return _decode_set("tiny_imagenet", folder, entries, wnids, (64, 64, 3))


# ---------------------------------------------------------------------------------------------------------
# Any class-per-folder image set

_IMAGEFOLDER_SOURCES = (Source(
    "folders", ("",),
    lambda folder: bool(_subfolders(folder)),
    "<class>/ folders of images, optionally under train/ and test/",
),)
_GREY_MODES = ("1", "L")


def _imagefolder_parts(folder: Path) -> list[tuple[str, Path]]:
    """(part, folder holding the class folders): train/ and test/ when present, else the root as `train`."""
    splits = [part for part in ("train", "test") if (folder / part).is_dir()]
    if not splits:
        return [("train", folder)]
    others = [name for name in _subfolders(folder) if name not in splits]
    if others:
        raise InputError(f"imagefolder: {folder} mixes part folders ({', '.join(splits)}) with other folders "
                         f"({', '.join(others)}); put every class folder under train/ or test/")
    return [(part, folder / part) for part in splits]


@_register("imagefolder", sources=_IMAGEFOLDER_SOURCES)
def read_imagefolder(root: Path | str | None = None, *, size: int | None = None,
                     channels: int | None = None) -> ImageSet:
    """Any `root/<class>/*` or `root/{train,test}/<class>/*` image set (png, jpg, jpeg, ppm, bmp).

    Classes are the folder names sorted (over all parts); rows go part, class, file in natural order. Images
    keep their size when all agree, else `size` must be given and every image is resized to size x size
    (bilinear, aspect not kept). `channels` is 1 or 3; by default 1 only when every image is greyscale.
    """
    if size is not None:
        size = _positive_int("imagefolder", "size", size)
    if channels not in (None, 1, 3):
        raise InputError(f"imagefolder: option channels must be 1 or 3, got {channels!r}")
    _, folder = locate("imagefolder", root)
    parts = _imagefolder_parts(folder)
    classes = tuple(sorted({name for _, part_dir in parts for name in _subfolders(part_dir)}))
    entries: list[_Entry] = [(part, path, label) for part, part_dir in parts
                            for label, name in enumerate(classes) if (part_dir / name).is_dir()
                            for path in _image_files(part_dir / name)]
    if not entries:
        raise InputError(f"imagefolder: no {', '.join(IMAGE_SUFFIXES)} files in the class folders of "
                         f"{folder}")
    with ThreadPoolExecutor(_WORKERS) as pool:
        headers = list(pool.map(_probe, [path for _, path, _ in entries]))
    if channels is None:
        channels = 1 if all(mode in _GREY_MODES for mode, _ in headers) else 3
    if size is None:
        (w, h) = headers[0][1]
        odd = next((i for i, (_, dims) in enumerate(headers) if dims != (w, h)), None)
        if odd is not None:
            ow, oh = headers[odd][1]
            raise InputError(f"imagefolder: {entries[odd][1]} is {ow}x{oh} but {entries[0][1]} is {w}x{h}; "
                             "give a size N to resize every image to NxN")
        shape = (h, w, channels)
    else:
        shape = (size, size, channels)
    jobs = [partial(_decode, path, shape, resize=True) for _, path, _ in entries]
    return _decode_set("imagefolder", folder, entries, classes, shape, jobs=jobs)


# ---------------------------------------------------------------------------------------------------------
# The entry point


def _options(name: str, reader: Reader, options: dict[str, object]) -> dict[str, object]:
    """`options` completed with the reader's defaults, so equal reads share one cache entry."""
    defaults = {p.name: p.default for p in inspect.signature(reader).parameters.values() if p.name != "root"}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(f"dataset '{name}' has no option '{unknown[0]}'; its options: "
                         f"{', '.join(defaults) or 'none'}")
    return {**defaults, **options}


def load_dataset(name: str, root: Path | str | None = None, *, cache: bool = True,
                 **options: object) -> ImageSet:
    """Dataset `name` from `root` (else $GMINT_DATA), decoded once and then served from the cache.

    Datasets without files on disk (`digits`) need no root and are not cached.
    """
    reader = DATASETS.get(name)
    options = _options(name, reader, options)
    if name not in SOURCES:
        return reader(root, **options)
    # Readers with several layouts take a `layout` option; it decides which folder is read.
    _, folder = locate(name, root, str(options.get("layout", "auto")))
    if not cache:
        return reader(folder, **options)
    reader_id = f"{reader.__module__}.{reader.__qualname__}"
    return cached(name, reader_id, folder, options, partial(reader, folder, **options))
