"""Inputs every verb reads: audited models and datasets (fitted to the model's classes and input), and the
candidate rows a verb scores, with errors that name the verb's own options."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from gmint.assess.candidates import model_input
from gmint.data.base import DATASETS, ImageSet
from gmint.data.readers import load_dataset
from gmint.data.transforms import Transform
from gmint.errors import GmintError, InputError, Remedy
from gmint.models.io import AuditedModel, load_audited
from gmint_cli.console import remedies

MODEL_HELP = "Audited model: a gmint checkpoint, a state dict (with --arch) or TorchScript (--torchscript)."
ARCH_HELP = "package.module:factory building the model for a state dict (default: the checkpoint's own)."
TORCHSCRIPT_HELP = "--model is a TorchScript file."
TRUST_PICKLE_HELP = "Allow a pickled full module (loading it runs its code!)."
def load_model(model: Path, arch: str | None, torchscript: bool, trust_pickle: bool) -> AuditedModel:
    """The audited model as every verb that reads one loads it (--model, --arch, --torchscript, --trust-pickle)."""
    return load_audited(model, arch=arch, torchscript=torchscript, trust_pickle=trust_pickle)


def load_data(name: str, root: Path | None, *, size: int | None = None, size_option: str | None = None) -> ImageSet:
    """A dataset by name from the data root (digits needs none), decoded once and cached.

    Args:
        name: a dataset in `DATASETS`.
        root: the data root (None: $GMINT_DATA's, or none for datasets that need none).
        size: resize every image to size x size while reading, for readers that can (image folders,
            GTSRB); other datasets keep their size (the model's transform resizes them).
        size_option: the verb's option giving `size`, named when a folder of mixed sizes needs one.
    """
    with size_hint(size_option):
        if size is not None and "size" in _reader_options(name):
            return load_dataset(name, root, size=size)
        return load_dataset(name, root)


def _reader_options(name: str) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(DATASETS.get(name)).parameters)
    except GmintError:
        return ()  # an unknown name: load_dataset says so, listing the known ones


@contextmanager
def size_hint(option: str | None) -> Iterator[None]:
    """Name the verb's own option (or say what to do where it has none) when images of mixed sizes are read."""
    with remedies({Remedy.RESIZE: f"pass {option} N to resize every image to NxN"} if option else {}):
        yield


def model_transform(audited: AuditedModel, image_size: int | None) -> Transform:
    """The preprocessing the audited model records, resized to --image-size where given (its normalisation
    and channels stay the model's own); a model that records none is refused (see `AuditedModel.transform`)."""
    transform = audited.transform
    return replace(transform, size=image_size, crop=None) if image_size else transform


def check_model_input(images: ImageSet, audited: AuditedModel, transform: Transform) -> None:
    """Refuse images the audited model cannot take, before a store is created: another channel count, or a
    side the transform does not bring to the model's (the model would fail on the first batch, or, for a
    model that pools globally, silently compute features of images it was never shown at that size)."""
    channels, side = model_input(audited)
    c, h, w = images.image_shape
    if channels is not None and c != channels:
        raise InputError(f"the images of {images.name} have {c} channel{'s' * (c != 1)}, the audited model takes "
                         f"{channels}")
    seen = (transform.size, transform.size) if transform.size else (h, w)
    if side is not None and seen != (side, side):
        raise InputError(f"the audited model takes {side}x{side} images, those of {images.name} would reach it as "
                         f"{seen[0]}x{seen[1]}; pass --image-size {side} to resize them")
