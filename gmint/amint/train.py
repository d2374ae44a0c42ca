"""Active MINT: the audited model trained together with a MINT head that reads its intermediate activations.

Each step takes one batch of members and one of the auditor's pool externals through the model in a single
forward pass (so BatchNorm sees both, as it will at scoring time with running statistics, and the head cannot
learn a batch-composition artefact), and minimises

    loss = task_weight · CE / CE₀ + mint_weight · (BCE_members + BCE_external) / BCE₀

where CE is the task loss on the members, the BCEs are the head's loss on "member" and "external", and CE₀, BCE₀
are their values on the very first batch (the authors' normalisation; recorded, so a resumed run keeps them).
The model learns from *all* members (its training set); the head's "member" term uses only the split's pool
members — the auditor's knowledge — so the held-out members stay rows the head never saw: the honest test.

Outputs in one folder: `audited.pt`, a normal gmint checkpoint (every verb reads it; `gmint extract` runs
passive gMINT on it) that also carries the head and optimiser state for `--resume`, and `head.pt`, the
head with its spec, fitted rows and the calibration scores of held-out external rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gmint.amint.forward import forward_rows
from gmint.amint.head import HeadSpec, MintHead, TrainedHead
from gmint.amint.taps import TapCollector, resolve_taps, tap_shapes
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.models.augment import AUGMENTATIONS, Augmentation
from gmint.models.io import AuditedModel, fingerprint
from gmint.models.record import CheckpointRecord
from gmint.models.resumable import Progress, ResumableRun, Stateful
from gmint.models.train import OPTIMIZERS, SCHEDULES, TrainConfig, audited_record, refuse_divergence
from gmint.models.zoo import build
from gmint.progress import progress_bar
from gmint.threads import torch_threads

MODEL_FILE, HEAD_FILE = "audited.pt", "head.pt"
# What a resumed run must share with the checkpoint it continues (anything else would mix two recipes).
RECIPE = ("arch", "arch_args", "dataset", "split_sha256", "train_config", "transform", "trained_on", "amint_config")


@dataclass(frozen=True)
class AmintConfig:
    """How the audited model and its head are trained together.

    `train` is the audited model's recipe (epochs over the members, batch size — of members and of externals
    each —, optimiser, learning rate, schedule, augmentation, seed, threads), recorded as any audited model's.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    task_weight: float = 1.0
    mint_weight: float = 1.0
    head_channels: int = 64
    head_hidden: int = 128

    def __post_init__(self) -> None:
        if not (math.isfinite(self.task_weight) and math.isfinite(self.mint_weight)) or self.task_weight < 0 \
                or self.mint_weight < 0 or self.task_weight + self.mint_weight == 0:
            raise InputError(f"loss weights must be ≥ 0 and not both 0, got task {self.task_weight}, "
                             f"mint {self.mint_weight}")
        if self.head_channels < 1 or self.head_hidden < 1:
            raise InputError(f"head widths must be at least 1, got {self.head_channels}, {self.head_hidden}")
        if getattr(self.train, "target_accuracy", None) is not None:
            raise InputError("aMINT training runs all its epochs: a member-accuracy goal would stop the head "
                             "mid-way; leave target_accuracy unset")

    def head_options(self) -> dict[str, object]:
        """The settings besides the TrainConfig, as recorded in the checkpoint's `amint_config`."""
        return {"task_weight": self.task_weight, "mint_weight": self.mint_weight,
                "head_channels": self.head_channels, "head_hidden": self.head_hidden}


@dataclass
class AmintModel:
    """The jointly trained audited model (with its checkpoint meta) and its head."""

    audited: AuditedModel
    head: TrainedHead
    folder: Path


@dataclass(frozen=True)
class _Rows:
    """Row indices the training loop draws from."""

    members: np.ndarray        # all members: the task loss
    head_members: np.ndarray   # pool members: the head's "member" term
    head_external: np.ndarray  # pool externals: the head's "external" term


def amint_rows(split: MembershipSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all members, pool members, pool externals): what the model and the head train on."""
    members = np.asarray(split.members, dtype=np.int64)
    return (members, np.intersect1d(split.pool, split.members).astype(np.int64),
            np.intersect1d(split.pool, split.external).astype(np.int64))


def train_amint(data: ImageSet, split: MembershipSplit, *, arch: str, transform: Transform, config: AmintConfig,
                out: Path, arch_options: dict[str, object] | None = None, taps: str | list[str] | None = None,
                resume: bool = False, overwrite: bool = False, device: str = "cpu",
                show_progress: bool = False) -> AmintModel:
    """Train `arch` on the split's members jointly with a MINT head; write `out/audited.pt` and `out/head.pt`.

    The checkpoint is written every epoch (atomically) and `resume=True` continues it, taking the same path as
    an uninterrupted run (shuffling is seeded per epoch); a finished run is returned as it is. With
    `overwrite=True` the old model stays until the new one is finished (epochs go to `audited.pt.new`).

    Args:
        data: the dataset the split indexes.
        split: the membership split; the model trains on its members, the head on its pool.
        arch: a zoo architecture.
        transform: preprocessing, recorded.
        config: the joint recipe.
        out: the output folder.
        arch_options: options of the architecture (width, ...).
        taps: module names to tap (comma-separated or a list); None for the architecture's preset.
        resume: continue `out`'s checkpoint.
        overwrite: replace `out`'s model and head once the new ones are finished.
        device: where training runs.
        show_progress: progress bars.

    Raises:
        InputError: before anything is written, for an existing model without `resume`/`overwrite`, both of
            them, a split of another dataset, a split whose pool lacks members or externals, unknown taps, or
            a checkpoint of another recipe.
    """
    if split.dataset != data.name:
        raise InputError(f"the split is for '{split.dataset}', the data is '{data.name}'")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder")
    run = ResumableRun(out / MODEL_FILE, resume=resume, overwrite=overwrite, recipe=RECIPE, kind="aMINT training")
    rows = _Rows(*amint_rows(split))
    if len(rows.head_members) == 0 or len(rows.head_external) == 0:
        raise InputError("the split's pool needs both members and externals for the head to learn from")
    train_cfg = config.train
    augment = AUGMENTATIONS.get(train_cfg.augment)
    c, h, _ = data.image_shape
    arch_args = {"in_channels": c, "num_classes": len(data.classes), "image_size": transform.size or h,
                 **(arch_options or {})}
    torch.manual_seed(train_cfg.seed)
    model = build(arch, **arch_args).to(device)  # type: ignore[arg-type]
    tap_names = resolve_taps(model, arch, taps)
    side = int(arch_args["image_size"])  # type: ignore[call-overload]
    spec = HeadSpec(tap_names, tuple(tap_shapes(model, tap_names, (c, side, side))), config.head_channels,
                    config.head_hidden)
    head = MintHead(spec).to(device)
    params = [*model.parameters(), *head.parameters()]
    optimizer = OPTIMIZERS.get(train_cfg.optimizer)(params, train_cfg.lr, train_cfg.weight_decay)
    schedule = SCHEDULES.get(train_cfg.schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: schedule(epoch, train_cfg.epochs))
    parts: dict[str, Stateful] = {"optimizer": optimizer, "scheduler": scheduler, "head_state": head}
    meta: dict[str, object] = {
        "arch": arch, "arch_args": arch_args, "dataset": data.name, "transform": transform.to_dict(),
        "split": asdict(split), "split_sha256": split.sha256, "train_config": asdict(train_cfg),
        "num_classes": len(data.classes), "classes": list(data.classes), "trained_on": "members",
        "amint_config": {**config.head_options(), "taps": list(tap_names)},
        "amint": {"head": spec.to_dict(), "head_fitted_on": "pool members and pool externals"},
    }
    progress, norms = Progress(), None
    with run:
        saved = run.restore(model, parts, meta)
        if saved is not None:
            record = CheckpointRecord.read(saved)
            if record.epochs_done == train_cfg.epochs and record.training is not None and (out / HEAD_FILE).exists():
                finished = TrainedHead.load(out / HEAD_FILE)
                if finished.model_fingerprint == fingerprint(model):
                    return AmintModel(AuditedModel(model.eval(), saved), finished, out)
            progress = Progress.of(record)
            norms = (record.amint or {}).get("normalisers")
        out.mkdir(parents=True, exist_ok=True)
        collector = TapCollector(model, tap_names)
        with torch_threads(train_cfg.threads), collector.attached(), progress_bar(
                f"aMINT {arch}", train_cfg.epochs, enabled=show_progress, completed=progress.epochs_done) as bar:
            for epoch in range(progress.epochs_done, train_cfg.epochs):
                t0 = time.perf_counter()
                stats, norms = _epoch(model, head, collector, data, rows, transform, optimizer, augment, config,
                                      epoch, device, norms)
                refuse_divergence({k: float(v) for k, v in stats.items()}, epoch + 1)
                scheduler.step()
                progress.add(stats, time.perf_counter() - t0)
                meta["amint"] = {**meta["amint"], "normalisers": norms}  # type: ignore[dict-item]
                progress.record(meta)
                run.save_epoch(model, parts, meta)
                bar.advance(1, f"CE {stats['task_loss']:.3f} acc {stats['task_accuracy']:.3f} "
                               f"BCE {stats['mint_loss']:.3f} head acc {stats['mint_accuracy']:.3f}")
        model.eval()
        head.eval()
        with torch_threads(train_cfg.threads):
            meta["record"] = audited_record(model, data, split, transform, device=device,
                                            show_progress=show_progress)
            trained = _finished_head(model, head, data, split, transform, meta, device)
        meta.update(train_seconds=round(progress.seconds, 2), seed=train_cfg.seed)
        run.finish(model, parts, meta)  # the finished model takes its place in one step
        trained.save(out / HEAD_FILE)
    return AmintModel(AuditedModel(model, meta), trained, out)


def _finished_head(model: nn.Module, head: MintHead, data: ImageSet, split: MembershipSplit, transform: Transform,
                   meta: dict[str, object], device: str) -> TrainedHead:
    """The head with what it was fitted on and its calibration: P(member) of the held-out externals."""
    calibration = np.intersect1d(split.holdout, split.external)
    outputs = forward_rows(model, head, data, calibration, transform, device=device)
    fitted = np.sort(np.asarray(split.pool, dtype=np.int64))
    head_meta = {"model_fingerprint": fingerprint(model), "arch": meta["arch"], "dataset": data.name,
                 "split_sha256": split.sha256, "transform": meta["transform"], "amint_config": meta["amint_config"],
                 "fitted_on": "the split's pool (members and externals)",
                 "calibration": "the split's held-out external rows"}
    return TrainedHead(head, head_meta, data.sample_ids[fitted], data.sample_ids[calibration], outputs.score)


def _epoch(model: nn.Module, head: MintHead, collector: TapCollector, data: ImageSet, rows: _Rows,
           transform: Transform, optimizer: torch.optim.Optimizer, augment: Augmentation, config: AmintConfig,
           epoch: int, device: str, norms: dict[str, float] | None) -> tuple[dict[str, float], dict[str, float]]:
    """One pass over the members, each batch beside a batch of pool externals; returns the epoch's means and
    the normalisers (set on the first batch of the run)."""
    model.train()
    head.train()
    cfg = config.train
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = rows.members[torch.randperm(len(rows.members), generator=gen).numpy()]
    # Externals cycle through seeded permutations so every member batch has an external batch beside it.
    laps = -(-len(order) // len(rows.head_external))
    ext_order = np.concatenate([rows.head_external[torch.randperm(len(rows.head_external), generator=gen).numpy()]
                                for _ in range(laps)])[:len(order)]
    seen_lookup = np.zeros(len(data), dtype=bool)
    seen_lookup[rows.head_members] = True
    totals = {"task_loss": 0.0, "mint_loss": 0.0, "task_correct": 0.0, "mint_correct": 0.0, "mint_rows": 0.0}
    for start in range(0, len(order), cfg.batch_size):
        idx_m, idx_e = order[start:start + cfg.batch_size], ext_order[start:start + cfg.batch_size]
        n = len(idx_m)
        x = augment(transform(data.images[np.concatenate([idx_m, idx_e])]), gen).to(device)
        y = torch.from_numpy(data.labels[idx_m]).to(device)
        logits, taps = collector(model, x)
        member_logit = head(taps)
        ce = F.cross_entropy(logits[:n], y)
        seen = torch.from_numpy(seen_lookup[idx_m]).to(device)
        ext_logit = member_logit[n:]
        bce_external = F.binary_cross_entropy_with_logits(ext_logit, torch.zeros_like(ext_logit))
        bce = bce_external
        if bool(seen.any()):
            seen_logit = member_logit[:n][seen]
            bce = bce + F.binary_cross_entropy_with_logits(seen_logit, torch.ones_like(seen_logit))
        if norms is None:  # the authors' normalisation: each term relative to its first-batch value
            norms = {"task_loss_0": max(float(ce.item()), 1e-12), "mint_loss_0": max(float(bce.item()), 1e-12)}
        loss = (config.task_weight * ce / norms["task_loss_0"] + config.mint_weight * bce / norms["mint_loss_0"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            totals["task_loss"] += ce.item() * n
            totals["task_correct"] += float((logits[:n].argmax(1) == y).sum())
            decided = torch.cat([member_logit[:n][seen] > 0, ext_logit <= 0])
            totals["mint_loss"] += bce.item() * len(decided)
            totals["mint_correct"] += float(decided.sum())
            totals["mint_rows"] += len(decided)
    if norms is None:
        raise InputError("the split has no members to train on")
    members, decided_rows = len(order), max(totals["mint_rows"], 1.0)
    return ({"task_loss": totals["task_loss"] / members, "task_accuracy": totals["task_correct"] / members,
             "mint_loss": totals["mint_loss"] / decided_rows, "mint_accuracy": totals["mint_correct"] / decided_rows},
            norms)
