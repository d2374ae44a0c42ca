"""The audit grid: gMINT's Table 2 (datasets × architectures × layer setups × data fractions), per protocol.

A config names the datasets, architectures and protocols (the cells are their product), the settings
shared by every cell, and overrides per dataset and per architecture. Each cell draws its split, trains an
audited model (to a target member accuracy, with the epochs as a cap) and a negative-control model that saw
neither side, extracts MEAN Weight Modifiers of the combined layers once per model, and fits one MINT
classifier per layer setup and data fraction on the auditor's pool — with several classifier seeds — and
scores them on held-out rows beside the loss threshold and the negative control. A row keeps every seed's point
figures and states their median, the figure to report: one seed alone can be a fit that stopped at chance.

Every row records the code (gmint's version and commit, torch's version), a hash of the cell's settings and
of its split; a cell's finished rows are skipped when the same command runs again, rows of another config are
refused and rows of another commit are kept with a warning, so a rerun never mixes two configs and says when
it mixes two versions of the code. Several processes may share one results file (`--shard i/n`).

    python -m benchmarks.grid --config benchmarks/configs/grid-cpu.toml --out benchmarks/results/grid-cpu.jsonl
    python -m benchmarks.grid --config benchmarks/configs/grid-cpu.toml --out ... --shard 0/2 &   # two processes,
    python -m benchmarks.grid --config benchmarks/configs/grid-cpu.toml --out ... --shard 1/2 &   # one core each
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gmint
from gmint.assess.metrics import SeedSpread, roc_points, seed_spread
from gmint.data.readers import load_dataset
from gmint.experiment import Cell, Probe, Recipe, run_cell
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.mint import DEFAULT_KIND
from gmint.models.train import TrainConfig

SETUPS = ("entry", "middle", "output", "combined")
FRACTIONS = ("D100", "D10", "D1")
PROBES = (*(Probe("gMINT", setup, fraction) for setup in SETUPS for fraction in FRACTIONS),
          *(Probe("negative control", setup) for setup in SETUPS))
# The classifier kinds a cell fits when its config names none: gmint's default. The CPU grid names both the
# default and the paper's MLP ("mlp"), so every probe is measured both ways on the same rows.
CLASSIFIERS = (DEFAULT_KIND,)
ROC_POINTS = 101  # a curve is kept at this many false-positive rates (log-spaced from 1e-3, and 0 and 1)
CELL_KEYS = ("members", "external", "control", "holdout", "seed", "engine", "batch_size", "image_size",
             "arch_options", "data_options", "mint_seeds", "n_boot", "train", "protocols", "device", "classifiers")

Json = dict[str, Any]


@dataclass(frozen=True)
class GridCell:
    """One (protocol, dataset, architecture) of the grid with its resolved settings."""

    protocol: str
    dataset: str
    arch: str
    settings: Mapping[str, Any]

    @property
    def name(self) -> str:
        """'paper/mnist-mobilenet': the cell's name in rows, reports and its work folder."""
        return f"{self.protocol}/{self.dataset}-{self.arch}"

    @property
    def config_sha256(self) -> str:
        """A hash of everything the config decides about this cell."""
        text = json.dumps({"protocol": self.protocol, "dataset": self.dataset, "arch": self.arch,
                           **self.settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def grid_cells(config: Mapping[str, Any]) -> list[GridCell]:
    """The cells of a config: each dataset × architecture × each of the dataset's protocols, in that order,
    with settings = defaults, overlaid by the dataset's table, then the architecture's (a `train` table is
    merged key by key).

    Raises:
        ValueError: an unknown key, or a dataset or architecture table for one the grid does not list.
    """
    grid, defaults = config["grid"], config.get("defaults", {})
    tables = {"datasets": config.get("datasets", {}), "architectures": config.get("architectures", {})}
    for kind, table in tables.items():
        extra = sorted(set(table) - set(grid[kind]))
        if extra:
            raise ValueError(f"grid config: [{kind}] tables for {extra}, which [grid].{kind} does not list")
    cells = []
    for dataset in grid["datasets"]:
        for arch in grid["architectures"]:
            settings = _overlay(defaults, tables["datasets"].get(dataset, {}), tables["architectures"].get(arch, {}))
            unknown = sorted(set(settings) - set(CELL_KEYS))
            if unknown:
                raise ValueError(f"grid config: unknown key(s) {unknown} for {dataset} × {arch}; known: "
                                 f"{list(CELL_KEYS)}")
            for protocol in settings.pop("protocols", grid.get("protocols", ["paper"])):
                cells.append(GridCell(str(protocol), str(dataset), str(arch), settings))
    return cells


def _overlay(*tables: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for table in tables:
        for key, value in table.items():
            merged[key] = {**merged.get(key, {}), **value} if key == "train" else value
    return merged


def grid_probes(cell: GridCell) -> tuple[Probe, ...]:
    """Every probe of the grid once per classifier kind the cell's config names (`classifiers`), kind by kind."""
    kinds = cell.settings.get("classifiers", CLASSIFIERS)
    return tuple(replace(probe, kind=str(kind)) for kind in kinds for probe in PROBES)


def probe_key(signal: str, setup: str, fraction: str, kind: str) -> tuple[str, str, str, str]:
    """What identifies a row within its cell."""
    return signal, setup, fraction, kind


def grid_recipe(cell: GridCell) -> Recipe:
    """A cell's settings as the experiment's recipe (every probe of the grid, per classifier kind)."""
    s = cell.settings
    return Recipe(arch=cell.arch, train=train_config(s.get("train", {})), probes=grid_probes(cell),
                  members=s["members"],
                  external=s["external"], control=s["control"], holdout=float(s.get("holdout", 0.5)),
                  protocol=cell.protocol, seed=int(s.get("seed", 0)), image_size=s.get("image_size"),
                  arch_options=dict(s.get("arch_options", {})),
                  extraction=ExtractSettings(engine=str(s.get("engine", "auto")),
                                             batch_size=int(s.get("batch_size", 128))),
                  mint_seeds=int(s.get("mint_seeds", 1)),
                  n_boot=int(s.get("n_boot", 1000)), device=str(s.get("device", "cpu")))


def train_config(table: Mapping[str, Any]) -> TrainConfig:
    """The `train` table as a TrainConfig (epochs, batch_size, optimizer, lr, weight_decay, schedule, augment,
    seed, threads, target_accuracy); an unknown key is refused with the known ones."""
    known = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"grid config: unknown train key(s) {unknown}; known: {known}")
    return TrainConfig(**table)


def code_version() -> Json:
    """The code measured: gmint's version and commit (marked when gmint or benchmarks have uncommitted changes;
    results being written are not code), torch's version."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"gmint": gmint.__version__, "commit": git("rev-parse", "--short=10", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--", "gmint", "benchmarks",
                                            ":!benchmarks/results")),
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}


def read_rows(path: Path) -> list[Json]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(path: Path, row: Json) -> None:
    """One JSON line, appended under an exclusive lock: processes sharing the file never interleave."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def finished_probes(cell: GridCell, rows: list[Json], version: Json) -> set[tuple[str, str, str, str]]:
    """`probe_key`s of the cell's rows already in the results.

    Raises:
        ValueError: they were measured with other settings (mixing them would make one cell of two configs).
    """
    mine = [r for r in rows if r["cell"] == cell.name]
    configs = {r["config_sha256"] for r in mine}
    if configs - {cell.config_sha256}:
        raise ValueError(f"{cell.name}: the results file holds rows measured with other settings (config "
                         f"{sorted(configs)} vs {cell.config_sha256}); remove them or write to another --out")
    commits = {r["code"]["commit"] for r in mine} - {version["commit"]}
    if commits and len(mine) < len(grid_probes(cell)):
        print(f"[{cell.name}] keeps {len(mine)} rows measured at commit(s) {sorted(commits)}; this run is at "
              f"{version['commit']}: the cell will mix code versions", file=sys.stderr)
    return {probe_key(r["signal"], r["setup"], r["fraction"], classifier(r)) for r in mine}


def run_grid_cell(cell: GridCell, workdir: Path, out: Path, *, data_root: Path | None, show_progress: bool) -> None:
    """Measure the probes of `cell` that `out` does not hold yet; append one row per probe as it finishes."""
    version = code_version()
    done = finished_probes(cell, read_rows(out), version)
    recipe = grid_recipe(cell)
    recipe = replace(recipe, probes=tuple(p for p in recipe.probes
                                          if probe_key(p.signal, p.setup, p.fraction, str(p.kind)) not in done))
    if not recipe.probes:
        return
    data = load_dataset(cell.dataset, data_root, **dict(cell.settings.get("data_options", {})))

    def write(result: Cell) -> None:
        row = grid_row(cell, result, version)
        append_row(out, row)
        accuracy, auc = over_seeds(row, "accuracy"), over_seeds(row, "auc")
        print(f"[{cell.name}] {row['signal']:16s} {row['setup']:8s} {row['fraction']:4s} {row['classifier']:5s}: "
              f"acc {accuracy.median:.3f} AUC {auc.median:.3f} (median of {auc.seeds} seeds; loss threshold AUC "
              f"{row['loss_threshold']['auc']['value']:.3f})", flush=True)

    run_cell(data, recipe, workdir / cell.protocol / f"{cell.dataset}-{cell.arch}", on_measurement=write,
             show_progress=show_progress)


def grid_row(cell: GridCell, result: Cell, version: Json) -> Json:
    """The JSON row of the cell's newest measurement."""
    measured = result.measurements[-1]
    probe, evaluation = measured.probe, measured.evaluation
    model, split = result.models[probe.model], result.split
    with_roc = probe.setup == "combined" and probe.fraction == "D100"  # its curves drawn in the report
    with FeatureStore.open(evaluation.store) as store:  # one read: provenance, and the losses a curve needs
        prov = store.provenance
        loss = dict(zip(store.column("sample_id").tolist(), store.column("loss").tolist(), strict=True)) \
            if with_roc else {}
    seconds, rows = float(prov.get("extract_seconds") or 0.0), int(prov.get("rows_written") or 0)
    row: Json = {
        "cell": cell.name, "protocol": cell.protocol, "dataset": cell.dataset, "arch": cell.arch,
        "signal": probe.signal, "setup": probe.setup, "fraction": probe.fraction,
        "layers": evaluation.protocol["layers"], "classifier": evaluation.protocol["classifier"],
        "image_size": cell.settings.get("image_size"),
        "arch_options": dict(cell.settings.get("arch_options", {})),
        "split": {"members": len(split.members), "external": len(split.external), "pool": len(split.pool),
                  "holdout": len(split.holdout), "sha256": split.sha256, "seed": split.seed},
        "mint": {k: v.to_dict() for k, v in evaluation.mint.items()},
        "mint_over_seeds": {k: measured.over_seeds(k).to_dict() for k in evaluation.mint},
        "intervals": evaluation.intervals,
        "mint_seeds": {"seeds": list(range(split.seed, split.seed + len(measured.seed_metrics))),
                       **{name: [m[name] for m in measured.seed_metrics] for name in measured.seed_metrics[0]}},
        "loss_threshold": {k: v.to_dict() for k, v in evaluation.loss_threshold.items()},
        "audited_model": evaluation.audited_model.to_dict(),
        "model": {"role": probe.model, "record": model.meta["record"], "epochs_done": model.meta["epochs_done"],
                  "train_seconds": model.meta["train_seconds"], "train_config": model.meta["train_config"]},
        "extraction": {"engine": prov.get("engine_used"), "rows": rows, "seconds": round(seconds, 2),
                       "rows_per_second": round(rows / seconds, 1) if seconds else None},
        "mint_seconds": measured.seconds, "fit_rows": measured.fit_rows,
        "config_sha256": cell.config_sha256, "code": version,
        **{key: evaluation.protocol[key] for key in ("model_selection", "refits") if key in evaluation.protocol},
    }
    if evaluation.versus_loss is not None:  # the first seed's fit against the loss threshold, on the same rows
        row["auc_minus_loss_threshold"] = evaluation.versus_loss.to_dict()
    if evaluation.epsilon is not None:
        row["epsilon"] = evaluation.epsilon.to_dict()
    if with_roc:
        scores = evaluation.scores
        baseline = -np.array([loss[i] for i in scores.sample_id.tolist()])
        row["roc"] = {"mint": roc_summary(scores.membership, scores.score),
                      "loss_threshold": roc_summary(scores.membership, baseline)}
    return row


def over_seeds(row: Json, metric: str) -> SeedSpread:
    """A row's headline figure for `metric`: the median over its classifier seeds, with their range.

    Rows state it in `mint_over_seeds`; rows written before they did are read by computing it from their seed
    points (`mint_seeds`), which every grid row keeps.
    """
    stated = row.get("mint_over_seeds", {}).get(metric)
    if stated is None:
        return seed_spread(row["mint_seeds"][metric])
    return SeedSpread(stated["median"], stated["min"], stated["max"], stated["seeds"])


def classifier(row: Json) -> str:
    """The MINT classifier kind a row fitted; "mlp" for rows written before the grid recorded it, which all fitted
    the paper's MLP (the only kind the grid fitted then)."""
    return str(row.get("classifier") or "mlp")


def roc_summary(membership: np.ndarray, score: np.ndarray) -> Json:
    """The ROC curve at ROC_POINTS false-positive rates (log-spaced, for log-scale plots): enough to draw it."""
    fpr, tpr = roc_points(np.asarray(membership), np.asarray(score, np.float64))
    grid = np.r_[0.0, np.logspace(-3, 0, ROC_POINTS - 1)]
    at = np.searchsorted(fpr, grid, side="right") - 1
    return {"fpr": [round(float(f), 5) for f in grid], "tpr": [round(float(t), 5) for t in tpr[at]]}


def selected(cells: list[GridCell], only: str | None, shard: tuple[int, int]) -> Iterator[GridCell]:
    index, count = shard
    for i, cell in enumerate(cells):
        if i % count == index and (not only or only in cell.name):
            yield cell


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n, e.g. 0/2; got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: i must be in 0..n-1")
    return index, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSONL results (appended; done rows skipped)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="models and stores (default: runs/grid/<config name>)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--only", default=None, help="run only cells whose name contains this (e.g. paper/mnist)")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="run cells i, i+n, ... (i/n)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for extraction and classifiers (training uses the config's "
                             "train.threads)")
    parser.add_argument("--list", action="store_true", help="list the cells and their config hashes, run nothing")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cells = grid_cells(tomllib.loads(args.config.read_text()))
    workdir = args.workdir or Path("runs/grid") / args.config.stem
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for cell in selected(cells, args.only, args.shard):
        if args.list:
            print(f"{cell.name:32s} {cell.config_sha256}")
            continue
        run_grid_cell(cell, workdir, args.out, data_root=args.data_root, show_progress=args.progress)


if __name__ == "__main__":
    main()
