"""Speed of per-sample Weight Modifiers: gmint's engines beside the floor, Opacus and BackPACK.

For each model × layer setup (MEAN reduction) every method runs on the same batch: seeded random images
through gmint's default transform, float32, in the `memory_format` of the config (`contiguous` N, C, H, W
by default, or `channels_last`, the strides gmint's `Transform` itself returns), model in eval mode with
seeded random weights (and random norm statistics, see `randomise_norms`). `extract` reads its rows
through a transform giving that same layout.

- `floor`: one batched forward + backward of the summed loss, `torch.autograd.grad` w.r.t. the selected
  parameters only (every other parameter frozen, so autograd records and computes nothing it does not
  need) — the cost of a plain backward, with no per-sample work.
- `naive`, `vmap` (chunked, `chunk_size`), `hooks`, `auto`: gmint's engines (`gmint.features.engine.ENGINES`), as an
  extraction runs them: chosen once with `choose_engine` (auto: proven on the batch; hooks: its conditions
  checked), then timed per call.
  `naive` is timed on the first `naive_samples` samples only (a per-sample loop: its time is linear).
- `opacus`: `GradSampleModule` (hooks, `loss_reduction="sum"`) then MEAN of each selected `grad_sample`.
  Only the selected parameters require grad — the fastest way to get them from Opacus, which also lets
  it run on BatchNorm models (BN stays in eval mode and frozen). Opacus captures activations only from
  modules in training mode, so the selected layers (Conv2d/Linear, with no mode-dependent behaviour)
  are put in training mode, everything else stays in eval mode. Opacus 1.6's Conv2d `grad_sample` is
  wrong when the conv's input has channels-last strides (the check below flags it).
- `backpack`: `extend(model)`, `extend(CrossEntropyLoss(reduction="sum"))`, `BatchGrad`, then MEAN of
  each selected `grad_batch`; same freezing.
- `opacus_all`, `backpack_all` (optional): the same with every parameter trainable, as the libraries are
  used by default (Opacus refuses BatchNorm models then).
- `extract`: the whole `gmint.features.extract.extract` (in-memory ImageSet → transform → engine → reduction →
  HDF5 writes to a temporary file, with its provenance) on `extract_rows` rows, with the fastest exact
  engine (`auto`, else `hooks`, else `vmap`), which it proves on its first batch against the naive loop
  (`gmint.features.engine.selfcheck`); its per-sample time is compared with the floor's. `extract_unchecked` is
  the same extraction without that proof, alternating with it in each round: the check's cost.
  `extract_unrechecked` (with `extract_recheck = true`) keeps the first-batch proof but not the re-checks of
  later batches (one random row recomputed by the naive loop within 2% of the engine's time, and the last
  batch always): what proving the engine through the whole run costs.
- `extract_steady` (with `extract_steady = true`): what each further row of an extraction costs once it runs,
  without its fixed start-up (engine choice and self-check, model and store set-up). Each round also runs the
  shipped `extract` on twice the rows; the per-row time is (t(2N) − t(N)) / N of the runs' `statistic`, and the
  start-up t(N) − N × that (`startup_s`, in seconds). A real audit extracts thousands of rows, so this is the ratio it
  sees; `extract` on N rows carries the whole start-up.
- `extract_floor`: the floor over as many rows, timed in the same rounds as the extractions; the `extract*`
  columns are ratios to it (to `floor`, timed in other rounds, where it is absent), so a change of machine
  load between the method rounds and the extraction rounds does not land in the ratio.

Every method's features are checked against `vmap`'s (largest error relative to the largest value).

Timing: `warmup` untimed calls per method (the last one measures peak memory), then `repeats` rounds in
which every method runs, in an order rotated each round so a change in machine load hits all methods
alike; within a round a method shorter than `min_round_s` is called back to back until the round lasts
that long, and the round counts the mean per call (`time.perf_counter`, synchronised on CUDA). Each
method's time is the `statistic` of its rounds: `median` (default), or `min` on a machine shared with
other work, where a round that lost its cores to another process says nothing about the method (Python's
`timeit` advice; both are kept in the JSON). Ratios are per-sample times over the floor's.

Peak memory (CPU): the increase of the process's resident-set high-water mark during one call. Before
the call, freed heap memory is returned to the OS (`malloc_trim`) and the high-water mark is reset to
the current RSS (`/proc/self/clear_refs`, Linux ≥ 4.0), so each method is measured in isolation without
a fresh process per method. It counts everything the call touches (activations, gradients, per-sample
tensors, allocator slack). On a first call it agrees within 5-10% with the `ru_maxrss` increase of a
fresh process (checked on resnet18/entry: floor, hooks, vmap, BackPACK); the steady state (second
call) is reported, without one-time allocations. `extract`'s memory is not measured. On CUDA:
`torch.cuda.max_memory_allocated` above the memory already held.

Rows are written to the JSON file, and the Markdown report beside it rewritten, as soon as each is done;
rows already in the file are skipped unless --force, so a killed run resumes. Results measured with
other settings are never mixed into one file.

    python -m benchmarks.speed --config benchmarks/configs/speed.toml --out benchmarks/results/speed-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import datetime
import gc
import hashlib
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import gmint
from benchmarks.check import MEMORY, Limit, judge, ratio
from gmint.data.base import ImageSet
from gmint.data.transforms import Transform
from gmint.features.engine import ENGINES, LOSSES, EngineChoice, EngineResult
from gmint.features.engine.hooks import HooksPlan, unsupported_parameters
from gmint.features.engine.selfcheck import ProvenEngine, choose_engine
from gmint.features.extract import Rows, extract
from gmint.features.layers import resolve_parameters
from gmint.features.reduce import Reduction, parse_reduction
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.files import atomic_write
from gmint.models.architectures import CPU_SCALE
from gmint.models.io import AuditedModel
from gmint.models.zoo import build
from gmint.progress import progress_bar
from gmint.registry import Registry

EXTRACT_ENGINES = ("auto", "hooks", "vmap")   # the fastest exact engine first
EXTRACT_METHODS = ("extract", "extract_unchecked", "extract_unrechecked", "extract_steady",
                   "extract_floor")  # whole-extraction columns
Json = dict[str, Any]                          # a JSON object of the results
MAX_CALLS = 50                                 # back-to-back calls per timed round, at most
NOISY_SPREAD = 0.25                            # (max - min) / median of a method's times flagged as noisy
STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}


@dataclass(frozen=True)
class Config:
    """A benchmark configuration (`benchmarks/configs/speed.toml` documents each key)."""

    models: list[dict[str, Any]]
    setups: list[str] = field(default_factory=lambda: ["entry", "middle", "output", "combined"])
    methods: list[str] = field(default_factory=lambda: ["floor", "naive", "vmap", "hooks", "auto", "opacus",
                                                        "backpack"])
    batch_size: int = 64
    chunk_size: int = 32
    threads: int = 2
    device: str = "cpu"
    reduction: str = "mean"
    loss: str = "cross_entropy"
    memory_format: str = "contiguous"
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    seed: int = 0
    warmup: int = 2
    repeats: int = 5
    min_round_s: float = 0.2
    statistic: str = "median"
    naive_samples: int = 8
    extract_rows: int = 256
    extract_repeats: int = 2
    extract_steady: bool = False
    extract_recheck: bool = False
    targets: dict[str, float] = field(default_factory=dict)
    memory_targets: dict[str, float] = field(default_factory=dict)

    def settings(self) -> Json:
        """What changes the meaning of a number: results measured with other values are not mixed."""
        return {k: getattr(self, k) for k in ("batch_size", "chunk_size", "threads", "device", "reduction", "loss",
                                              "memory_format", "image_size", "channels", "num_classes", "seed",
                                              "naive_samples", "extract_rows", "statistic")}


@dataclass(frozen=True)
class ContiguousTransform(Transform):
    """gmint's transform, then a contiguous (N, C, H, W) copy — the layout a DataLoader yields. gmint's own
    `Transform` returns channels-last strides (a permuted (N, H, W, C) array), on which Opacus 1.6 computes
    wrong Conv2d per-sample gradients, and which makes CPU convolutions faster for every method."""

    def __call__(self, images: np.ndarray) -> Tensor:
        return super().__call__(images).contiguous()


class Unsupported(Exception):
    """A method cannot compute this case; the message says why."""


@dataclass(frozen=True)
class Case:
    """One row's inputs: the model (eval mode), its selected parameters and the batch."""

    model: nn.Module
    layers: list[str]
    reduction: Reduction
    x: Tensor
    y: Tensor
    chunk_size: int
    loss: str
    naive_samples: int


@dataclass(frozen=True)
class Runner:
    """One prepared method: `run()` processes `samples` samples, returning (B, d) features per layer
    (None for the floor)."""

    run: Callable[[], dict[str, Tensor] | None]
    samples: int


METHODS: Registry[Callable[[Case], Runner]] = Registry("benchmark method")


def frozen_copy(model: nn.Module, layers: list[str]) -> nn.Module:
    """A copy of the model in which only `layers` require grad."""
    model = copy.deepcopy(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in layers)
    return model


@METHODS.register("floor")
def floor_method(case: Case) -> Runner:
    model = frozen_copy(case.model, case.layers)
    named = dict(model.named_parameters())
    params = [named[n] for n in case.layers]
    loss_fn = LOSSES.get(case.loss)

    def run() -> None:
        with torch.enable_grad():
            torch.autograd.grad(loss_fn(model(case.x), case.y), params)

    return Runner(run, len(case.x))


@METHODS.register("chain")
def chain_method(case: Case) -> Runner:
    """The backward every output-gradient method needs: the loss's gradient with respect to the outputs of the
    selected layers' modules, and nothing else — no weight gradient, no capture, no reduction. hooks computes
    this plus its reductions; the floor computes this plus the selected weights' gradients. So no method that
    reads output gradients can run below chain, and hooks ÷ floor cannot fall below chain ÷ floor."""
    model = frozen_copy(case.model, [])
    modules = dict(model.named_modules())
    owners = list(dict.fromkeys(name.rpartition(".")[0] for name in case.layers))
    outputs: list[Tensor] = []
    for owner in owners:  # on this private copy, for every call
        modules[owner].register_forward_hook(lambda _m, _i, out: outputs.append(out))
    loss_fn = LOSSES.get(case.loss)
    x = case.x.detach().requires_grad_()  # a graph without trainable weights starts at the input

    def run() -> None:
        outputs.clear()
        with torch.enable_grad():
            torch.autograd.grad(loss_fn(model(x), case.y), outputs)

    return Runner(run, len(case.x))


def _engine_method(name: str) -> Callable[[Case], Runner]:
    def prepare(case: Case) -> Runner:
        if name not in ENGINES:
            raise Unsupported(f"engine '{name}' is not registered in this gmint")
        n = case.naive_samples if name == "naive" else len(case.x)
        x, y = case.x[:n], case.y[:n]
        # As an extraction runs them: the engine is chosen (auto: proven on the batch) and hooks' conditions
        # checked once, then every call runs the choice.
        choice, _ = choose_engine(case.model, case.layers, case.reduction, x, y, requested=name, loss=case.loss,
                                  chunk_size=case.chunk_size)
        if choice.engine != name and name != "auto":
            raise Unsupported(f"engine '{name}' did not pass its check on this model ({choice.engine} would run)")
        return Runner(lambda: choice.run(case.model, case.layers, case.reduction, x, y, loss=case.loss,
                                         chunk_size=case.chunk_size).features, n)

    return prepare


for _name in ("naive", "vmap", "hooks", "auto"):
    METHODS.register(_name)(_engine_method(_name))


def _selected_or_all(case: Case, scope: str) -> nn.Module:
    return frozen_copy(case.model, case.layers) if scope == "selected" else copy.deepcopy(case.model)


def _opacus_method(scope: str) -> Callable[[Case], Runner]:
    def prepare(case: Case) -> Runner:
        try:
            from opacus import GradSampleModule
        except ImportError:
            raise Unsupported("opacus is not installed (pip install 'gmint[bench]')") from None
        model = _selected_or_all(case, scope)
        for module in model.modules():   # hooks capture only in training mode; see the module docstring
            module.train(any(p.requires_grad for p in module.parameters(recurse=False)))
        try:
            gsm = GradSampleModule(model, loss_reduction="sum", strict=True)
        except NotImplementedError:
            refused = sorted({type(m).__name__ for m in model.modules() if any(True for _ in m.buffers(recurse=False))
                              and any(p.requires_grad for p in m.parameters(recurse=False))})
            raise Unsupported(f"Opacus refuses trainable layers with buffers ({', '.join(refused)})") from None
        named = dict(model.named_parameters())
        loss_fn = LOSSES.get(case.loss)

        def run() -> dict[str, Tensor]:
            loss_fn(gsm(case.x), case.y).backward()
            features = {n: case.reduction(named[n].grad_sample, n) for n in case.layers}
            for p in model.parameters():
                p.grad = None
                p.grad_sample = None
            return features

        return Runner(run, len(case.x))

    return prepare


def _backpack_method(scope: str) -> Callable[[Case], Runner]:
    def prepare(case: Case) -> Runner:
        try:
            from backpack import backpack, extend
            from backpack.extensions import BatchGrad
        except ImportError:
            raise Unsupported("backpack-for-pytorch is not installed (pip install 'gmint[bench]')") from None
        if case.loss != "cross_entropy":
            raise Unsupported(f"no BackPACK loss module for '{case.loss}' here")
        model = extend(_selected_or_all(case, scope))
        loss_module = extend(nn.CrossEntropyLoss(reduction="sum"))
        named = dict(model.named_parameters())

        def run() -> dict[str, Tensor]:
            with backpack(BatchGrad()):
                loss_module(model(case.x), case.y).backward()
            features = {n: case.reduction(named[n].grad_batch, n) for n in case.layers}
            for p in model.parameters():
                p.grad = None
                if hasattr(p, "grad_batch"):
                    del p.grad_batch
            return features

        return Runner(run, len(case.x))

    return prepare


METHODS.register("opacus")(_opacus_method("selected"))
METHODS.register("opacus_all")(_opacus_method("all"))
METHODS.register("backpack")(_backpack_method("selected"))
METHODS.register("backpack_all")(_backpack_method("all"))
COMPETITORS = ("opacus", "opacus_all", "backpack", "backpack_all")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if platform.system() == "Linux" else None


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory added during `fn()` in MiB (see the module docstring), None where it cannot be measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if _LIBC is None or not Path("/proc/self/clear_refs").exists():
        fn()
        return None
    _LIBC.malloc_trim(0)
    base = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")   # reset VmHWM to the current RSS
    fn()
    return (_status_kib("VmHWM") - base) / 1024


def relative_error(features: dict[str, Tensor], reference: dict[str, Tensor]) -> float:
    """Largest |a - b| over the largest |b|, over layers and the samples both have."""
    worst = 0.0
    for name, ref in reference.items():
        got = features[name]
        n = min(len(got), len(ref))
        scale = ref[:n].abs().max().item() or 1.0
        worst = max(worst, (got[:n].double() - ref[:n].double()).abs().max().item() / scale)
    return worst


def _timed(fn: Callable[[], object], device: torch.device, calls: int = 1) -> float:
    """Seconds per call of `fn`, over `calls` back-to-back calls."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / calls


def measure(case: Case, methods: list[str], *, warmup: int, repeats: int, min_round_s: float, statistic: str,
            device: torch.device) -> dict[str, Json]:
    """Per method: times, per-sample seconds, peak memory, error vs vmap, notes — or why it did not run.

    A method faster than `min_round_s` is called back to back until a round lasts that long (the round's
    time is the mean per call), so short calls are not at the mercy of one scheduler hiccup.
    """
    results: dict[str, Json] = {}
    runners: dict[str, Runner] = {}
    outputs: dict[str, dict[str, Tensor]] = {}
    calls: dict[str, int] = {}
    for name in methods:
        try:
            runner = METHODS.get(name)(case)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for _ in range(max(warmup - 1, 0)):
                    runner.run()
                out: list[dict[str, Tensor] | None] = []
                seconds: list[float] = []
                peak = peak_memory_mib(
                    lambda r=runner, o=out, t=seconds: t.append(_timed(lambda: o.append(r.run()), device)), device)
        except Unsupported as exc:
            results[name] = {"unsupported": str(exc)}
            continue
        except Exception as exc:  # a competitor's limits, or a bug in an engine: recorded, not fatal
            key = "unsupported" if name in COMPETITORS else "error"
            results[name] = {key: _first_line(exc)}
            continue
        runners[name] = runner
        calls[name] = max(1, min(MAX_CALLS, math.ceil(min_round_s / max(seconds[0], 1e-6))))
        if out[0] is not None:
            outputs[name] = out[0]
        notes = sorted({_first_line(w.message) for w in caught})
        results[name] = {"samples": runner.samples, "peak_mib": peak, **({"notes": notes} if notes else {})}
    reference = outputs.get("vmap") or outputs.get("naive")
    for name, features in outputs.items():
        if reference is not None:
            results[name]["max_rel_err"] = relative_error(features, reference)

    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(repeats):
            for name in order[r % len(order):] + order[:r % len(order)]:
                times[name].append(_timed(runners[name].run, device, calls[name]))
    for name, ts in times.items():
        results[name].update(calls_per_round=calls[name], **summarise(ts, runners[name].samples, statistic))
    return results


def summarise(times: list[float], samples: int, statistic: str) -> Json:
    """Seconds per call by `statistic`, the rounds themselves, per-sample figures and the spread."""
    seconds = STATISTICS[statistic](times)
    median = statistics.median(times)
    return {"seconds": seconds, "times": times, "median_s": median, "min_s": min(times),
            "per_sample_s": seconds / samples, "samples_per_s": samples / seconds,
            "spread": (max(times) - min(times)) / median}


class UnrecheckedEngine(ProvenEngine):
    """`extract`'s engine with its first-batch proof but without the re-checks of later batches: timed beside the
    shipped one (`extract_unrechecked`), it measures what proving the engine through the whole run costs."""

    def _recheck(self, *args: object) -> None:
        """No re-check (the last batch's included)."""


class UncheckedEngine(ProvenEngine):
    """`extract`'s engine without its first-batch proof (no probe batches, no naive-loop check): what an
    extraction cost before the self-check, timed beside it to measure what the check adds."""

    def __call__(self, model: nn.Module, layers: list[str], reduction: Reduction, x: Tensor, y: Tensor, *,
                 loss: str = "cross_entropy", chunk_size: int | None = 64) -> EngineResult:
        if self.choice is None:
            fallback = unsupported_parameters(model, layers)
            plan = HooksPlan(tuple(layers), fallback) if not fallback else None
            self.choice = EngineChoice(self.requested, "hooks" if plan else "vmap", (), 0.0, (), plan)
        return self.choice.run(model, layers, reduction, x, y, loss=loss, chunk_size=chunk_size)


def measure_extract(case: Case, data: ImageSet, transform: Transform, *, setup: str, arch: str,
                    batch_size: int, rows: int, repeats: int, statistic: str, steady: bool = False,
                    recheck: bool = False) -> dict[str, Json]:
    """Seconds of the whole `extract` on the first `rows` rows of `data`, with the fastest exact engine, as
    shipped (`extract`: engine chosen and checked on the first batch) and without the check
    (`extract_unchecked`), alternating in each round; with `steady`, also on twice the rows, from which
    `extract_steady` takes the per-row cost past the start-up; with `recheck`, also without the re-checks of
    later batches (`extract_unrechecked`), the cost of proving the engine through the run."""
    engine = next((e for e in EXTRACT_ENGINES if e in ENGINES), None)
    if engine is None:
        return {"extract": {"unsupported": "no exact engine registered"}}
    audited = AuditedModel(case.model, {"arch": arch, "num_classes": len(data.classes)})
    variants = {"extract": (ProvenEngine, rows), "extract_unchecked": (UncheckedEngine, rows)}
    if steady:
        variants["extract_double"] = (ProvenEngine, 2 * rows)
    if recheck:
        variants["extract_unrechecked"] = (UnrecheckedEngine, rows)
    times: dict[str, list[float]] = {name: [] for name in [*variants, "extract_floor"]}
    shares: list[float] = []  # the shipped extraction's own record: its re-checks' seconds over its wall time
    floor = floor_method(case).run
    floor_calls = math.ceil(rows / len(case.x))  # whole batches, scaled back to `rows` rows
    module = importlib.import_module("gmint.features.extract")  # the module (gmint.extract is also the function)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for round_ in range(repeats):
            for name in sorted(times, reverse=bool(round_ % 2)):
                if name == "extract_floor":  # the floor over as many rows, in the same round
                    times[name].append(_timed(floor, case.x.device, floor_calls) * rows / len(case.x))
                    continue
                engine_class, n = variants[name]
                index = np.arange(n, dtype=np.int64)
                selection = Rows(index, np.full(n, -1, dtype=np.int8), np.full(n, -1, dtype=np.int8))
                module.ProvenEngine = engine_class  # type: ignore[misc]
                try:
                    t0 = time.perf_counter()
                    settings = ExtractSettings(layer_setup=setup, reduction="mean", engine=engine, transform=transform,
                                               loss=case.loss, batch_size=batch_size, chunk_size=case.chunk_size,
                                               device=str(case.x.device))
                    extract(audited, data, selection, settings, out=Path(tmp) / "speed.h5", overwrite=True)
                    times[name].append(time.perf_counter() - t0)
                    if name == "extract":
                        shares.append(_recheck_seconds(Path(tmp) / "speed.h5") / times[name][-1])
                finally:
                    module.ProvenEngine = ProvenEngine  # type: ignore[misc]
    results = {name: {"engine": engine, "samples": rows, **summarise(times[name], rows, statistic)}
               for name in ("extract", "extract_unchecked", "extract_floor", "extract_unrechecked") if name in times}
    if shares:
        results["extract"]["recheck_share"] = statistics.median(shares)
    if steady:
        results["extract_steady"] = {"engine": engine, "samples": rows,
                                     **steady_result(times["extract"], times["extract_double"], rows, statistic)}
    return results


def _recheck_seconds(store: Path) -> float:
    """Seconds the extraction in `store` spent re-checking later batches, as its provenance records them."""
    with FeatureStore.open(store) as opened:
        record = opened.provenance.get("engine_recheck")
    return float(record.get("check_seconds", 0.0)) if isinstance(record, dict) else 0.0


def steady_result(single: list[float], double: list[float], rows: int, statistic: str) -> Json:
    """Per-row seconds past the start-up, from rounds of `rows` and 2 × `rows` rows: the difference of the
    two runs' `statistic` (with `min`, each run's best round, unbiased by a round that lost its core, where a
    per-round difference would favour the round whose single run was slowed), and the start-up itself;
    unresolved when the noise is larger than the rows' cost (more rows are needed)."""
    per_row = (STATISTICS[statistic](double) - STATISTICS[statistic](single)) / rows
    if per_row <= 0:
        return {"unsupported": f"unresolved: {rows} more rows cost no measurable time (noise); use more extract_rows"}
    return {"per_sample_s": per_row, "samples_per_s": 1 / per_row, "double_times": double,
            "startup_s": STATISTICS[statistic](single) - rows * per_row,
            "spread": (max(double) - min(double)) / statistics.median(double)}


def add_ratios(methods: dict[str, Json]) -> None:
    """Each measured method's time (paired per round, see `benchmarks.check.ratio`) and peak memory over
    the floor's; the whole extractions' times over the floor timed in their own rounds, where it was."""
    row = {"methods": methods}
    for name, result in methods.items():
        floor = "extract_floor" if name in EXTRACT_METHODS and "extract_floor" in methods else "floor"
        if "per_sample_s" in result and (r := ratio(row, Limit(name, floor, 1.0))) is not None:
            result["ratio"] = r
        if result.get("peak_mib") is not None and (r := ratio(row, Limit(name, "floor", 1.0, MEMORY))) is not None:
            result["peak_ratio"] = r


# The vector extensions that choose CPU kernels: two machines that differ in them can train the same seed to
# weights that differ in the low bits, which the figures measured on them then carry.
CPU_ISA = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def machine_info(threads: int, device: torch.device) -> Json:
    """CPU model and vector extensions, cores, library versions, load, date and the gmint commit, for the
    report's header."""
    cpuinfo = _read("/proc/cpuinfo").splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor() or "unknown")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    info: Json = {
        "cpu": cpu, "cpu_isa": [f for f in flags if f in CPU_ISA], "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "threads": threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "device": str(device),
        "torch": torch.__version__, "python": platform.python_version(),
        "gmint": gmint.__version__, "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain")), "engine_sha256": engine_sha256(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "load_start": list(os.getloadavg()),
    }
    for key, package in (("opacus", "opacus"), ("backpack", "backpack-for-pytorch")):
        try:
            info[key] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[key] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def engine_sha256() -> str:
    """Hash of gmint's engine sources: which engine code was timed, even with uncommitted changes."""
    h = hashlib.sha256()
    for path in sorted(Path(gmint.__file__).parent.joinpath("engine").glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def load_results(path: Path, settings: Json) -> Json:
    """The results so far, or an empty file; refuses a file measured with other settings."""
    if not path.exists():
        return {"settings": settings, "runs": [], "rows": []}
    results = json.loads(path.read_text())
    if results["settings"] != settings:
        diff = {k: (results["settings"].get(k), v) for k, v in settings.items() if results["settings"].get(k) != v}
        raise SystemExit(f"{path} was measured with other settings {diff} (stored, now); use another --out")
    return results


def save(path: Path, results: Json) -> None:
    """Write JSON atomically and the Markdown report beside it."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(results))


def run(config: Config, out: Path, *, force: bool = False, only: list[str] | None = None, note: str = "",
        show_progress: bool = False) -> dict[str, Any]:
    """Measure every (model, setup) row of `config` not yet in `out` (all selected ones with `force`)."""
    device = torch.device(config.device)
    torch.set_num_threads(config.threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = load_results(out, config.settings())
    results.update(targets=config.targets, memory_targets=config.memory_targets, methods=config.methods)
    rows: list[dict[str, Any]] = results["rows"]
    archs = [str(m["arch"]) for m in config.models]
    plan = [(a, s) for a in archs for s in config.setups if not only or any(o in f"{a}/{s}" for o in only)]
    done = {(r["model"], r["setup"]) for r in rows}
    todo = [key for key in plan if force or key not in done]
    run_info = {**machine_info(config.threads, device), **({"note": note} if note else {})}
    results["machine"] = run_info
    results["runs"].append(run_info)

    data = random_images(config)
    transform = ContiguousTransform() if config.memory_format == "contiguous" else Transform()
    x = transform(data.images[:config.batch_size]).to(device)
    y = torch.from_numpy(data.labels[:config.batch_size]).to(device)
    reduction = parse_reduction(config.reduction, config.seed)
    with progress_bar("speed", len(todo), enabled=show_progress) as bar:
        for spec in config.models:
            arch = str(spec["arch"])
            arch_setups = [s for a, s in todo if a == arch]
            if not arch_setups:
                continue
            options = dict(spec.get("options", CPU_SCALE.get(arch, {})))
            torch.manual_seed(config.seed)
            model = build(arch, config.channels, config.num_classes, config.image_size, **options)
            model = randomise_norms(model).to(device).eval()
            for setup in arch_setups:
                case = Case(model, resolve_parameters(model, setup, x), reduction, x, y, config.chunk_size, config.loss,
                            config.naive_samples)
                load_start = os.getloadavg()[0]
                methods = measure(case, config.methods, warmup=config.warmup, repeats=config.repeats,
                                  min_round_s=config.min_round_s, statistic=config.statistic, device=device)
                if config.extract_rows:
                    methods |= measure_extract(case, data, transform, setup=setup, arch=arch,
                                                         batch_size=config.batch_size, rows=config.extract_rows,
                                                         repeats=config.extract_repeats, statistic=config.statistic,
                                                         steady=config.extract_steady,
                                                         recheck=config.extract_recheck)
                add_ratios(methods)
                row = {"model": arch, "setup": setup, "options": options, "layers": case.layers,
                       "parameters": sum(p.numel() for p in model.parameters()),
                       "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                       "run": len(results["runs"]) - 1, "load": [load_start, os.getloadavg()[0]],
                       "methods": methods}
                rows[:] = [r for r in rows if (r["model"], r["setup"]) != (arch, setup)] + [row]
                rows.sort(key=lambda r: (archs.index(r["model"]) if r["model"] in archs else len(archs),
                                         config.setups.index(r["setup"]) if r["setup"] in config.setups
                                         else len(config.setups)))
                run_info["load_end"] = list(os.getloadavg())
                save(out, results)
                print(summary_line(row, config.targets), flush=True)
                bar.advance(1, status=f"{arch}/{setup}")
    run_info["load_end"] = list(os.getloadavg())
    save(out, results)
    return results


def randomise_norms(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and norm affine parameters, as after training: at their initial
    values a LayerNorm output has zero mean and MEAN of the Linear after it is rounding noise, which
    would make the features' cross-check between methods meaningless (timings do not change)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.LayerNorm) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def refresh(out: Path) -> None:
    """Recompute every row's ratios and rewrite the JSON and Markdown (after a change to the report)."""
    results = json.loads(out.read_text())
    for row in results["rows"]:
        add_ratios(row["methods"])
    save(out, results)


def random_images(config: Config) -> ImageSet:
    """Seeded uniform uint8 images and labels: enough rows for one batch and for `extract` (twice its rows
    for `extract_steady`)."""
    n = max(config.batch_size, config.extract_rows * (2 if config.extract_steady else 1))
    rng = np.random.default_rng(config.seed)
    size = config.image_size
    return ImageSet(name="speed-random", images=rng.integers(0, 256, (n, size, size, config.channels), dtype=np.uint8),
                    labels=rng.integers(0, config.num_classes, n).astype(np.int64),
                    sample_ids=np.arange(n, dtype=np.int64), part=np.full(n, "train"),
                    classes=tuple(str(c) for c in range(config.num_classes)))


def load_config(path: Path) -> Config:
    """Read a TOML config; unknown keys are an error (a typo must not silently fall back to a default)."""
    raw = tomllib.loads(path.read_text())
    known = {f.name for f in fields(Config)}
    if unknown := sorted(set(raw) - known):
        raise SystemExit(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    config = Config(**raw)
    if config.statistic not in STATISTICS:
        raise SystemExit(f"{path}: statistic must be one of {sorted(STATISTICS)}, got {config.statistic!r}")
    if config.memory_format not in ("contiguous", "channels_last"):
        raise SystemExit(f"{path}: memory_format must be 'contiguous' or 'channels_last', got {config.memory_format!r}")
    return config


def summary_line(row: Json, targets: dict[str, float]) -> str:
    """One line per row: floor throughput, each method's ratio, failed targets."""
    methods: dict[str, Json] = row["methods"]
    parts = [f"{row['model']}/{row['setup']}:"]
    for name, result in methods.items():
        if "ratio" in result:
            parts.append(f"{name} {result['ratio']:.2f}x" if name != "floor"
                         else f"floor {result['samples_per_s']:.0f}/s")
        else:
            parts.append(f"{name} -")
    failed = [spec for spec, limit in targets.items() if judge([row], Limit.parse(f"{spec}={limit}"))[1]]
    parts.append(f"load {row['load'][0]:.1f}→{row['load'][1]:.1f}")
    return " | ".join(parts) + (f" | FAIL {', '.join(failed)}" if failed else "")


def _cell(result: Json | None, notes: list[str], *, memory: bool = False) -> str:
    """A table cell: ratio and throughput (or MiB), or a footnote mark for why it is missing."""
    if result is None:
        return ""
    if "unsupported" in result or "error" in result:
        kind = "unsupported" if "unsupported" in result else "ERROR"
        text = f"{kind}: {result.get('unsupported') or result.get('error')}"
        if text not in notes:
            notes.append(text)
        return f"{'—' if kind == 'unsupported' else 'error'} [{notes.index(text) + 1}]"
    if memory:
        peak = result.get("peak_mib")
        if peak is None:
            return "n/a"
        return f"{peak:.0f}" + (f" ({result['peak_ratio']:.2f}×)" if "peak_ratio" in result else "")
    flags = " ⚠noisy" if float(result.get("spread", 0)) > NOISY_SPREAD else ""
    if float(result.get("max_rel_err", 0)) > 1e-4:
        flags += f" ⚠err {result['max_rel_err']:.0e}"
    ratio = f"{result['ratio']:.2f}× · " if "ratio" in result else ""
    startup = f" + {result['startup_s']:.2f} s start-up" if "startup_s" in result else ""
    return f"{ratio}{result['samples_per_s']:.0f}/s{startup}{flags}"


def markdown(results: Json) -> str:
    """The report: machine header, per-model throughput and memory tables, targets, notes."""
    info: Json = results["machine"]
    settings: Json = results["settings"]
    rows: list[Json] = results["rows"]
    runs: list[Json] = results["runs"]
    methods = [m for m in results["methods"] if any(m in r["methods"] for r in rows)]
    methods += [m for m in EXTRACT_METHODS if any(m in r["methods"] for r in rows)]
    loads = [f"{r['load_start'][0]:.1f}→{r.get('load_end', r['load_start'])[0]:.1f}" for r in runs]
    lines = [
        "# Per-sample Weight Modifier speed", "",
        f"- Machine: {info['cpu']}, {info['usable_cores']} usable cores of {info['cores']}; torch {info['torch']} "
        f"(threads: {info['threads']}"
        f"{', OMP_WAIT_POLICY=' + str(info['omp_wait_policy']) if info.get('omp_wait_policy') else ''}, "
        f"{info['device']}{', ' + str(info['gpu']) if info.get('gpu') else ''}); "
        f"Python {info['python']}; gmint {info['gmint']} at {info['commit'] or '?'}"
        f"{' with uncommitted changes' if info.get('uncommitted_changes') else ''}; "
        f"Opacus {info.get('opacus') or 'absent'}, BackPACK {info.get('backpack') or 'absent'}.",
        f"- Last run {info['date']}; {len(runs)} run(s), 1-minute load average at start→end of each: "
        f"{', '.join(loads)} (each row's load is in the JSON).",
        *[f"- Note (run {i}): {r['note']}" for i, r in enumerate(runs) if r.get("note")],
        f"- Batch {settings['batch_size']} ({settings['channels']}×{settings['image_size']}×"
        f"{settings['image_size']}, {settings['memory_format']} layout, float32, seeded random images and weights, "
        "eval mode), MEAN reduction, "
        f"{settings['loss']} loss; vmap chunk {settings['chunk_size']}; naive timed on "
        f"{settings['naive_samples']} samples; extract on {settings['extract_rows']} rows.",
        "- Cells: per-sample time ÷ the floor's (lower is better: the median over the timed rounds of the "
        "per-round ratio; `extract`: its own time; `extract_steady`: per further row, then its fixed start-up) "
        "· samples/s (from the "
        f"{settings['statistic']} round). ⚠noisy: a method's rounds spread more than {NOISY_SPREAD:.0%} of "
        "their median; ⚠err: its features differ from vmap's by more than 1e-4 of their largest value. "
        "Methods and measurement: see `benchmarks/speed.py`.", "",
    ]
    notes: list[str] = []
    header = "| setup | layers | " + " | ".join(methods) + " |"
    rule = "|" + "---|" * (len(methods) + 2)
    for arch in dict.fromkeys(str(r["model"]) for r in rows):
        arch_rows = [r for r in rows if r["model"] == arch]
        first = arch_rows[0]
        lines += [f"## {arch} ({first['options'] or 'full width'}, {first['parameters']:,} parameters)", "",
                  header, rule]
        for r in arch_rows:
            cells = [_cell(r["methods"].get(m), notes) for m in methods]
            lines.append(f"| {r['setup']} | {'<br>'.join(r['layers'])} | " + " | ".join(cells) + " |")
        lines += ["", "Peak memory added by one call, MiB (÷ floor):", "", header, rule]
        for r in arch_rows:
            cells = [_cell(r["methods"].get(m), notes, memory=True) for m in methods]
            lines.append(f"| {r['setup']} | | " + " | ".join(cells) + " |")
        lines.append("")
        shares = [(r["setup"], r["methods"].get("extract", {}).get("recheck_share")) for r in arch_rows]
        if any(share is not None for _, share in shares):
            lines += ["Re-checks of later batches against the naive loop, by the shipped extraction's own record: "
                      + ", ".join(f"{setup} {share:.1%}" for setup, share in shares if share is not None)
                      + " of its wall time (median over rounds).", ""]
    lines += targets_table(results, rows)
    lines += ["## Notes", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    warned: dict[str, set[str]] = {}
    for r in rows:
        for m, res in r["methods"].items():
            for n in res.get("notes", []):
                warned.setdefault(n, set()).add(m)
    if warned:
        lines += ["", "Warnings raised by the methods:", ""]
        lines += [f"- {', '.join(sorted(ms))}: {n}" for n, ms in sorted(warned.items())]
    errors = [f"{r['model']}/{r['setup']} {m}: {res['max_rel_err']:.1e}" for r in rows
              for m, res in r["methods"].items() if float(res.get("max_rel_err", 0)) > 1e-4]
    lines += ["", "Largest relative error of any method's features vs `vmap`: "
              + (", ".join(errors) if errors else "≤ 1e-4 on every row.")]
    return "\n".join(lines) + "\n"


def targets_table(results: Json, rows: list[Json]) -> list[str]:
    """Pass/fail of every target on every row."""
    limits = [Limit.parse(f"{k}={v}") for k, v in results["targets"].items()]
    limits += [Limit.parse(f"{k}={v}", MEMORY) for k, v in results["memory_targets"].items()]
    if not limits:
        return []
    lines = ["## Targets", "", "`gmint` = its fastest engine, `competitors` = the faster of Opacus and BackPACK.",
             "", "| model | setup | " + " | ".join(limit.label for limit in limits) + " |",
             "|" + "---|" * (len(limits) + 2)]
    totals = [[0, 0] for _ in limits]
    for r in rows:
        cells = []
        for i, limit in enumerate(limits):
            passing, violating = judge([r], limit)
            if passing or violating:
                ok = bool(passing)
                totals[i][0 if ok else 1] += 1
                cells.append(f"{(passing or violating)[0][1]:.2f} {'pass' if ok else '**FAIL**'}")
            else:
                cells.append("n/a")
        lines.append(f"| {r['model']} | {r['setup']} | " + " | ".join(cells) + " |")
    lines.append("| **all** | | " + " | ".join(f"{p}/{p + f} pass" for p, f in totals) + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML configuration (required unless --report-only)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results; the Markdown goes beside it")
    parser.add_argument("--force", action="store_true", help="re-measure rows already in the results")
    parser.add_argument("--only", action="append", default=[], metavar="MODEL/SETUP",
                        help="run only rows whose 'model/setup' contains this (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="override the config's torch threads")
    parser.add_argument("--note", default="", help="a remark on this run for the report's header")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: recompute the ratios and rewrite the Markdown from the JSON")
    args = parser.parse_args()
    if args.report_only:
        refresh(args.out)
    elif args.config is None:
        parser.error("--config is required unless --report-only")
    else:
        config = load_config(args.config)
        if args.threads:
            config = replace(config, threads=args.threads)
        run(config, args.out, force=args.force, only=args.only, note=args.note, show_progress=args.progress)


if __name__ == "__main__":
    main()
