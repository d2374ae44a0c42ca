"""Candidates of an audit as the audited model expects them: images from a folder, or rows of a dataset.

A Weight Modifier needs each sample's true label, in the audited model's own class indices, and an image
of the model's input shape; candidates from elsewhere are relabelled, resized and channel-matched here.
Errors say what is wrong and what would fix it in the library's terms; the CLI names its own options.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.errors import InputError
from gmint.features.layers import weight_layers
from gmint.models.io import AuditedModel

# ITU-R 601-2 luma, the weights PIL uses for mode "L".
LUMA = np.array([0.299, 0.587, 0.114])
# The remedy `match_channels` names for colour candidates of a greyscale model; callers with an option of
# their own for it (the CLI's --to-grey) put its name in this phrase's place.
TO_GREY_HINT = "convert them explicitly (to_grey: luma)"


def model_input(audited: AuditedModel) -> tuple[int | None, int | None]:
    """(channels, side) of the audited model's input: as its description records them, else the channels of
    a first convolution; None where unknown."""
    description = audited.description
    if description is not None:
        return description.input_channels, description.input_size
    names = weight_layers(audited.module)
    weight = dict(audited.module.named_parameters())[names[0]] if names else None
    return (int(weight.shape[1]) if weight is not None and weight.dim() == 4 else None), None


def model_classes(audited: AuditedModel) -> list[str] | None:
    """The audited model's class names (index = label), or `0..k-1` when only the count is recorded."""
    description = audited.description
    if description is not None and description.classes is not None:
        return list(description.classes)
    count = description.num_classes if description is not None else audited.meta.get("num_classes")
    if isinstance(count, int):
        return [str(c) for c in range(count)]
    return None


def load_image_folder(folder: Path, audited: AuditedModel) -> ImageSet:
    """Candidate images from `folder/<class name>/*`, labelled with the audited model's class indices.

    A Weight Modifier needs each image's true label, so images sit in folders named after the model's
    classes (any subset of them). Images of another size are resized to the model's input side (PIL
    bilinear, aspect not kept), as the imagefolder reader does; channels are matched by `match_channels`.
    """
    from gmint.data.readers import load_dataset  # reads image files: imported only when scoring a folder

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} not found")
    if not any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        raise InputError(f"{folder} has no class folders: put each image under {folder}/<class name>/ (the "
                         "label is needed to compute its Weight Modifier)")
    _, side = model_input(audited)
    data = load_dataset("imagefolder", folder, cache=False, size=side)
    return relabel(data, model_classes(audited))


def relabel(data: ImageSet, classes: Sequence[str] | None) -> ImageSet:
    """Map a folder's class names onto the audited model's labels (a folder may hold only some classes).

    Without recorded class names the folders must be named by class index (`0`, `1`, ...).
    """
    lookup = {name: i for i, name in enumerate(classes)} if classes is not None else None
    index: list[int] = []
    for name in data.classes:
        if lookup is not None and name in lookup:
            index.append(lookup[name])
        elif lookup is None and name.isdigit():
            index.append(int(name))
        else:
            known = ", ".join(classes[:12]) + (", …" if len(classes) > 12 else "") if classes else "0, 1, …"
            raise InputError(f"class folder '{name}' is not a class of the audited model (its classes: {known})")
    labels = np.asarray(index, dtype=np.int64)[data.labels]
    names = tuple(classes) if classes is not None else tuple(str(i) for i in range(max(index) + 1))
    return replace(data, labels=labels, classes=names)


def match_channels(data: ImageSet, channels: int | None, *, to_grey: bool = False) -> ImageSet:
    """Candidate images with the audited model's channel count.

    Grey → RGB repeats the channel (lossless). RGB → grey is done only when the image is grey already
    (R = G = B) or with `to_grey` (luma, as PIL's mode "L"): converting colour images silently would
    audit images the model was never shown.
    """
    have = data.images.shape[-1]
    if channels is None or have == channels:
        return data
    if have == 1 and channels == 3:
        return replace(data, images=np.repeat(data.images, 3, axis=-1))
    if have == 3 and channels == 1:
        rgb = data.images
        if (rgb == rgb[..., :1]).all():
            return replace(data, images=np.ascontiguousarray(rgb[..., :1]))
        if not to_grey:
            raise InputError(f"the candidate images are colour (RGB) but the audited model takes greyscale; "
                             f"{TO_GREY_HINT} if that is what it was trained on")
        grey = np.rint(rgb.astype(np.float64) @ LUMA).clip(0, 255).astype(np.uint8)[..., None]
        return replace(data, images=grey)
    raise InputError(f"the candidate images have {have} channels, the audited model takes {channels}")


def holdout_rows(split: MembershipSplit, *, members: bool) -> np.ndarray:
    """The split's held-out members (or externals): rows no MINT classifier of that split was fitted on."""
    index = np.intersect1d(split.holdout, split.members if members else split.external)
    if len(index) == 0:
        raise InputError(f"the split holds out no {'members' if members else 'external samples'}")
    return index


def read_row_ids(path: Path) -> np.ndarray:
    """Dataset rows listed in a JSON file: a non-empty list of integer row ids."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"row-id file {path} not found")
    try:
        listed = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(listed, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in listed):
        raise InputError(f"{path} must hold a JSON list of integer row ids")
    if not listed:
        raise InputError(f"{path} lists no rows")
    return np.asarray(listed, dtype=np.int64)


def subsample(index: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of `size` candidate rows (sorted), e.g. to audit a set of a given size."""
    if not 0 < size <= len(index):
        raise InputError(f"a subset of {size} must be between 1 and the {len(index)} candidates")
    return np.sort(np.random.default_rng(seed).choice(index, size, replace=False))
