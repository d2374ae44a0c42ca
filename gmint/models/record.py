"""What a checkpoint records about its audited model, read once into typed records.

A checkpoint's meta is one JSON object whose keys grew with gmint. `CheckpointRecord.read` is the one reader
of every form gmint has written, so that no verb reads the JSON itself and each one gets the same answer
for a key an older checkpoint lacks:

- a model gmint trained (no `format`): its description (arch, arch_args, transform, num_classes, classes;
  later also output, input and arch_sha256), dataset, split and split_sha256, train_config, trained_on (and
  the training rows it was given), history, epochs_done, train_seconds, seed and, once the run finished,
  its training record (accuracy and mean loss on members and externals; later also loss quantiles, the
  official test part and whether the accuracy goal was reached). An aMINT model adds amint_config and amint;
- a model imported from outside (`format` "imported"): its description, its source file and what its owner
  states about it;
- a model loaded as it is: `{"format": "torchscript"}`, `{"format": "pickled-module"}`, or a plain state dict
  `{"format": "state-dict", "arch": ..., "arch_args": ...}` (older ones without arch_args).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gmint.data.split import MembershipSplit
from gmint.models.description import TENSOR, ModelDescription, whole

# The sides a training record measures the model on, in the order it writes them.
SIDES = ("members", "external", "test")


@dataclass(frozen=True)
class SideRecord:
    """The audited model on one set of rows when its training ended.

    Attributes:
        accuracy: fraction of the rows it classifies right.
        loss: mean cross-entropy.
        loss_quantiles: loss percentile → value (10, 50, 90); empty in records written before them.
    """

    accuracy: float
    loss: float
    loss_quantiles: dict[int, float] = field(default_factory=dict)

    @classmethod
    def read(cls, record: Mapping[str, Any], side: str) -> SideRecord | None:
        """The side's numbers in a training record; None where its accuracy or loss is not recorded."""
        accuracy, loss = _number(record.get(f"{side}_accuracy")), _number(record.get(f"{side}_loss"))
        if accuracy is None or loss is None:
            return None
        prefix = f"{side}_loss_q"
        quantiles = {int(key[len(prefix):]): float(value) for key, value in record.items()
                     if key.startswith(prefix) and key[len(prefix):].isdigit() and _number(value) is not None}
        return cls(accuracy, loss, quantiles)

    def to_dict(self, side: str) -> dict[str, float]:
        """The side's entries as a training record writes them."""
        return {f"{side}_accuracy": self.accuracy, f"{side}_loss": self.loss,
                **{f"{side}_loss_q{q}": value for q, value in self.loss_quantiles.items()}}


@dataclass(frozen=True)
class TrainingRecord:
    """The audited model measured by gmint when its training ended: its generalisation gap, and how far apart
    the losses of the sides lie (what a loss threshold reads).

    Attributes:
        members: on the members it trained on.
        external: on the externals it never saw.
        test: on the dataset's official test part (None where it has none).
        reached_target: whether training stopped at its accuracy goal (None: trained without one).
    """

    members: SideRecord
    external: SideRecord
    test: SideRecord | None = None
    reached_target: bool | None = None

    @classmethod
    def read(cls, record: object) -> TrainingRecord | None:
        """The record a checkpoint's meta holds under `record`; None without one that names both sides."""
        if not isinstance(record, Mapping):
            return None
        members, external = SideRecord.read(record, "members"), SideRecord.read(record, "external")
        if members is None or external is None:
            return None
        reached = _number(record.get("reached_target"))
        return cls(members, external, SideRecord.read(record, "test"), None if reached is None else bool(reached))

    def to_dict(self) -> dict[str, float]:
        """As written in the checkpoint (and printed by `gmint audited`): every side's numbers, in order."""
        found = {"members": self.members, "external": self.external, "test": self.test}
        out = {key: value for side in SIDES if (fit := found[side]) is not None
               for key, value in fit.to_dict(side).items()}
        if self.reached_target is not None:
            out["reached_target"] = float(self.reached_target)
        return out


@dataclass(frozen=True)
class ModelSource:
    """The weights file a model from outside was imported from: where it was, its format, its sha256."""

    file: str
    kind: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """As recorded in the checkpoint."""
        return {"file": self.file, "kind": self.kind, "sha256": self.sha256}


@dataclass(frozen=True)
class CheckpointRecord:
    """Everything a checkpoint's meta records about its audited model (see the module docstring for the forms
    read). None or empty marks what a checkpoint does not record.

    Attributes:
        format: how the model came (`imported`, `torchscript`, `pickled-module`, `state-dict`); None for a
            model gmint trained.
        arch: the architecture that builds it (zoo name or the user's factory).
        arch_args: the factory's keyword arguments.
        arch_sha256: the hash of the factory's source file, where it is the user's code.
        output: where its logits are in its output (see `gmint.models.description.read_output`).
        description: how it is built, fed and read; None where no preprocessing is recorded.
        num_classes: its outputs.
        dataset: the dataset it was trained on.
        split: the membership split it was trained on.
        train_config: the TrainConfig it was trained with, as recorded (a model gmint trained).
        trained_on: which rows trained it: `members`, `control` or given `rows`.
        rows: the training rows it was given (trained_on `rows`).
        epochs_done: epochs trained so far.
        history: each epoch's numbers (loss, accuracy, ...).
        train_seconds: seconds spent in its epochs.
        seed: the seed of its training run (written once it finished).
        training: gmint's measurement once its training ended.
        source: the weights file it was imported from.
        stated_train_accuracy: the training accuracy its owner states.
        amint_config: the aMINT head's options, for a model trained jointly with one.
        amint: the aMINT head's spec and loss normalisers.
    """

    format: str | None = None
    arch: str | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    arch_sha256: str | None = None
    output: str = TENSOR
    description: ModelDescription | None = None
    num_classes: int | None = None
    dataset: str | None = None
    split: MembershipSplit | None = None
    train_config: dict[str, Any] | None = None
    trained_on: str | None = None
    rows: tuple[int, ...] | None = None
    epochs_done: int | None = None
    history: tuple[dict[str, float], ...] = ()
    train_seconds: float | None = None
    seed: int | None = None
    training: TrainingRecord | None = None
    source: ModelSource | None = None
    stated_train_accuracy: float | None = None
    amint_config: dict[str, Any] | None = None
    amint: dict[str, Any] | None = None

    @classmethod
    def read(cls, meta: Mapping[str, Any]) -> CheckpointRecord:
        """The record of a checkpoint's meta, in any form gmint has written (see the module docstring)."""
        source, stated, rows = meta.get("source"), meta.get("stated"), meta.get("rows")
        split = meta.get("split")
        return cls(
            format=_text(meta.get("format")), arch=_text(meta.get("arch")),
            arch_args=dict(meta.get("arch_args") or {}), arch_sha256=_text(meta.get("arch_sha256")),
            output=str(meta.get("output", TENSOR)), description=ModelDescription.from_meta(meta),
            num_classes=whole(meta.get("num_classes")), dataset=_text(meta.get("dataset")),
            split=MembershipSplit.from_json(json.dumps(split)) if isinstance(split, Mapping) else None,
            train_config=_mapping(meta.get("train_config")), trained_on=_text(meta.get("trained_on")),
            rows=tuple(int(r) for r in rows) if isinstance(rows, list) else None,
            epochs_done=whole(meta.get("epochs_done")),
            history=tuple(dict(h) for h in meta.get("history") or () if isinstance(h, Mapping)),
            train_seconds=_number(meta.get("train_seconds")), seed=whole(meta.get("seed")),
            training=TrainingRecord.read(meta.get("record")),
            source=ModelSource(str(source.get("file")), str(source.get("kind")), str(source.get("sha256")))
            if isinstance(source, Mapping) else None,
            stated_train_accuracy=_number(stated.get("train_accuracy")) if isinstance(stated, Mapping) else None,
            amint_config=_mapping(meta.get("amint_config")), amint=_mapping(meta.get("amint")))

    @property
    def unfinished(self) -> bool:
        """A training run that stopped before its end: it records its progress but no training record, which
        is written only at the end (the epoch cap, or the accuracy goal reached)."""
        return self.epochs_done is not None and self.training is None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mapping(value: object) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None
