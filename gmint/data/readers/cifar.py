"""CIFAR-10 and CIFAR-100: the official python pickles, or (CIFAR-10) class-per-folder JPEGs.

CIFAR's python format is a pickle, and unpickling can run code. gmint reads pickles only from under the data
root the user names, and through an unpickler that admits nothing but numpy arrays, lists and bytes.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.readers.common import (
    Entry,
    Part,
    Source,
    assemble,
    check_labels,
    decode_set,
    image_files,
    locate,
    register_reader,
    subfolders,
)
from gmint.errors import InputError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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
        """The global `module.name` if ALLOWED lists it; anything else is refused."""
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
    check_labels(labels, n_classes, path)
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
            parts.append(Part(part, images, labels, np.full(len(labels), filename)))
    return assemble(name, folder, parts, classes)


def _read_class_folders(name: str, folder: Path, classes: tuple[str, ...],
                        shape: tuple[int, int, int]) -> ImageSet:
    """`folder/{train,test}/<class>/*` with a fixed class list: train then test, class by class, files in
    natural order. Every class folder must exist in each part present; any other folder is an error."""
    entries: list[Entry] = []
    for part in ("train", "test"):
        part_dir = folder / part
        if not part_dir.is_dir():
            continue
        found = subfolders(part_dir)
        unexpected = [c for c in found if c not in classes]
        if unexpected:
            raise InputError(f"{name}: unexpected folder {part_dir / unexpected[0]}; the class folders are "
                             f"{', '.join(classes)}")
        missing = [c for c in classes if c not in found]
        if missing:
            raise InputError(f"{name}: missing class folder {part_dir / missing[0]}")
        entries += [(part, path, label) for label, c in enumerate(classes)
                    for path in image_files(part_dir / c)]
    return decode_set(name, folder, entries, classes, shape)


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


@register_reader("cifar10", sources=_CIFAR10_SOURCES)
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


@register_reader("cifar100", sources=_CIFAR100_SOURCES)
def read_cifar100(root: Path | str | None = None) -> ImageSet:
    """CIFAR-100 with its 100 fine labels, (N, 32, 32, 3): `train` then `test` pickle, in file order."""
    _, folder = locate("cifar100", root)
    return _read_cifar_pickles("cifar100", folder, "meta", b"fine_label_names", b"fine_labels",
                               (("train", "train"), ("test", "test")))
