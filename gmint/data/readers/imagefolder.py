"""Any class-per-folder image set: `root/<class>/*`, or `root/{train,test}/<class>/*`."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from gmint.data.base import ImageSet
from gmint.data.readers.common import (
    IMAGE_SUFFIXES,
    WORKERS,
    Entry,
    Source,
    decode_image,
    decode_set,
    image_files,
    locate,
    positive_int,
    register_reader,
    subfolders,
)
from gmint.data.readers.pixels import image_header
from gmint.errors import InputError, Remedy

_IMAGEFOLDER_SOURCES = (Source(
    "folders", ("",),
    lambda folder: bool(subfolders(folder)),
    "<class>/ folders of images, optionally under train/ and test/",
),)


def _imagefolder_parts(folder: Path) -> list[tuple[str, Path]]:
    """(part, folder holding the class folders): train/ and test/ when present, else the root as `train`."""
    splits = [part for part in ("train", "test") if (folder / part).is_dir()]
    if not splits:
        return [("train", folder)]
    others = [name for name in subfolders(folder) if name not in splits]
    if others:
        raise InputError(f"imagefolder: {folder} mixes part folders ({', '.join(splits)}) with other folders "
                         f"({', '.join(others)}); put every class folder under train/ or test/")
    return [(part, folder / part) for part in splits]


@register_reader("imagefolder", sources=_IMAGEFOLDER_SOURCES)
def read_imagefolder(root: Path | str | None = None, *, size: int | None = None,
                     channels: int | None = None) -> ImageSet:
    """Any `root/<class>/*` or `root/{train,test}/<class>/*` image set (png, jpg, jpeg, ppm, bmp).

    Classes are the folder names sorted (over all parts); rows go part, class, file in natural order. Images
    keep their size when all agree, else `size` must be given and every image is resized to size x size
    (bilinear, aspect not kept). `channels` is 1 or 3; by default 1 only when every image decodes to grey
    (`decode_pixels`: 16-bit grey, a grey palette and the like count as grey).
    """
    if size is not None:
        size = positive_int("imagefolder", "size", size)
    if channels not in (None, 1, 3):
        raise InputError(f"imagefolder: option channels must be 1 or 3, got {channels!r}")
    _, folder = locate("imagefolder", root)
    parts = _imagefolder_parts(folder)
    classes = tuple(sorted({name for _, part_dir in parts for name in subfolders(part_dir)}))
    entries: list[Entry] = [(part, path, label) for part, part_dir in parts
                            for label, name in enumerate(classes) if (part_dir / name).is_dir()
                            for path in image_files(part_dir / name)]
    if not entries:
        raise InputError(f"imagefolder: no {', '.join(IMAGE_SUFFIXES)} files in the class folders of "
                         f"{folder}")
    return read_entries("imagefolder", folder, entries, classes, size=size, channels=channels)


def read_entries(name: str, folder: Path, entries: Sequence[Entry], classes: tuple[str, ...], *,
                 size: int | None = None, channels: int | None = None) -> ImageSet:
    """Decode `entries` (part, file, label) of `folder` into one ImageSet: every image at size x size where
    `size` is given, else at their common size (images of several sizes are refused); greyscale only where
    every image decodes to grey, unless `channels` says. Shared by the imagefolder reader and candidate folders
    of loose images."""
    with ThreadPoolExecutor(WORKERS) as pool:
        headers = list(pool.map(image_header, [path for _, path, _ in entries]))
    if channels is None:
        channels = 1 if all(c == 1 for c, _ in headers) else 3
    if size is None:
        (w, h) = headers[0][1]
        odd = next((i for i, (_, dims) in enumerate(headers) if dims != (w, h)), None)
        if odd is not None:
            ow, oh = headers[odd][1]
            raise InputError(f"{name}: {entries[odd][1]} is {ow}x{oh} but {entries[0][1]} is {w}x{h}",
                             Remedy.RESIZE)
        shape = (h, w, channels)
    else:
        shape = (size, size, channels)
    jobs = [partial(decode_image, path, shape, resize=True) for _, path, _ in entries]
    return decode_set(name, folder, entries, classes, shape, jobs=jobs)
