"""Extraction throughput with 1 process versus N torchrun processes, measured in one run on one machine.

Both runs extract the same rows with the same model into fresh stores, on all cores: one process with
N threads versus N processes with one thread each (gloo). Writes JSON and prints rows/s and the ratio.

    python -m benchmarks.scaleout --model runs/grid/mnist-small_cnn/audited.pt --nproc 2 \
        --out benchmarks/results/scaleout-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gmint.features.store import FeatureStore


def timed_extract(model: Path, out: Path, nproc: int, threads: int, extra: list[str]) -> float:
    env = {**os.environ, "GMINT_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] \
        if nproc > 1 else [sys.executable]
    t0 = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "gmint_cli", "extract", "--model", str(model), "--out", str(out),
                           *extra], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"gmint extract failed: {proc.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extract-args", default="--layers combined --batch-size 128",
                        help="further `gmint extract` options")
    args = parser.parse_args()
    extra = args.extract_args.split()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "multi").mkdir()
        single = timed_extract(args.model, Path(tmp) / "single.h5", 1, args.nproc, extra)
        multi = timed_extract(args.model, Path(tmp) / "multi" / "f.h5", args.nproc, 1, extra)
        with FeatureStore.open(Path(tmp) / "single.h5") as store:
            rows, single_loop = len(store), float(store.provenance["extract_seconds"])
        with FeatureStore.open(Path(tmp) / "multi" / "f.h5") as store:  # the slowest shard's loop
            multi_loop = float(store.provenance["extract_seconds"])
    result = {"rows": rows, "model": str(args.model), "extract_args": args.extract_args, "cores": os.cpu_count(),
              "load_average": os.getloadavg(),
              "single": {"processes": 1, "threads": args.nproc, "seconds": single, "rows_per_s": rows / single,
                         "extraction_loop_seconds": single_loop},
              "torchrun": {"processes": args.nproc, "threads": 1, "seconds": multi, "rows_per_s": rows / multi,
                           "extraction_loop_seconds": multi_loop},
              "speedup": single / multi, "speedup_extraction_loop": single_loop / multi_loop}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{rows} rows: 1 process × {args.nproc} threads {rows / single:.0f} rows/s; {args.nproc} processes × 1 "
          f"thread {rows / multi:.0f} rows/s; speed-up {single / multi:.2f}× for the whole command (start-up "
          f"included), {single_loop / multi_loop:.2f}× for the extraction loop alone")


if __name__ == "__main__":
    main()
