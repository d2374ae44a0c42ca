"""Dataset readers: each official on-disk layout → one `ImageSet`, registered in `DATASETS`.

A reader takes the data root — the folder holding the dataset's usual folder (`MNIST/`, `GTSRB/`, ...) or
that folder itself — and keyword options. `load_dataset` is the entry point: it resolves the root and serves
decoded images from the cache (`gmint.data.cache`) while the source files are unchanged.

Row order is deterministic (official part `train` before `test`, then the order each reader documents), so
`sample_ids`, the row positions, are stable across machines and runs and a membership manifest can name them.

One module per dataset family (`mnist`, `cifar`, `gtsrb`, `tiny_imagenet`, `imagefolder`), each registering
its readers on import; what they share is in `common`, and how one image file is decoded in `pixels`.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from functools import partial
from pathlib import Path

from gmint.data.base import DATASETS, ImageSet, Reader
from gmint.data.cache import cached
from gmint.data.readers.cifar import CIFAR10_CLASSES, read_cifar10, read_cifar100
from gmint.data.readers.common import SOURCES, locate, resolve_root
from gmint.data.readers.gtsrb import read_gtsrb
from gmint.data.readers.imagefolder import read_imagefolder
from gmint.data.readers.mnist import read_mnist
from gmint.data.readers.tiny_imagenet import read_tiny_imagenet
from gmint.errors import InputError

# The readers are reachable here too (`readers.read_gtsrb(...)`): one import gives the whole family.
__all__ = ["CIFAR10_CLASSES", "load_dataset", "locate", "read_cifar10", "read_cifar100", "read_gtsrb",
           "read_imagefolder", "read_mnist", "read_tiny_imagenet", "resolve_root"]


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

    Datasets without files on disk (`digits`) need no root and are not cached. The folder read is the
    returned set's `root` (resolved), so stores can tell its rows from another folder's.

    Args:
        name: a registered dataset (`DATASETS`), e.g. `mnist`.
        root: the data root, or the dataset's own folder.
        cache: serve from and fill the decoded-image cache; off, every call decodes.
        **options: the reader's keyword options (`size`, `layout`, ...); unknown ones are refused.
    """
    reader = DATASETS.get(name)
    options = _options(name, reader, options)
    if name not in SOURCES:
        return reader(root, **options)
    # Readers with several layouts take a `layout` option; it decides which folder is read.
    _, folder = locate(name, root, str(options.get("layout", "auto")))
    # The folder read is part of the rows' identity (`ImageSet.root`), which every store records.
    if not cache:
        return replace(reader(folder, **options), root=folder.resolve())
    reader_id = f"{reader.__module__}.{reader.__qualname__}"
    data = cached(name, reader_id, folder, options, partial(reader, folder, **options))
    return replace(data, root=folder.resolve())
