"""Models from outside: weights plus their description, checked and written as a gmint checkpoint.

A model trained elsewhere is imported once: its weights (a state dict, a TorchScript file, or a pickled module
the user trusts) are loaded into the described architecture, run once on an input of the described shape,
and saved with the description, so every verb audits it exactly as it audits a zoo model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.files import atomic_write
from gmint.models.description import build_architecture, canonical_arch, describe, file_sha256
from gmint.models.io import (
    SCRIPT_META,
    AuditedModel,
    load_audited,
    load_state,
    read_checkpoint,
    refuse_nonfinite,
    save_checkpoint,
)
from gmint.registry import Registry

IMPORTED = "imported"


@dataclass(frozen=True)
class ModelSpec:
    """What the user states about a model from outside (the description before it is checked).

    Attributes:
        arch: zoo name, `package.module:factory` or `path/to/file.py:factory`; None only for a TorchScript
            file kept as TorchScript.
        arch_args: the factory's keyword arguments.
        transform: the preprocessing the model was trained with (its size is required).
        classes: class names, index = label (None: only their number, read from the model).
        output_key: where the logits are in a structured output (a key, attribute or position); None to find
            them (`tensor`, a mapping's `logits`, a tuple's first element).
        input_channels: channels the model takes (None: the transform's, else the first convolution's).
        train_accuracy: the accuracy on its training set the model's owner states; extraction compares it
            with what it measures on the declared members.
    """

    arch: str | None
    transform: Transform
    arch_args: Mapping[str, Any] | None = None
    classes: Sequence[str] | None = None
    output_key: str | None = None
    input_channels: int | None = None
    train_accuracy: float | None = None

    def __post_init__(self) -> None:
        acc = self.train_accuracy
        if acc is not None and not (isinstance(acc, int | float) and math.isfinite(acc) and 0.0 <= acc <= 1.0):
            raise InputError(f"the stated training accuracy must be a fraction in [0, 1], got {acc!r}")


# How each kind of weights file loads into a module: (file, spec) → module. A state dict needs the
# architecture; TorchScript and pickles bring their module, whose weights move into the architecture when one
# is given.
Loader = Callable[[Path, "ModelSpec"], nn.Module]
WEIGHTS: Registry[Loader] = Registry("weights format")


@WEIGHTS.register("state-dict")
def _state_dict(path: Path, spec: ModelSpec) -> nn.Module:
    payload = read_checkpoint(path)
    if "meta" in payload and "state_dict" in payload:
        raise InputError(f"{path} is a gmint checkpoint already; it needs no import")
    if spec.arch is None:
        raise InputError("a state dict needs its architecture to build the model")
    return _into_arch(payload, spec, path)


@WEIGHTS.register("torchscript")
def _torchscript(path: Path, spec: ModelSpec) -> nn.Module:
    module = load_audited(path, torchscript=True).module
    return module if spec.arch is None else _into_arch(module.state_dict(), spec, path)


@WEIGHTS.register("pickle")
def _pickle(path: Path, spec: ModelSpec) -> nn.Module:
    module = load_audited(path, trust_pickle=True).module
    if spec.arch is None:
        raise InputError("a pickled module is imported into its architecture (the code that builds it), so that "
                         "the checkpoint loads without running code from the file")
    return _into_arch(module.state_dict(), spec, path)


def _into_arch(state: Mapping[str, torch.Tensor], spec: ModelSpec, path: Path) -> nn.Module:
    module = build_architecture(str(spec.arch), dict(spec.arch_args or {}))
    load_state(module, dict(state), path)
    return module


def import_model(weights: Path, spec: ModelSpec, *, out: Path, kind: str = "state-dict",
                 overwrite: bool = False) -> AuditedModel:
    """Check `spec` against the weights and write them with their description to `out`.

    Args:
        weights: the model's weights file.
        spec: what is stated about the model.
        out: the gmint checkpoint to write (a `.pt` checkpoint; a TorchScript archive with its description when
            a TorchScript file is kept without an architecture).
        kind: a name in WEIGHTS.
        overwrite: replace an existing `out`.

    Returns:
        The model as every verb will load it.

    Raises:
        InputError: an existing `out`, weights that do not fit the architecture, non-finite weights, an input
            the model refuses, or an output without logits.
    """
    out, weights = Path(out), Path(weights)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass overwrite to replace it")
    if out.exists() and out.resolve() == weights.resolve():
        raise InputError(f"{out} is the weights file itself; write the checkpoint to another file")
    module = WEIGHTS.get(kind)(weights, spec)
    refuse_nonfinite(module, weights)
    arch = canonical_arch(spec.arch) if spec.arch is not None else "torchscript"
    description, module = describe(module, arch=arch, arch_args=dict(spec.arch_args or {}),
                                   transform=spec.transform, classes=spec.classes, output_key=spec.output_key,
                                   input_channels=spec.input_channels)
    meta: dict[str, object] = {
        "format": IMPORTED, **description.to_meta(),
        "source": {"file": str(weights.resolve()), "kind": kind, "sha256": file_sha256(weights)},
        **({"stated": {"train_accuracy": spec.train_accuracy}} if spec.train_accuracy is not None else {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    if spec.arch is None:
        with atomic_write(out) as tmp:
            torch.jit.save(module, str(tmp), _extra_files={SCRIPT_META: json.dumps(meta)})
        return load_audited(out, torchscript=True)
    save_checkpoint(out, module, meta)
    return load_audited(out)
