"""Training audited models for experiments: a zoo architecture fitted on the members of a split, or a
described architecture (a model from outside's own code and preprocessing) fitted on given rows, as the
reference models of gmint.reference are.

Checkpoints every epoch (atomically) and resumes from the last one; shuffling is seeded per epoch, so a
resumed run takes the same path as an uninterrupted one, and resuming a finished run changes nothing. Training
runs on a fixed, recorded number of CPU threads: the weights depend on it (see TrainConfig.threads). The final
record states the model's own member/external accuracy and loss: the generalisation gap that every membership
result sits beside.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy
from gmint.models.augment import AUGMENTATIONS, Augmentation
from gmint.models.description import ModelDescription, build_architecture, select_output
from gmint.models.io import AuditedModel
from gmint.models.record import CheckpointRecord
from gmint.models.resumable import Progress, ResumableRun, Stateful
from gmint.models.zoo import build
from gmint.progress import progress_bar
from gmint.registry import Registry
from gmint.threads import torch_threads

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adam")(lambda params, lr, weight_decay: torch.optim.Adam(params, lr=lr,
                                                                              weight_decay=weight_decay))
OPTIMIZERS.register("sgd")(lambda params, lr, weight_decay: torch.optim.SGD(
    params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True))
# A schedule maps (epoch, total epochs) to the factor on the learning rate.
Schedule = Callable[[int, int], float]
SCHEDULES: Registry[Schedule] = Registry("schedule")
SCHEDULES.register("constant")(lambda epoch, epochs: 1.0)
SCHEDULES.register("cosine")(lambda epoch, epochs: 0.5 * (1 + float(np.cos(np.pi * epoch / epochs))))
# The split's rows a model trains on, by the name its checkpoint records as `trained_on` (given rows: `rows`).
TRAINING_ROLES: Registry[Callable[[MembershipSplit], list[int]]] = Registry("training rows")
TRAINING_ROLES.register("members")(lambda split: split.members)
TRAINING_ROLES.register("control")(lambda split: split.control)  # a negative control


@dataclass(frozen=True)
class TrainConfig:
    """How an audited model is trained. The paper's regime: Adam, lr 1e-4, batch 64, no augmentation,
    trained far past generalisation (300 epochs).

    With `target_accuracy`, `epochs` is a cap: training stops after the first epoch whose model (in eval
    mode) classifies at least that fraction of its training rows correctly — the memorisation the paper's
    figures rest on, reached in the epochs it takes rather than a fixed count."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"   # a name in SCHEDULES
    augment: str = "none"
    seed: int = 0
    # Summing a batch's gradients is split across CPU threads, so the thread count changes the rounding and
    # with it the weights and every figure after them: it is fixed here and recorded, never the machine's.
    threads: int = 1
    target_accuracy: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive finite number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"weight_decay must be a finite number ≥ 0, got {self.weight_decay}")
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.0:
            raise InputError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        SCHEDULES.get(self.schedule)  # an unknown name fails here, listing the known ones

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> TrainConfig:
        """A recipe as a JSON object states it (fields not given keep their defaults), every field checked.

        Raises:
            InputError: an unknown field, or a value of the wrong type (a whole number for epochs, batch_size,
                seed and threads; a number for lr, weight_decay and target_accuracy; a name for the rest).
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"unknown training recipe field(s) {', '.join(unknown)}; the fields are "
                             f"{', '.join(known)}")
        for name, value in values.items():
            default = known[name].default
            wanted = (str,) if isinstance(default, str) else (int,) if isinstance(default, int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted) and not (value is None and default is None):
                kind = {str: "a name", int: "a whole number"}.get(wanted[0], "a number")
                raise InputError(f"the training recipe's {name} must be {kind}, got {value!r}")
        return cls(**values)  # type: ignore[arg-type]


def train_audited(data: ImageSet, split: MembershipSplit, *, arch: str | ModelDescription,
                  transform: Transform | None = None, config: TrainConfig, out: Path,
                  arch_options: dict[str, object] | None = None, resume: bool = False, overwrite: bool = False,
                  trained_on: str | Sequence[int] = "members", device: str = "cpu",
                  show_progress: bool = False) -> AuditedModel:
    """Train `arch` on the split's members, checkpointing to `out` every epoch; return it with its record.

    The model is a zoo architecture (`arch` by name, with `arch_options`, fed through `transform`), built for the
    data's channels, classes and image size, or the architecture a description states (`arch` a
    `ModelDescription`: a model from outside, its own factory and arguments, its preprocessing, where its logits
    are), built exactly as described; its checkpoint then records the description too, so it loads, and is fed,
    as the model it was described from.

    `trained_on` chooses the training rows, and is recorded as the checkpoint's `trained_on`: `members` (the
    split's), `control` (the split's control rows: a negative control, which saw neither the members nor the
    externals, so auditing it with the same pipeline must give chance), or exactly the dataset rows given (a
    reference model of gmint.reference, trained on data the auditor controls; recorded as `rows`, part of the
    recipe a resume checks).
    With `resume=True` an interrupted run continues from its last epoch and a finished one is returned
    as it is, its file untouched. A run with `config.target_accuracy` stops at the first epoch that reaches
    it; its record says whether the goal was reached (`reached_target`). With `overwrite=True` an
    existing `out` is replaced only by the finished model: until then the epochs are checkpointed beside it
    (`<out>.new`), so a run that fails or is killed leaves the old model whole.

    Raises:
        InputError: before any file is written, for an existing `out` without `resume` or `overwrite`, both
            of them, or a checkpoint trained with another recipe (architecture, data, split, transform,
            TrainConfig, rows), rows that are empty, repeated or outside the data, a zoo `arch` without its
            `transform` or a description with one (or with `arch_options`), or a description whose classes or
            input the data does not fit.
        UnknownNameError: `trained_on` names neither `members` nor `control`.
    """
    if split.dataset != data.name:
        raise InputError(f"the split is for '{split.dataset}', the data is '{data.name}'")
    description = arch if isinstance(arch, ModelDescription) else None
    if (transform is None) if description is None else (transform is not None or bool(arch_options)):
        raise InputError("a model to train is a zoo architecture with its transform, or a model description: "
                         "give one of them")
    augment = AUGMENTATIONS.get(config.augment)
    given_rows = not isinstance(trained_on, str)
    if isinstance(trained_on, str):
        members = np.asarray(TRAINING_ROLES.get(trained_on)(split))
    else:
        members = _training_rows(trained_on, len(data))
    if len(members) == 0:
        raise InputError("the split has no control rows to train a negative control on", Remedy.CONTROL_ROWS)
    run = ResumableRun(Path(out), resume=resume, overwrite=overwrite, recipe=RECIPE, kind="training")
    c, h, _ = data.image_shape
    if description is None:
        assert isinstance(arch, str) and transform is not None
        size = transform.size or h
        arch_args = {"arch": arch, "in_channels": c, "num_classes": len(data.classes), "image_size": size,
                     **(arch_options or {})}
        torch.manual_seed(config.seed)
        model = build(**arch_args).to(device)  # type: ignore[arg-type]
        arch_args.pop("arch")
    else:
        _check_described(description, data)
        arch, arch_args, transform = description.arch, dict(description.arch_args), description.transform
        torch.manual_seed(config.seed)
        built = build_architecture(arch, arch_args, sha256=description.arch_sha256)
        model = select_output(built, description.output).to(device)
    optimizer = OPTIMIZERS.get(config.optimizer)(model.parameters(), config.lr, config.weight_decay)
    schedule = SCHEDULES.get(config.schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: schedule(epoch, config.epochs))
    parts: dict[str, Stateful] = {"optimizer": optimizer, "scheduler": scheduler}
    meta: dict[str, object] = {
        "arch": arch, "arch_args": arch_args,
        "dataset": data.name, "transform": transform.to_dict(), "split": asdict(split),
        "split_sha256": split.sha256, "train_config": asdict(config), "num_classes": len(data.classes),
        "classes": list(data.classes),
        "trained_on": "rows" if given_rows else trained_on,
        **({"rows": [int(r) for r in members]} if given_rows else {}),
    }
    if description is not None:  # the rest of the description: where the logits are, the input, the code's hash
        meta.update({k: v for k, v in description.to_meta().items() if k not in meta})
    progress = Progress()
    with run:
        saved = run.restore(model, parts, meta)
        if saved is not None:
            recorded = CheckpointRecord.read(saved)
            if recorded.training is not None:
                return AuditedModel(model.eval(), saved)  # a finished run: nothing to do, the file stays as it is
            progress = Progress.of(recorded)
        progress.record(meta)
        start_epoch = progress.epochs_done
        with torch_threads(config.threads), progress_bar(f"train {arch.rsplit('/', 1)[-1]}", config.epochs,
                                                         enabled=show_progress, completed=start_epoch) as bar:
            # A run killed after the epoch that reached the goal, before its record, trains no further.
            reached = start_epoch > 0 and _reached_goal(model, data, members, transform, config, device)
            for epoch in range(start_epoch, config.epochs if not reached else start_epoch):
                t0 = time.perf_counter()
                loss, acc = train_epoch(model, data, members, transform, optimizer, augment, config, epoch, device)
                refuse_divergence({"loss": loss}, epoch + 1)
                scheduler.step()
                reached = _reached_goal(model, data, members, transform, config, device)
                progress.add({"loss": loss, "accuracy": acc}, time.perf_counter() - t0)
                progress.record(meta)
                run.save_epoch(model, parts, meta)
                bar.advance(config.epochs - epoch if reached else 1, f"loss {loss:.3f} acc {acc:.3f}")
                if reached:
                    break
            model.eval()
            record = audited_record(model, data, split, transform, device=device, show_progress=show_progress)
            if config.target_accuracy is not None:
                record["reached_target"] = float(reached)
            meta["record"] = record
        meta.update(train_seconds=round(progress.seconds, 2), seed=config.seed)
        run.finish(model, parts, meta)
    return AuditedModel(model, meta)


def _check_described(description: ModelDescription, data: ImageSet) -> None:
    """Refuse data a described model cannot be trained on: other class names or another number of them (its
    outputs are trained as one logit per class, labels in its own class order), or images its preprocessing
    does not bring to the input it takes.

    Raises:
        InputError: naming what differs.
    """
    if description.num_classes is not None and description.num_classes != len(data.classes):
        raise InputError(f"the model has {description.num_classes} outputs, {data.name} {len(data.classes)} "
                         "classes: it is trained with one output (logit) per class")
    if description.classes is not None and description.classes != data.classes:
        raise InputError(f"the classes of {data.name} are not the model's in its order; relabel the data by class "
                         "name first")
    c, h, w = data.image_shape
    transform = description.transform
    channels, side = transform.channels or c, transform.side or (h if h == w else None)
    if description.input_channels is not None and channels != description.input_channels:
        raise InputError(f"the images of {data.name} reach the model with {channels} channels, it takes "
                         f"{description.input_channels}")
    if description.input_size is not None and side != description.input_size:
        raise InputError(f"the images of {data.name} reach the model as {h}x{w}, it takes "
                         f"{description.input_size}x{description.input_size}")


def refuse_divergence(losses: Mapping[str, float], epoch: int) -> None:
    """Stop a run whose loss left the finite numbers: its weights are NaN or meaningless from here on, and a
    checkpoint of them would be audited as a model. The epoch is not saved; the last finite one stays.

    Raises:
        InputError: naming the epoch and the loss.
    """
    bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if bad:
        name, value = next(iter(bad.items()))
        raise InputError(f"training diverged at epoch {epoch} ({name} {value}); lower the learning rate (or the "
                         "loss weights) and train again")


def _reached_goal(model: nn.Module, data: ImageSet, rows: np.ndarray, transform: Transform, config: TrainConfig,
                  device: str) -> bool:
    """Whether the model, in eval mode, classifies `config.target_accuracy` of its training rows correctly.
    Checked after every epoch: the running accuracy an epoch reports is taken in train mode while the weights
    move (BatchNorm on batch statistics), and can sit well below the eval-mode figure the goal is about."""
    if config.target_accuracy is None:
        return False
    _, accuracy = evaluate(model.eval(), data, rows, transform, device=device)
    return accuracy >= config.target_accuracy


def audited_record(model: nn.Module, data: ImageSet, split: MembershipSplit, transform: Transform, *,
                   device: str = "cpu", show_progress: bool = False) -> dict[str, float]:
    """Accuracy, mean loss and loss quantiles (10/50/90%) of the audited model on its members, its externals
    and the official test part (where there is one): the generalisation gap, and how far apart the losses
    of the sides lie, which is what a loss threshold reads."""
    sets = {"members": np.asarray(split.members), "external": np.asarray(split.external)}
    test = np.flatnonzero(data.part == "test")
    if len(test):
        sets["test"] = test
    record: dict[str, float] = {}
    with progress_bar("evaluate audited model", sum(len(r) for r in sets.values()),
                      enabled=show_progress) as bar:
        for name, rows in sets.items():
            losses, predicted = sample_losses(model, data, rows, transform, device=device, on_batch=bar.advance)
            correct = predicted == data.labels[rows]
            record[f"{name}_accuracy"], record[f"{name}_loss"] = float(correct.mean()), float(losses.mean())
            for q in LOSS_QUANTILES:
                record[f"{name}_loss_q{q}"] = float(np.percentile(losses, q))
    return record


LOSS_QUANTILES = (10, 50, 90)


def evaluate(model: nn.Module, data: ImageSet, rows: np.ndarray, transform: Transform, *,
             device: str = "cpu", batch_size: int = 256,
             on_batch: Callable[[int], None] | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on `rows`."""
    losses, predicted = sample_losses(model, data, rows, transform, device=device, batch_size=batch_size,
                                      on_batch=on_batch)
    correct = predicted == data.labels[rows]
    return (float(losses.mean()), float(correct.mean())) if len(rows) else (0.0, 0.0)


@torch.no_grad()
def sample_losses(model: nn.Module, data: ImageSet, rows: np.ndarray, transform: Transform, *,
                  device: str = "cpu", batch_size: int = 256,
                  on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cross-entropy loss (float64) and the class the model predicts for it."""
    losses, predicted = [], []
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        x = transform(data.images[idx]).to(device)
        y = torch.from_numpy(data.labels[idx]).to(device)
        logits = model(x).double()
        losses.append(F.cross_entropy(logits, y, reduction="none").cpu().numpy())
        predicted.append(logits.argmax(1).cpu().numpy())
        if on_batch:
            on_batch(len(idx))
    if not losses:
        return np.empty(0), np.empty(0, np.int64)
    return np.concatenate(losses), np.concatenate(predicted)


def train_epoch(model: nn.Module, data: ImageSet, members: np.ndarray, transform: Transform,
                optimizer: torch.optim.Optimizer, augment: Augmentation, config: TrainConfig, epoch: int,
                device: str) -> tuple[float, float]:
    """One pass over `members` (`epoch_batches`), one `train_step` per batch: the loop every audited model
    trains with → (mean loss, running accuracy in train mode)."""
    model.train()
    total_loss, correct = 0.0, 0
    for x, y in epoch_batches(data, members, transform, augment, config, epoch):
        x, y = x.to(device), y.to(device)
        loss, logits = train_step(model, optimizer, x, y)
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
    return total_loss / len(members), correct / len(members)


def epoch_batches(data: ImageSet, members: np.ndarray, transform: Transform, augment: Augmentation,
                  config: TrainConfig, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Epoch `epoch`'s batches of `members` as (augmented inputs, labels), on the CPU.

    The rows are shuffled by a generator seeded from the seed and the epoch alone, which the augmentation then
    draws from, batch after batch: a resumed run, or a benchmark of the step, sees exactly the batches an
    uninterrupted run sees."""
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = members[torch.randperm(len(members), generator=gen).numpy()]
    for start in range(0, len(order), config.batch_size):
        idx = order[start:start + config.batch_size]
        yield augment(transform(data.images[idx]), gen), torch.from_numpy(data.labels[idx])


def train_step(model: Callable[[Tensor], Tensor], optimizer: torch.optim.Optimizer, x: Tensor,
               y: Tensor) -> tuple[Tensor, Tensor]:
    """One optimiser step on the batch's mean cross-entropy → (the loss, the logits it was computed from)."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


# What a resume must find unchanged. A described model's output selector and code hash are None for zoo models.
RECIPE = ("arch", "arch_args", "dataset", "split_sha256", "train_config", "transform", "trained_on", "rows",
          "output", "arch_sha256")


def _training_rows(rows: Sequence[int], n: int) -> np.ndarray:
    """Given training rows as a sorted int64 array: the same set trains the same model in whatever order."""
    members = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(members) == 0:
        raise InputError("no training rows given")
    if members.min() < 0 or members.max() >= n:
        raise InputError(f"training rows must lie in 0..{n - 1}, got {int(members.min())}..{int(members.max())}")
    if len(np.unique(members)) != len(members):
        raise InputError(f"{len(members) - len(np.unique(members))} training rows are given twice")
    return np.sort(members)
