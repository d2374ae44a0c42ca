"""Candidates of an audit as the audited model expects them: images from a folder, or rows of a dataset.

A Weight Modifier needs each sample's label, in the audited model's own class indices, and an image of the
model's input shape; candidates from elsewhere are relabelled, resized and channel-matched here. The label
is the sample's true class; a candidate without one is refused, or, under the `predicted` label source
(LABEL_SOURCES), scored under the audited model's own prediction, which every output then says.
Errors say what is wrong and what would fix it in the library's terms; the CLI names its own options.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy
from gmint.features.engine.base import predictions
from gmint.features.layers import weight_layers
from gmint.models.io import AuditedModel
from gmint.registry import Registry

# ITU-R 601-2 luma, the weights PIL uses for mode "L".
LUMA = np.array([0.299, 0.587, 0.114])
# The dataset name of a candidate folder: never a registered dataset's, so its row positions are never taken
# for rows of the audit's dataset.
FOLDER = "candidate folder"
# The class of a candidate with no true class (an image loose at the top of a candidate folder); no folder
# can be named so ("/"), so no model class is.
UNLABELLED = "(no class)/"


def model_input(audited: AuditedModel) -> tuple[int | None, int | None]:
    """(channels, side) of the audited model's input: as its description records them, else the channels of
    a first convolution; None where unknown."""
    description = audited.description
    if description is not None and description.input_channels is not None:
        return description.input_channels, description.input_size
    names = weight_layers(audited.module)
    weight = dict(audited.module.named_parameters())[names[0]] if names else None
    return (int(weight.shape[1]) if weight is not None and weight.dim() == 4 else None), None


def model_classes(audited: AuditedModel) -> list[str] | None:
    """The audited model's class names (index = label), or `0..k-1` when only the count is recorded."""
    description = audited.description
    if description is not None and description.classes is not None:
        return list(description.classes)
    count = audited.record.num_classes
    if count is not None:
        return [str(c) for c in range(count)]
    return None


def load_image_folder(folder: Path, audited: AuditedModel, *, labels: str = "true") -> ImageSet:
    """Candidate images from `folder/<class>/*`, labelled with the audited model's class indices.

    A Weight Modifier needs each image's label, so images sit in folders named after the model's classes,
    by name or by index (any subset of them; see `relabel`). Under a label source that predicts (`labels=
    "predicted"`), images may also lie loose at the top of `folder`, with no class: they are labelled with the
    model's prediction when scored (`label_candidates`); under `true` they are refused, never skipped.
    Images of another size are resized to the model's input side (PIL bilinear, aspect not kept), as the
    imagefolder reader does; channels are matched by `match_channels`.

    The set is a source of its own (named FOLDER, `root` the folder): its row ids are positions in it and
    match no dataset's; a file it shares with the audit's dataset is found by its path (see
    `gmint.assess.origin.same_items`).

    Args:
        folder: the candidates' folder.
        audited: the audited model (its classes and input side).
        labels: a name in LABEL_SOURCES: whether images without a class are allowed.
    """
    from gmint.data.readers import load_dataset  # reads image files: imported only when scoring a folder
    from gmint.data.readers.common import image_files, subfolders

    source = LABEL_SOURCES.get(labels)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} not found")
    classed, loose = bool(subfolders(folder)), image_files(folder)
    if loose and not source.predicts:
        if not classed:
            raise InputError(f"{folder} has no class folders: put each image under {folder}/<class name>/ (the "
                             "label is needed to compute its Weight Modifier)", Remedy.PREDICTED_LABELS)
        raise InputError(f"{len(loose)} images at the top of {folder} are in no class folder (e.g. "
                         f"{loose[0].name}): put each under {folder}/<class name>/", Remedy.PREDICTED_LABELS)
    if not classed and not loose:
        raise InputError(f"{folder} holds no images and no class folders")
    _, side = model_input(audited)
    parts = []
    if classed:
        parts.append(relabel(load_dataset("imagefolder", folder, cache=False, size=side), model_classes(audited)))
    if loose:
        parts.append(_read_loose(folder.resolve(), loose, side))
    data = parts[0] if len(parts) == 1 else _stack(parts[0], parts[1])
    return replace(data, name=FOLDER, root=folder.resolve())


def _read_loose(folder: Path, files: Sequence[Path], side: int | None) -> ImageSet:
    """Images at the top of `folder`, all of class UNLABELLED: at `side` x `side` where the model records its
    side, else at their own common size; grey only when every one is."""
    from gmint.data.readers.imagefolder import read_entries

    return read_entries(FOLDER, folder, [("train", path, 0) for path in files], (UNLABELLED,), size=side)


def _stack(classed: ImageSet, loose: ImageSet) -> ImageSet:
    """A folder's images in class folders, then its loose ones (class UNLABELLED, after the model's classes)."""
    a, b = classed.images, loose.images
    if a.shape[1:3] != b.shape[1:3]:
        raise InputError(f"the images in class folders are {a.shape[2]}x{a.shape[1]} but those at the top are "
                         f"{b.shape[2]}x{b.shape[1]}", Remedy.RESIZE)
    if a.shape[3] != b.shape[3]:  # grey beside colour: all colour, as the imagefolder reader would read them
        a, b = (np.repeat(a, 3, axis=-1), b) if a.shape[3] == 1 else (a, np.repeat(b, 3, axis=-1))
    n = len(a) + len(b)
    files = np.concatenate([classed.files if classed.files is not None else np.full(len(a), ""),
                            loose.files if loose.files is not None else np.full(len(b), "")])
    return ImageSet(name=FOLDER, images=np.concatenate([a, b]),
                    labels=np.concatenate([classed.labels, np.full(len(b), len(classed.classes))]),
                    sample_ids=np.arange(n, dtype=np.int64), part=np.concatenate([classed.part, loose.part]),
                    classes=(*classed.classes, UNLABELLED), files=files)


def in_model_classes(data: ImageSet, audited: AuditedModel) -> ImageSet:
    """The dataset labelled in the audited model's class indices, matched by class name (or by index where the
    data's classes are named 0, 1, …); a class the model does not know is refused (see `relabel`)."""
    classes = model_classes(audited)
    return relabel(data, classes) if classes is not None and tuple(classes) != data.classes else data


def relabel(data: ImageSet, classes: Sequence[str] | None) -> ImageSet:
    """Map a folder's class folders onto the audited model's labels (a folder may hold only some classes).

    A class folder is named by the class's name or by its index (`0`, `1`, ...; the only way where the model
    records no names). A folder name that is one class's name and another class's index (a class named "3"
    that is not class 3) is refused: either reading could be meant, and a wrong one means wrong scores.
    """
    count = len(classes) if classes is not None else None
    lookup = {name: i for i, name in enumerate(classes)} if classes is not None else {}
    index: list[int] = []
    for name in data.classes:
        by_name = lookup.get(name)
        number = int(name) if name.isascii() and name.isdigit() else None
        by_index = number if number is not None and (count is None or number < count) else None
        if classes is not None and by_name is not None and by_index is not None and by_name != by_index:
            raise InputError(f"class folder '{name}' is ambiguous: it is the name of class {by_name} and the index "
                             f"of class {by_index} ('{classes[by_index]}'); rename it so that it names only the "
                             "class it holds")
        chosen = by_name if by_name is not None else by_index
        if chosen is None:
            known = (", ".join(classes[:12]) + (", …" if len(classes) > 12 else "") + f"; or their indices 0 to "
                     f"{len(classes) - 1}") if classes else "0, 1, …"
            raise InputError(f"class folder '{name}' is not a class of the audited model (its classes: {known})")
        index.append(chosen)
    labels = np.asarray(index, dtype=np.int64)[data.labels]
    names = tuple(classes) if classes is not None else tuple(str(i) for i in range(max(index) + 1))
    return replace(data, labels=labels, classes=names)


# ---------------------------------------------------------------------------------------------------------
# Where each candidate's label comes from


@dataclass(frozen=True)
class LabelSource:
    """Where the label of a candidate's Weight Modifier comes from, when it has no true class of its own.

    Attributes:
        name: its name in LABEL_SOURCES, in the scores' `label_source` and in the CLI's choices.
        predicts: candidates without a true class get the audited model's prediction; otherwise they are
            refused. Candidates with a true class always keep it: it is the label their membership is about.
    """

    name: str
    predicts: bool


LABEL_SOURCES: Registry[LabelSource] = Registry("label source")
TRUE_LABELS = LABEL_SOURCES.register("true")(LabelSource("true", predicts=False))
PREDICTED_LABELS = LABEL_SOURCES.register("predicted")(LabelSource("predicted", predicts=True))


@dataclass(frozen=True)
class CandidateLabels:
    """The label each candidate is scored under, and which of them are the audited model's predictions."""

    label: np.ndarray       # (N,) class index in the audited model's classes
    predicted: np.ndarray   # (N,) bool: the model's prediction, not a true class

    @property
    def n_predicted(self) -> int:
        """How many candidates carry the model's prediction instead of a true class."""
        return int(self.predicted.sum())


def unlabelled(data: ImageSet) -> np.ndarray:
    """(N,) bool: rows with no true class (images loose at the top of a candidate folder)."""
    if UNLABELLED not in data.classes:
        return np.zeros(len(data), dtype=bool)
    return data.labels == data.classes.index(UNLABELLED)


def check_labels(data: ImageSet, index: np.ndarray, labels: str) -> np.ndarray:
    """(len(index),) bool: which candidates `labels` will label by prediction (see `label_candidates`).

    Raises:
        InputError: candidates without a class, under a label source that does not predict.
    """
    source = LABEL_SOURCES.get(labels)
    missing = unlabelled(data)[index]
    if missing.any() and not source.predicts:
        where = f" (e.g. {data.files[index][missing][0]})" if data.files is not None else ""
        raise InputError(f"{int(missing.sum())} candidates have no class{where}; give each its class",
                         Remedy.PREDICTED_LABELS)
    return missing


def label_candidates(audited: AuditedModel, data: ImageSet, index: np.ndarray, transform: Transform, *,
                     labels: str = "true", batch_size: int = 128, device: str = "cpu") -> CandidateLabels:
    """The label each candidate row `index` of `data` is scored under: its true class, or, for a candidate
    without one under a predicting source, the audited model's prediction (argmax of its logits on the image
    under `transform`, the transform its Weight Modifier is computed with, as stores record `pred`).

    Raises:
        InputError: candidates without a class, under a label source that does not predict.
    """
    predict = check_labels(data, index, labels)
    label = data.labels[index].copy()
    if predict.any():
        label[predict] = predicted_classes(audited, data.images[index[predict]], transform, batch_size=batch_size,
                                           device=device)
    return CandidateLabels(label, predict)


def predicted_classes(audited: AuditedModel, images: np.ndarray, transform: Transform, *, batch_size: int = 128,
                      device: str = "cpu") -> np.ndarray:
    """(N,) the audited model's predicted class of each (N, H, W, C) uint8 image under `transform`."""
    if batch_size < 1:
        raise InputError(f"batch size must be a positive number of rows, got {batch_size}")
    model = audited.module.to(device).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(transform(images[start:start + batch_size]).to(device))
            out.append(predictions(logits).cpu().numpy())
    return np.concatenate(out).astype(np.int64)


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
            raise InputError("the candidate images are colour (RGB) but the audited model takes greyscale",
                             Remedy.TO_GREY)
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
