"""A training run that survives being stopped: the checkpoint protocol every training loop of gmint shares
(audited models, aMINT).

- Refused before anything is written: an existing checkpoint without `resume` or `overwrite`, or both.
- Every epoch is checkpointed whole or not at all (`save_checkpoint` writes atomically), so a kill at any
  moment leaves the previous epoch's checkpoint or the new one.
- With `overwrite`, the old checkpoint stays where it is until its successor is finished: the epochs go beside
  it (`<name>.new`), which is removed when the run ends, finished or not.
- With `resume`, the weights and every optimiser part come back from the checkpoint, once its recipe is shown
  to be the run's (a resume with other settings would silently mix two recipes); shuffling seeded per epoch
  then takes the path an uninterrupted run takes.
- The run is done when its final checkpoint, carrying the model's training record
  (`CheckpointRecord.training`), takes the output's place in one step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from torch import nn

from gmint.errors import InputError, Remedy
from gmint.models.io import read_checkpoint, save_checkpoint
from gmint.models.record import CheckpointRecord


class Stateful(Protocol):
    """What a checkpoint carries beside the model's weights: an optimiser, a scheduler, a head."""

    def state_dict(self) -> Any:
        """The state to save."""

    def load_state_dict(self, state: Any) -> Any:
        """Take a saved state back."""


@dataclass
class Progress:
    """How far a run got: each epoch's figures, the epochs done and the seconds they took."""

    history: list[dict[str, float]] = field(default_factory=list)
    epochs_done: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, record: CheckpointRecord) -> Progress:
        """The progress a checkpoint records (checked consistent by `resumable_meta`)."""
        return cls(list(record.history), record.epochs_done or 0, record.train_seconds or 0.0)

    def add(self, figures: Mapping[str, float], seconds: float) -> None:
        """One more epoch done, with its figures (loss, accuracy, ...) and the seconds it took."""
        self.epochs_done += 1
        self.history.append({"epoch": self.epochs_done, **figures})
        self.seconds += seconds

    def record(self, meta: dict[str, object]) -> None:
        """Write the progress into a checkpoint's meta, where `of` and a resume read it."""
        meta.update(history=self.history, epochs_done=self.epochs_done, train_seconds=round(self.seconds, 2))


class ResumableRun:
    """One training run's checkpoint file, from the refusal of an existing one to the finished model.

    Used as a context manager: leaving it removes the epochs written beside an old checkpoint (under
    `overwrite`), whether the run finished or failed; a failed run never touched the old one.
    """

    def __init__(self, path: Path, *, resume: bool, overwrite: bool, recipe: Sequence[str], kind: str) -> None:
        """Check that the run may start.

        Args:
            path: the checkpoint the finished run leaves.
            resume: continue the checkpoint at `path`, if there is one.
            overwrite: replace the checkpoint at `path` once the new run is finished.
            recipe: the meta keys a resumed checkpoint must share with the run (architecture, data, split, ...).
            kind: what the checkpoint is, for messages ("training", "aMINT training").

        Raises:
            InputError: `resume` and `overwrite` both, `path` a folder, or an existing `path` without either.
        """
        if resume and overwrite:
            raise InputError(f"resume continues {path}, overwrite replaces it: pass one of them")
        if path.is_dir():
            raise InputError(f"{path} is a folder; give a file name")
        if path.exists() and not (resume or overwrite):
            raise InputError(f"{path} exists", Remedy.RESUME_OR_OVERWRITE)
        self.path, self.recipe, self.kind = path, tuple(recipe), kind
        self.resuming = resume and path.exists()
        # The checkpoint being replaced stays where it is until its successor is finished.
        self.work = path.with_name(path.name + ".new") if overwrite and path.exists() else path

    def __enter__(self) -> ResumableRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.work != self.path:  # the epochs beside the old checkpoint go, finished or not
            self.work.unlink(missing_ok=True)

    def restore(self, model: nn.Module, parts: Mapping[str, Stateful],
                meta: Mapping[str, object]) -> dict[str, object] | None:
        """Load the checkpoint's weights into `model` and each of `parts` (by its key in the checkpoint) when
        resuming; return the checkpoint's meta, or None where there is nothing to resume.

        Raises:
            InputError: see `resumable_meta`.
        """
        if not self.resuming:
            return None
        payload = read_checkpoint(self.path)
        saved = resumable_meta(self.path, payload, meta, recipe=self.recipe, parts=("state_dict", *parts),
                               kind=self.kind)
        model.load_state_dict(payload["state_dict"])
        for name, part in parts.items():
            part.load_state_dict(payload[name])
        return saved

    def save_epoch(self, model: nn.Module, parts: Mapping[str, Stateful], meta: Mapping[str, object]) -> None:
        """Checkpoint an epoch, with the state of `parts` a resume needs (beside the old checkpoint under
        `overwrite`)."""
        save_checkpoint(self.work, model, dict(meta), {name: part.state_dict() for name, part in parts.items()})

    def finish(self, model: nn.Module, parts: Mapping[str, Stateful], meta: Mapping[str, object]) -> None:
        """Write the finished run's checkpoint in the output's place, in one step."""
        save_checkpoint(self.path, model, dict(meta), {name: part.state_dict() for name, part in parts.items()})


def resumable_meta(path: Path, payload: Mapping[str, object], meta: Mapping[str, object], *,
                   recipe: Sequence[str], parts: Sequence[str], kind: str) -> dict[str, object]:
    """The meta of a checkpoint a run may continue: one holding `parts` (and its meta), trained with the same
    values of the `recipe` keys as `meta`, and recording its progress consistently.

    Raises:
        InputError: a part is missing, a recipe value differs (a resume would silently mix two recipes), or
            the epochs done and the history disagree.
    """
    missing = [k for k in ("meta", *parts) if k not in payload]
    if missing:
        raise InputError(f"{path} is not a gmint {kind} checkpoint (no {', '.join(missing)}); it cannot be "
                         "resumed")
    saved = json.loads(str(payload["meta"]))
    for key in recipe:
        wanted = json.loads(json.dumps(meta.get(key)))
        if saved.get(key) != wanted:
            raise InputError(f"{path} was trained with a different {key} ({_difference(saved.get(key), wanted)}); "
                             "it cannot be resumed with these settings: choose another output")
    done, history = saved.get("epochs_done"), saved.get("history", [])
    if not isinstance(done, int) or [h.get("epoch") for h in history] != list(range(1, done + 1)):
        raise InputError(f"{path} does not record its training progress consistently (epochs_done {done}, "
                         f"{len(history)} epochs of history); it cannot be resumed: train again with another output")
    return saved


def _difference(saved: object, wanted: object) -> str:
    """'epochs 40 → 10' for the fields of two dicts that differ; 'old → new' otherwise."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        keys = [k for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
        return ", ".join(f"{k} {saved.get(k, '—')} → {wanted.get(k, '—')}" for k in keys)
    if isinstance(saved, list) or isinstance(wanted, list):  # training rows: thousands of numbers
        return f"{_count(saved)} → {_count(wanted)} rows, not the same set"
    return f"{saved} → {wanted}"


def _count(rows: object) -> str:
    return str(len(rows)) if isinstance(rows, list) else "no given"
