"""Float32 agreement of the engines on a real model: each engine's float32 features beside the truth.

The truth is the naive loop on a float64 copy of the audited model fed the same (float64-cast) inputs.
Per row and layer the error is ‖got − truth‖ / ‖truth‖ over that layer's reduced features; the report
gives its median, 99th percentile and maximum over rows for each engine, the rows where it is largest
(with their losses: MEAN cancels most on high-loss rows), and how far hooks and vmap are from each other.

    gmint split --data cifar10 --members 2000 --external 2000 --seed 0 --out split.json
    gmint audited train --arch small_cnn --data cifar10 --split split.json --epochs 30 --seed 0 --out audited.pt
    python -m benchmarks.precision --model audited.pt --rows 1024 --out benchmarks/results/precision-cpu.json

The JSON records the model's fingerprint and recipe, the split's hash and seed, and the commit measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import numpy as np
import torch

from benchmarks.speed import machine_info
from gmint.data.readers import load_dataset
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.features.engine import ENGINES
from gmint.features.extract import split_rows
from gmint.features.layers import resolve_parameters
from gmint.features.reduce import parse_reduction
from gmint.models.io import load_audited

ENGINE_NAMES = ("hooks", "vmap", "naive")


def row_errors(got: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> np.ndarray:
    """(rows, layers) relative errors ‖got − truth‖ / ‖truth‖ per row and layer."""
    columns = []
    for name, ref in truth.items():
        ref = ref.double()
        diff = (got[name].double() - ref).norm(dim=1)
        columns.append((diff / ref.norm(dim=1).clamp_min(1e-300)).numpy())
    return np.stack(columns, axis=1)


def summary(errors: np.ndarray) -> dict[str, float]:
    worst = errors.max(axis=1)  # a row's worst layer
    return {"median": float(np.median(errors)), "p99": float(np.quantile(errors, 0.99)),
            "max": float(errors.max()), "rows_above_1e-3": int((worst > 1e-3).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, default=os.environ.get("GMINT_DATA"))
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--layers", default="combined")
    parser.add_argument("--reduction", default="mean")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    torch.manual_seed(0)
    audited = load_audited(args.model)
    data = load_dataset(str(audited.meta["dataset"]), args.data_root)
    split = MembershipSplit.from_json(json.dumps(audited.meta["split"]))
    index = split_rows(split).index[:args.rows]
    transform = Transform.from_dict(audited.meta["transform"])  # type: ignore[arg-type]
    model = audited.module.eval()
    wide = copy.deepcopy(model).double().eval()
    x_all, y_all = transform(data.images[index]), torch.from_numpy(data.labels[index])
    layers = resolve_parameters(model, args.layers, x_all[:1])
    reduce = parse_reduction(args.reduction)

    feats: dict[str, dict[str, list[torch.Tensor]]] = {e: {n: [] for n in layers} for e in (*ENGINE_NAMES, "truth")}
    losses = []
    for start in range(0, len(index), args.batch_size):
        x, y = x_all[start:start + args.batch_size], y_all[start:start + args.batch_size]
        truth = ENGINES.get("naive")(wide, layers, reduce, x.double(), y)
        losses.append(truth.loss)
        for name in layers:
            feats["truth"][name].append(truth.features[name])
        for engine in ENGINE_NAMES:
            got = ENGINES.get(engine)(model, layers, reduce, x, y)
            for name in layers:
                feats[engine][name].append(got.features[name])
    joined = {e: {n: torch.cat(v) for n, v in per.items()} for e, per in feats.items()}
    loss = torch.cat(losses).numpy()
    result: dict[str, object] = {
        "model": str(args.model), "model_fingerprint": audited.fingerprint,
        "model_recipe": {k: audited.meta.get(k) for k in ("arch", "arch_args", "dataset", "train_config", "seed",
                                                          "record")},
        "split_sha256": split.sha256, "split_seed": split.seed,
        "dataset": data.name, "rows": len(index), "layers": layers, "reduction": args.reduction,
        "machine": machine_info(torch.get_num_threads(), torch.device("cpu")),
        "engines": {}, "hooks_vs_vmap": summary(row_errors(joined["hooks"], joined["vmap"])),
    }
    for engine in ENGINE_NAMES:
        errors = row_errors(joined[engine], joined["truth"])
        worst_rows = np.argsort(errors.max(axis=1))[::-1][:5]
        result["engines"][engine] = {  # type: ignore[index]
            **summary(errors),
            "per_layer_max": {n: float(errors[:, i].max()) for i, n in enumerate(layers)},
            "worst_rows": [{"row": int(r), "loss": float(loss[r]), "error": float(errors[r].max())}
                           for r in worst_rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{len(index)} rows of {data.name}, layers {layers}, {args.reduction}; error vs float64 truth "
          "(median / p99 / max over rows and layers):")
    for engine in ENGINE_NAMES:
        s = result["engines"][engine]  # type: ignore[index]
        print(f"  {engine:6s} {s['median']:.2e} / {s['p99']:.2e} / {s['max']:.2e}; rows with an error > 1e-3: "
              f"{s['rows_above_1e-3']}")
    s = result["hooks_vs_vmap"]
    print(f"  hooks vs vmap: {s['median']:.2e} / {s['p99']:.2e} / {s['max']:.2e}")  # type: ignore[index]


if __name__ == "__main__":
    main()
