r"""Training speed of the zoo on CPU: the cheap wins beside what `gmint.models.train` does today.

Audited-model training dominates every grid cell and every reference model, so each candidate speed-up of its
step is measured per architecture, as samples/s of whole training steps (data path, forward, cross-entropy,
backward, Adam step, the running loss and accuracy `train_epoch` keeps):

- `baseline`: the library's own step, the parts `gmint.models.train.train_epoch` is made of (`epoch_batches`,
  `train_step`): index the uint8 rows, `Transform` them
  (which returns batches with channels-last strides: it permutes (B, H, W, C) memory; convolutions follow
  their input's layout, so the whole network already runs channels-last, with NCHW-stored weights), the
  configured augmentation, forward, Adam from the `OPTIMIZERS` registry (torch's default
  implementation, on CPU the per-parameter for-loop), all in the step.
- `control`: the baseline once more, as a second model: its ratio to the baseline (1 but for noise) shows how
  far the machine's load moves a ratio.
- `nchw`: the batch copied to NCHW strides first: what a (B, C, H, W) data loader would feed, and the layout
  every layer then runs in.
- `channels_last`: model and batch in `torch.channels_last`.
- `adam_foreach`, `adam_fused`: Adam with `foreach=True` / `fused=True` (both run on CPU in torch 2.13).
- `prefetch`: the next batch's indexing, transform and augmentation prepared on a background thread while
  the current step computes (one batch ahead, in order, so every batch and random draw is the same).
- `compile`: the model wrapped in `torch.compile` (default inductor backend). Its first steps' time above
  the steady state is reported as the compile time; the compile caches are off, so it is a first run's.
- `best`: per architecture, every single change above that gained at least `min_gain` (the better of each
  alternative: layout, Adam implementation), combined; measured against a fresh baseline where it is not
  already one of the variants.

Every variant's model is built from the same seed and sees the same batches in the same order (the epoch
shuffles of `epoch_batches`), so the loss of each step can be compared with the baseline's: the report gives the
largest relative difference over the first `warmup` steps and over all steps taken, and the parameters'
relative difference after the warmup (fused Adam, compiled kernels and NCHW convolutions sum in other orders).

Timing: after `warmup` untimed steps per variant, `rounds` rounds in which every variant runs the same number
of steps (enough for `min_round_s`), one step of each in turn (A B C … A B C …, the order rotated each round),
so a change in machine load hits them alike. samples/s comes from the median round; the ratio is the median
over rounds of the baseline's time over the variant's in the same round. The ratio of the fastest rounds and
the ratio of process CPU times are kept beside it. Each step's data path (waiting for the
prefetched batch, for `prefetch`) is timed too: its share of the baseline step bounds what overlap can gain.

Rows are appended to the JSON (and the Markdown beside it rewritten) as each architecture's variants finish;
rows already there are skipped unless --force, so a killed run resumes. Results measured with other settings
are never mixed into one file.

    nice -n 10 python -m benchmarks.train_speed --config benchmarks/configs/train-speed.toml \
        --out benchmarks/results/train-speed-cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import math
import os
import statistics
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.optimizer import _default_to_fused_or_foreach

import gmint.models.train
from benchmarks.speed import load_results, machine_info
from gmint.data.base import ImageSet
from gmint.data.readers import load_dataset
from gmint.data.transforms import Transform
from gmint.files import atomic_write
from gmint.models.architectures import CPU_SCALE
from gmint.models.augment import AUGMENTATIONS
from gmint.models.train import OPTIMIZERS, TrainConfig, epoch_batches, train_step
from gmint.models.zoo import build
from gmint.registry import Registry
from gmint.threads import torch_threads

Json = dict[str, Any]
NOISY_SPREAD = 0.25        # (max - min) / median of a variant's round times flagged as noisy
LAYOUTS = ("transform", "nchw", "channels_last")
ADAMS = ("default", "foreach", "fused")


@dataclass(frozen=True)
class Variant:
    """One way of running the training step; the default values are `train_epoch`'s.

    Attributes:
        layout: `transform` (the batch as `Transform` returns it, the model NCHW), `nchw` (the batch made
            NCHW-contiguous) or `channels_last` (model and batch channels-last).
        adam: `default` (the OPTIMIZERS registry's Adam: torch's choice, the for-loop on CPU), `foreach`, `fused`.
        prefetch: prepare the next batch on a background thread while this one computes.
        compiled: run the model through `torch.compile`.
    """

    layout: str = "transform"
    adam: str = "default"
    prefetch: bool = False
    compiled: bool = False

    def changes(self) -> dict[str, object]:
        """The fields that differ from the baseline's: what this variant tries."""
        base = Variant()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(base, f.name)}

    def label(self) -> str:
        """`channels_last+fused+prefetch`: the changes in words, `baseline` for none."""
        words = {"layout": str(self.layout), "adam": f"adam_{self.adam}", "prefetch": "prefetch",
                 "compiled": "compile"}
        return "+".join(words[k] for k in self.changes()) or "baseline"


VARIANTS: Registry[Variant] = Registry("training variant")
VARIANTS.register("baseline")(Variant())
VARIANTS.register("control")(Variant())      # the baseline again: its ratio is the noise of the measurement
VARIANTS.register("nchw")(Variant(layout="nchw"))
VARIANTS.register("channels_last")(Variant(layout="channels_last"))
VARIANTS.register("adam_foreach")(Variant(adam="foreach"))
VARIANTS.register("adam_fused")(Variant(adam="fused"))
VARIANTS.register("prefetch")(Variant(prefetch=True))
VARIANTS.register("compile")(Variant(compiled=True))
BEST = "best"   # not a fixed variant: the gaining changes of an architecture combined
DEFAULT_VARIANTS = ("baseline", "control", "nchw", "channels_last", "adam_foreach", "adam_fused", "prefetch",
                    "compile", BEST)


@dataclass(frozen=True)
class Case:
    """One architecture on one input shape.

    Attributes:
        arch: a zoo name.
        options: the factory's options (CPU_SCALE's when the config gives none).
        channels, image_size: the input (3, 32: CIFAR-10; 1, 28: MNIST).
        data: `random` (seeded uniform pixels) or a dataset name read from --data-root (its first train rows).
        compile: whether the `compile` variant runs here (an inductor compile of a deep net takes minutes).
    """

    arch: str
    options: dict[str, Any]
    channels: int = 3
    image_size: int = 32
    data: str = "random"
    compile: bool = True

    @property
    def name(self) -> str:
        """`resnet50/rgb32`, `mobilenet/grey28`: the row key."""
        return f"{self.arch}/{'grey' if self.channels == 1 else 'rgb'}{self.image_size}"


@dataclass(frozen=True)
class Config:
    """A benchmark configuration (`benchmarks/configs/train-speed.toml` documents each key)."""

    models: list[dict[str, Any]]
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    batch_size: int = 64
    threads: int = 1
    seed: int = 0
    lr: float = 1e-4
    rows: int = 512
    num_classes: int = 10
    augment: str = "none"
    warmup: int = 4
    rounds: int = 5
    min_round_s: float = 0.5
    max_steps_per_round: int = 10
    min_gain: float = 0.03
    compile_backend: str = "inductor"
    compile_cache: bool = False

    def cases(self) -> list[Case]:
        """The models as Cases, options defaulting to CPU_SCALE."""
        return [Case(arch=str(m["arch"]), options=dict(m.get("options", CPU_SCALE.get(str(m["arch"]), {}))),
                     **{k: v for k, v in m.items() if k not in ("arch", "options")}) for m in self.models]

    def settings(self) -> Json:
        """What makes two measurements comparable: everything but the lists of models and variants."""
        return {k: v for k, v in asdict(self).items() if k not in ("models", "variants")}


class Trainer:
    """One variant's model, optimiser and batch stream, stepping with the library's `train_step`.

    Batches come from the library's `epoch_batches`, epoch after epoch. Every Trainer of a run starts from
    `torch.manual_seed(seed)`, so all variants train the same model on the same batches and their losses can be
    compared step by step.
    """

    def __init__(self, variant: Variant, case: Case, config: Config, data: ImageSet, transform: Transform) -> None:
        self.variant, self.config, self.data, self.transform = variant, config, data, transform
        self.augment = AUGMENTATIONS.get(config.augment)
        torch.manual_seed(config.seed)
        self.model = build(case.arch, case.channels, len(data.classes), case.image_size, **case.options).train()
        if variant.layout == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        params = list(self.model.parameters())
        if variant.adam == "default":
            self.optimizer = OPTIMIZERS.get("adam")(params, config.lr, 0.0)
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=0.0,
                                              **{variant.adam: True})  # type: ignore[arg-type]
        self.forward: Callable[[Tensor], Tensor] = self.model
        if variant.compiled:
            _cold_compiles(config.compile_cache)
            self.forward = torch.compile(self.model, backend=config.compile_backend)
        recipe = TrainConfig(batch_size=config.batch_size, lr=config.lr, augment=config.augment, seed=config.seed)
        rows = np.arange(len(data))
        self._batches = (batch for epoch in itertools.count()
                         for batch in epoch_batches(data, rows, transform, self.augment, recipe, epoch))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch") if variant.prefetch else None
        self._next: Future[tuple[Tensor, Tensor, int]] | None = None
        self.losses: list[float] = []
        self.total_loss, self.correct, self.seen = 0.0, 0, 0
        self.data_s = 0.0                           # time the step spent getting its batch

    def _prepare(self) -> tuple[Tensor, Tensor, int]:
        """The next batch, as `train_epoch` gets it, in this variant's layout."""
        x, y = next(self._batches)
        if self.variant.layout == "nchw":   # not contiguous(): a one-channel batch passes as NCHW already
            x = x.clone(memory_format=torch.contiguous_format)
        elif self.variant.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y, len(y)

    def step(self) -> float:
        """One training step; returns its loss."""
        t0 = time.perf_counter()
        if self._pool is None:
            x, y, n = self._prepare()
        else:
            if self._next is None:
                self._next = self._pool.submit(self._prepare)
            x, y, n = self._next.result()
            self._next = self._pool.submit(self._prepare)
        self.data_s += time.perf_counter() - t0
        loss, logits = train_step(self.forward, self.optimizer, x, y)
        value = loss.item()
        self.total_loss += value * n
        self.correct += int((logits.argmax(1) == y).sum())
        self.seen += n
        self.losses.append(value)
        return value

    def close(self) -> None:
        """Stop the prefetch thread (its pending batch is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _cold_compiles(cache: bool) -> None:
    """Forget earlier compiles (another variant's model of the same class would otherwise reuse its code) and,
    unless `cache`, switch inductor's on-disk caches off: the compile time measured is a first run's."""
    import torch._dynamo
    import torch._functorch.config
    import torch._inductor.config

    torch._dynamo.reset()
    if not cache:
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False


def _inductor_compile_threads() -> int | None:
    import torch._inductor.config

    return torch._inductor.config.compile_threads


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}"[:300]


def _relative(a: list[float], b: list[float]) -> float:
    """Largest |a − b| / |b| over the steps both took."""
    pairs = list(zip(a, b, strict=False))
    return max((abs(x - y) / max(abs(y), 1e-30) for x, y in pairs), default=float("nan"))


def _param_difference(model: nn.Module, reference: dict[str, Tensor],
                      initial: dict[str, Tensor]) -> tuple[float, float]:
    """How far the parameters are from the reference's, over all of them: ‖θ − θ_ref‖ / ‖θ_ref‖, and relative to
    the way the reference travelled from the common start, ‖θ − θ_ref‖ / ‖θ_ref − θ_0‖ (the share of the update
    that differs; a conv bias before BatchNorm, whose gradient is rounding noise that Adam scales up to full
    steps, can dominate it)."""
    names = [n for n, _ in model.named_parameters()]
    now = torch.cat([p.detach().flatten() for p in model.parameters()])
    ref = torch.cat([reference[n].flatten() for n in names])
    moved = (ref - torch.cat([initial[n].flatten() for n in names])).norm()
    diff = (now - ref).norm()
    return float(diff / ref.norm().clamp_min(1e-30)), float(diff / moved.clamp_min(1e-30))


def measure(case: Case, variants: dict[str, Variant], config: Config, data: ImageSet,
            transform: Transform) -> dict[str, Json]:
    """Warm up and time `variants` (the first one is the reference) in rotating rounds; one result per name."""
    results: dict[str, Json] = {}
    trainers: dict[str, Trainer] = {}
    reference_params: dict[str, Tensor] = {}
    initial_params: dict[str, Tensor] = {}
    names = list(variants)
    try:
        for name in names:
            warm: list[float] = []
            try:
                trainer = Trainer(variants[name], case, config, data, transform)
                if not initial_params:
                    initial_params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
                for _ in range(config.warmup):
                    t0 = time.perf_counter()
                    trainer.step()
                    warm.append(time.perf_counter() - t0)
                if not all(math.isfinite(v) for v in trainer.losses):
                    raise FloatingPointError(f"loss {trainer.losses}")
            except Exception as exc:  # a variant that cannot run is recorded, not fatal
                results[name] = {"variant": name, "features": asdict(variants[name]), "error": _first_line(exc)}
                print(f"  {case.name} {name}: {results[name]['error']}", flush=True)
                if name == names[0]:
                    raise
                continue
            trainers[name] = trainer
            results[name] = {"variant": name, "features": asdict(variants[name]), "warmup_s": warm}
            if name == names[0]:
                reference_params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
            results[name]["param_rel_diff"], results[name]["update_rel_diff"] = _param_difference(
                trainer.model, reference_params, initial_params)
        live = list(trainers)
        base_warm = results[names[0]]["warmup_s"][1:] or results[names[0]]["warmup_s"]
        steps = max(1, min(config.max_steps_per_round, math.ceil(config.min_round_s / statistics.median(base_warm))))
        wall: dict[str, list[float]] = {n: [] for n in live}
        cpu: dict[str, list[float]] = {n: [] for n in live}
        data_s: dict[str, list[float]] = {n: [] for n in live}
        for r in range(config.rounds):
            spent = {n: [0.0, 0.0, 0.0] for n in live}          # wall, CPU and data-path seconds this round
            for _ in range(steps):                               # steps interleaved: A B C … A B C …
                for name in live[r % len(live):] + live[:r % len(live)]:
                    trainer = trainers[name]
                    trainer.data_s = 0.0
                    t0, c0 = time.perf_counter(), time.process_time()
                    trainer.step()
                    spent[name][0] += time.perf_counter() - t0
                    spent[name][1] += time.process_time() - c0
                    spent[name][2] += trainer.data_s
            for name in live:
                wall[name].append(spent[name][0] / steps)
                cpu[name].append(spent[name][1] / steps)
                data_s[name].append(spent[name][2] / steps)
        base = names[0]
        for name in live:
            trainer, res = trainers[name], results[name]
            med, fastest = statistics.median(wall[name]), min(wall[name])
            res.update(
                steps_per_round=steps, rounds=config.rounds, step_s=wall[name], cpu_s=cpu[name], data_s=data_s[name],
                samples_per_s=config.batch_size / med, samples_per_s_fastest=config.batch_size / fastest,
                ratio=statistics.median(b / v for b, v in zip(wall[base], wall[name], strict=True)),
                ratio_of_medians=statistics.median(wall[base]) / med, ratio_fastest=min(wall[base]) / fastest,
                cpu_ratio=statistics.median(cpu[base]) / statistics.median(cpu[name]),
                baseline_samples_per_s=config.batch_size / statistics.median(wall[base]),
                data_share=statistics.median(data_s[name]) / med,
                spread=(max(wall[name]) - fastest) / med,
                first_steps_extra_s=sum(res["warmup_s"]) - config.warmup * med,
                losses=trainer.losses, running_loss=trainer.total_loss / trainer.seen,
                running_accuracy=trainer.correct / trainer.seen,
                loss_rel_diff=_relative(trainer.losses[:config.warmup], trainers[base].losses[:config.warmup]),
                loss_rel_diff_all=_relative(trainer.losses, trainers[base].losses))
            if variants[name].compiled:
                res["compile_s"] = res["first_steps_extra_s"]
    finally:
        for trainer in trainers.values():
            trainer.close()
    return results


def best_variant(rows: list[Json], min_gain: float) -> Variant:
    """Every single change that gained `min_gain` (of alternatives for one field, the fastest), combined."""
    chosen: dict[str, tuple[float, object]] = {}
    for row in rows:
        if "ratio" not in row or row["variant"] == BEST:
            continue
        changes = Variant(**row["features"]).changes()
        if len(changes) != 1 or row["ratio"] < 1 + min_gain:       # the control changes nothing
            continue
        (key, value), = changes.items()
        if key not in chosen or row["ratio"] > chosen[key][0]:
            chosen[key] = (row["ratio"], value)
    return replace(Variant(), **{k: v for k, (_, v) in chosen.items()})  # type: ignore[arg-type]


def case_data(case: Case, config: Config, root: Path | None) -> tuple[ImageSet, Transform]:
    """`config.rows` rows for the case: seeded random pixels, or the first train rows of a real dataset."""
    if case.data == "random":
        rng = np.random.default_rng(config.seed)
        n, size = config.rows, case.image_size
        data = ImageSet(name="random", images=rng.integers(0, 256, (n, size, size, case.channels), dtype=np.uint8),
                        labels=rng.integers(0, config.num_classes, n).astype(np.int64),
                        sample_ids=np.arange(n, dtype=np.int64), part=np.full(n, "train"),
                        classes=tuple(str(c) for c in range(config.num_classes)))
        return data, Transform()
    full = load_dataset(case.data, root)
    data = full.take(np.flatnonzero(full.part == "train")[:config.rows])
    c, h, _ = data.image_shape
    if c != case.channels:
        raise SystemExit(f"{case.data} has {c} channels, the config says {case.channels}")
    return data, Transform(size=None if h == case.image_size else case.image_size)


def save(path: Path, results: Json) -> None:
    """Write the JSON atomically and the Markdown report beside it."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_write(path.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(results))


def _source_sha256(module: object) -> str:
    """Hash of a module's source: which training code the baseline reproduces."""
    return hashlib.sha256(Path(str(getattr(module, "__file__", ""))).read_bytes()).hexdigest()[:16]


def run(config: Config, out: Path, *, force: bool = False, only: list[str] | None = None,
        data_root: Path | None = None, note: str = "") -> Json:
    """Measure every (case, variant) of `config` not yet in `out` (all selected ones with `force`)."""
    for name in config.variants:
        if name != BEST:
            VARIANTS.get(name)   # an unknown name fails before anything is measured
    out.parent.mkdir(parents=True, exist_ok=True)
    results = load_results(out, config.settings())
    rows: list[Json] = results["rows"]
    cases = [c for c in config.cases() if not only or any(o in c.name for o in only)]
    if force:
        rows[:] = [r for r in rows if r["case"] not in {c.name for c in cases}]
    params: list[Tensor] = [torch.nn.Parameter(torch.zeros(1))]
    fused, foreach = _default_to_fused_or_foreach(params, False, False)
    run_info: Json = {**machine_info(config.threads, torch.device("cpu")),
                      "train_py_sha256": _source_sha256(gmint.models.train),
                      "adam_default_on_cpu": "fused" if fused else "foreach" if foreach else "for-loop",
                      "inductor_compile_threads": _inductor_compile_threads(),
                      **({"note": note} if note else {})}
    results["runs"].append(run_info)
    results["variants"] = _in_order([*results.get("variants", []), *config.variants])  # every column measured
    order = [c.name for c in config.cases()]
    with torch_threads(config.threads):
        for case in cases:
            done = {r["variant"] for r in rows if r["case"] == case.name}
            todo = [v for v in config.variants if v not in done and v != BEST and (v != "compile" or case.compile)]
            if not todo and (BEST in done or BEST not in config.variants):
                continue
            data, transform = case_data(case, config, data_root)
            common = {"case": case.name, "arch": case.arch, "options": case.options, "channels": case.channels,
                      "image_size": case.image_size, "data": case.data,
                      "parameters": sum(p.numel() for p in build(case.arch, case.channels, len(data.classes),
                                                                   case.image_size, **case.options).parameters())}
            if todo:
                measured = _measure_rows(case, ["baseline", *[v for v in todo if v != "baseline"]], config, data,
                                         transform, len(results["runs"]) - 1, common)
                rows.extend(r for r in measured if r["variant"] in todo)
                _sort(rows, order)
                save(out, results)
            if BEST in config.variants and BEST not in done:
                rows.append(_best_row(case, [r for r in rows if r["case"] == case.name], config, data, transform,
                                      len(results["runs"]) - 1, common))
                _sort(rows, order)
            run_info["load_end"] = list(os.getloadavg())
            save(out, results)
    run_info["load_end"] = list(os.getloadavg())
    save(out, results)
    return results


def _measure_rows(case: Case, names: list[str], config: Config, data: ImageSet, transform: Transform, run_index: int,
                  common: Json) -> list[Json]:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    measured = measure(case, {n: VARIANTS.get(n) for n in names}, config, data, transform)
    stamp = {"run": run_index, "load": [load, os.getloadavg()[0]], "seconds": round(time.perf_counter() - t0, 1),
             "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    rows = [{**common, **res, **stamp} for res in measured.values()]
    print(summary_line(case.name, rows), flush=True)
    return rows


def _best_row(case: Case, case_rows: list[Json], config: Config, data: ImageSet, transform: Transform,
              run_index: int, common: Json) -> Json:
    """The gaining changes combined: copied from the variant it equals, or measured beside a fresh baseline."""
    best = best_variant(case_rows, config.min_gain)
    same = next((r for r in case_rows if r["variant"] != BEST and r["features"] == asdict(best) and "ratio" in r),
                None)
    if same is not None:
        return {**same, "variant": BEST, "same_as": same["variant"], "label": best.label()}
    load = os.getloadavg()[0]
    measured = measure(case, {"baseline": Variant(), BEST: best}, config, data, transform)
    row = {**common, **measured[BEST], "label": best.label(), "run": run_index,
           "load": [load, os.getloadavg()[0]],
           "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    print(summary_line(case.name, [row]), flush=True)
    return row


def _in_order(variants: list[str]) -> list[str]:
    """Variant names without repeats, in DEFAULT_VARIANTS' order (others after them)."""
    return sorted(dict.fromkeys(variants), key=lambda v: DEFAULT_VARIANTS.index(v) if v in DEFAULT_VARIANTS
                  else len(DEFAULT_VARIANTS))


def _sort(rows: list[Json], cases: list[str]) -> None:
    """Rows by the config's case order (cases it no longer lists last), then by variant."""
    variants = _in_order([r["variant"] for r in rows])
    rows.sort(key=lambda r: (cases.index(r["case"]) if r["case"] in cases else len(cases),
                             variants.index(r["variant"])))


def summary_line(case: str, rows: list[Json]) -> str:
    """`resnet50/rgb32: baseline 95/s, channels_last 1.04x, ...`."""
    parts = [f"{case}:"]
    for r in rows:
        if "error" in r:
            parts.append(f"{r['variant']} error")
        elif r["variant"] == "baseline":
            parts.append(f"baseline {r['samples_per_s']:.0f}/s")
        else:
            parts.append(f"{r['variant']}{' (' + r['label'] + ')' if 'label' in r else ''} {r['ratio']:.2f}x")
    return " ".join(parts)


def _speed_cell(row: Json | None, baseline: Json | None) -> str:
    if row is None:
        return "—"
    if "error" in row:
        return "error¹"
    flags = " ~" if row["spread"] > NOISY_SPREAD else ""
    if row["variant"] == "baseline":
        return f"{row['samples_per_s']:.0f}/s{flags}"
    label = f"{row['label']}: " if row["variant"] == BEST else ""
    own = row["baseline_samples_per_s"]          # measured beside another baseline (a later run, or `best`'s own)
    beside = f" beside {own:.0f}/s" if baseline and abs(own / baseline["samples_per_s"] - 1) > 0.01 else ""
    return (f"{label}{row['samples_per_s']:.0f}/s{beside} ×{row['ratio']:.2f} (fastest ×{row['ratio_fastest']:.2f})"
            f"{flags}")


def markdown(results: Json) -> str:
    """The report: machine header, samples/s and ratios, compile time and data path, numerics."""
    settings: Json = results["settings"]
    rows: list[Json] = results["rows"]
    runs: list[Json] = results["runs"]
    info = runs[-1]
    variants = [v for v in results.get("variants", []) if any(r["variant"] == v for r in rows)]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    by = {(r["case"], r["variant"]): r for r in rows}
    loads = [f"{r['load_start'][0]:.1f}→{(r.get('load_end') or r['load_start'])[0]:.1f}" for r in runs]
    lines = [
        "# Training speed on CPU: the cheap wins per zoo architecture", "",
        f"- Machine: {info['cpu']}, {info['usable_cores']} usable cores of {info['cores']}; torch {info['torch']}, "
        f"{settings['threads']} thread(s); Python {info['python']}; gmint {info['gmint']} at {info['commit'] or '?'}"
        f"{' with uncommitted changes' if info.get('uncommitted_changes') else ''} (train.py sha256 "
        f"{info['train_py_sha256']}); Adam's default on CPU: {info['adam_default_on_cpu']}.",
        f"- {len(runs)} run(s), last {info['date']}; 1-minute load average at start→end of each: {', '.join(loads)} "
        "(each row's is in the JSON). The machine was shared with other work: ratios are taken within the same "
        "rounds, so load changes hit every variant alike.",
        *[f"- Note (run {i}): {r['note']}" for i, r in enumerate(runs) if r.get("note")],
        f"- Training step at batch {settings['batch_size']} (seeded random uint8 pixels unless the case says "
        f"otherwise, {settings['rows']} rows shuffled per epoch as `epoch_batches` does, augmentation "
        f"`{settings['augment']}`), Adam lr {settings['lr']}; {settings['warmup']} untimed steps per variant, then "
        f"{settings['rounds']} rounds (rotating order) of ≥ {settings['min_round_s']} s each; torch.compile backend "
        f"`{settings['compile_backend']}`, caches {'on' if settings['compile_cache'] else 'off (a first run)'}.",
        "- Cells: samples/s of the median round, × the median over rounds of the baseline's time over the "
        "variant's in that round (>1 is faster; steps interleaved A B C … A B C …), and the ratio of the fastest "
        "rounds; `beside N/s`: measured beside another baseline measurement (a later run, or `best`'s own), "
        "whose samples/s it gives. ~: the variant's rounds spread more than "
        f"{NOISY_SPREAD:.0%} of their median. `best`: the changes that gained ≥ {settings['min_gain']:.0%} combined "
        "(measured beside a fresh baseline, or the one variant it equals).",
        *_noise_line(rows), "",
        "| case | parameters | " + " | ".join(variants) + " |", "|" + "---|" * (len(variants) + 2)]
    errors: list[str] = []
    for case in cases:
        first = next(r for r in rows if r["case"] == case)
        cells = [_speed_cell(by.get((case, v)), by.get((case, "baseline"))) for v in variants]
        errors += [f"{case} {v}: {by[(case, v)]['error']}" for v in variants if "error" in by.get((case, v), {})]
        lines.append(f"| {case} | {first['parameters']:,} | " + " | ".join(cells) + " |")
    lines += ["", "## Compile time, data path, CPU time", "",
              "Compile: the first steps' time above the steady state (seconds). Data path: the share of a "
              "baseline step spent indexing and transforming the batch (what overlapping it could save at most), "
              "and for `prefetch` the share still spent waiting for it. CPU ratio: the baseline's process CPU "
              "time per step over the variant's (blind to time the process waited for a core, not to the caches "
              "and memory bandwidth it shares).", "",
              "| case | compile s | data path (baseline) | data wait (prefetch) | "
              + " | ".join(f"CPU ratio {v}" for v in variants if v != "baseline") + " |",
              "|" + "---|" * (len(variants) + 3)]
    for case in cases:
        base, comp, pre = by.get((case, "baseline"), {}), by.get((case, "compile"), {}), by.get((case, "prefetch"), {})
        cells = [f"{comp['compile_s']:.1f}" if "compile_s" in comp else "—",
                 f"{base['data_share']:.2%}" if "data_share" in base else "—",
                 f"{pre['data_share']:.2%}" if "data_share" in pre else "—"]
        cells += [f"{by[(case, v)]['cpu_ratio']:.2f}" if "cpu_ratio" in by.get((case, v), {}) else "—"
                  for v in variants if v != "baseline"]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += ["", "## Numerics", "",
              f"Largest relative difference of the step losses from the baseline's (same seed, same batches): over "
              f"the first {settings['warmup']} steps / over every step taken; then, after the first "
              f"{settings['warmup']} steps, how far all parameters θ lie from the baseline's: ‖θ − θ_b‖ / ‖θ_b‖, "
              "and the share of the baseline's update that differs, ‖θ − θ_b‖ / ‖θ_b − θ_0‖ (a conv bias before "
              "BatchNorm, whose gradient is rounding noise that Adam turns into full steps, weighs heavily in it).",
              "",
              "| case | " + " | ".join(v for v in variants if v != "baseline") + " |",
              "|" + "---|" * len(variants)]
    for case in cases:
        cells = []
        for v in variants:
            r = by.get((case, v), {})
            if v == "baseline":
                continue
            cells.append(f"{r['loss_rel_diff']:.1e} / {r['loss_rel_diff_all']:.1e}; {r['param_rel_diff']:.1e}, "
                         f"{r['update_rel_diff']:.1e}" if "loss_rel_diff" in r else "—")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    if errors:
        lines += ["", "¹ Errors:", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def _noise_line(rows: list[Json]) -> list[str]:
    """The control's ratios: how far noise alone moves a ratio on this machine."""
    ratios = [r["ratio"] for r in rows if r["variant"] == "control" and "ratio" in r]
    if not ratios:
        return []
    return [f"- Noise: the `control` (the baseline run as a second model, A/A) ends at ×{min(ratios):.2f} to "
            f"×{max(ratios):.2f} over the {len(ratios)} cases: a ratio inside that band is no measured difference."]


def load_config(path: Path) -> Config:
    """Read a TOML config; unknown keys are an error (a typo must not silently fall back to a default)."""
    raw = tomllib.loads(path.read_text())
    known = {f.name for f in fields(Config)}
    if unknown := sorted(set(raw) - known):
        raise SystemExit(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    config = Config(**raw)
    case_keys = {f.name for f in fields(Case)}
    for m in config.models:
        if bad := sorted(set(m) - case_keys):
            raise SystemExit(f"{path}: unknown model keys {bad}; known: {sorted(case_keys)}")
    if config.rows % config.batch_size:
        raise SystemExit(f"{path}: rows ({config.rows}) must be a multiple of batch_size ({config.batch_size}): a "
                         "partial last batch would time another shape")
    return config


def refresh(out: Path) -> None:
    """Rewrite the Markdown from the JSON."""
    save(out, json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML configuration (required unless --report-only)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results; the Markdown goes beside it")
    parser.add_argument("--force", action="store_true", help="re-measure the selected cases")
    parser.add_argument("--only", action="append", default=[], metavar="CASE",
                        help="run only cases whose name ('resnet50/rgb32') contains this (repeatable)")
    parser.add_argument("--data-root", type=Path, default=os.environ.get("GMINT_DATA"),
                        help="datasets for cases with data = '<name>' (default $GMINT_DATA)")
    parser.add_argument("--note", default="", help="a remark on this run for the report's header")
    parser.add_argument("--report-only", action="store_true", help="measure nothing: rewrite the Markdown")
    args = parser.parse_args()
    if args.report_only:
        refresh(args.out)
    elif args.config is None:
        parser.error("--config is required unless --report-only")
    else:
        run(load_config(args.config), args.out, force=args.force, only=args.only, data_root=args.data_root,
            note=args.note)


if __name__ == "__main__":
    main()
