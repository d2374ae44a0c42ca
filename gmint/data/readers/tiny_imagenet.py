"""Tiny ImageNet's official layout: train/<wnid>/images/, and val/ labelled by val_annotations.txt."""

from __future__ import annotations

from pathlib import Path

from gmint.data.base import ImageSet
from gmint.data.readers.common import (
    Entry,
    Source,
    decode_set,
    image_files,
    locate,
    natural_key,
    register_reader,
    subfolders,
)
from gmint.errors import InputError

_TINY_SOURCES = (Source(
    "official", ("tiny-imagenet-200", ""),
    lambda folder: (folder / "wnids.txt").is_file(),
    "tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/ and val/ (official layout)",
),)


def _tiny_train(folder: Path, wnids: tuple[str, ...]) -> list[Entry]:
    """train/<wnid>/images/*, class by class in wnids.txt order; none when train/ is absent."""
    train = folder / "train"
    if not train.is_dir():
        return []
    unexpected = [w for w in subfolders(train) if w not in wnids]
    if unexpected:
        raise InputError(f"tiny_imagenet: {train / unexpected[0]} is not a class listed in "
                         f"{folder / 'wnids.txt'}")
    entries: list[Entry] = []
    for label, wnid in enumerate(wnids):
        images = train / wnid / "images"
        if not images.is_dir():
            raise InputError(f"tiny_imagenet: missing folder {images} (class {wnid} of wnids.txt)")
        entries += [("train", path, label) for path in image_files(images)]
    return entries


def _tiny_val(folder: Path, wnids: tuple[str, ...]) -> list[Entry]:
    """val/images labelled by val_annotations.txt (file, wnid, box, tab-separated), ordered by class then
    numeric index like train."""
    val = folder / "val"
    if not val.is_dir():
        return []
    annotations = val / "val_annotations.txt"
    if not annotations.is_file():
        raise InputError(f"tiny_imagenet: missing {annotations} (the labels of val/images)")
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    entries: list[Entry] = []
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
    return sorted(entries, key=lambda e: (e[2], natural_key(e[1].name)))


@register_reader("tiny_imagenet", "tiny-imagenet", sources=_TINY_SOURCES)
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
    return decode_set("tiny_imagenet", folder, entries, wnids, (64, 64, 3))
