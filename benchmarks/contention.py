"""What a CPU-bound neighbour costs gmint: the demo, one extraction and one two-thread training run, idle and
beside a busy process, with
torch's default OpenMP settings and with gmint's choice (`OMP_WAIT_POLICY=PASSIVE`, threads fitted to the
cores the process may use; see gmint_cli/__init__.py and gmint.threads).

"Default" runs import torch before gmint's command line, so OpenMP starts with the environment as it was
(the policy is read once, when the runtime loads); "gmint" runs start the command line as users do. The
neighbour (`--neighbour`) is one process spinning in a Python loop (`python`), or another torch job
multiplying matrices on torch's default threads and OpenMP settings (`torch`: a shared ML server). Each
configuration runs `repeats` times, alternating;
the JSON keeps every time, the report the median and the slowdown (loaded ÷ idle) per setting.

    python -m benchmarks.contention --neighbour torch --out benchmarks/results/contention-torch-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.speed import machine_info
from gmint.files import atomic_write
from gmint.threads import available_cores

NEIGHBOURS = {
    "python": "while True: pass",
    "torch": "import torch\na = torch.randn(512, 512)\nwhile True: a = torch.tanh(a @ a)",
}
SETTINGS = {
    "default": "import torch, sys; from gmint_cli.app import main; sys.argv[0] = 'gmint'; main()",
    "gmint": "import sys; from gmint_cli.app import main; sys.argv[0] = 'gmint'; main()",
}


def timed(setting: str, args: list[str]) -> float:
    """Seconds of one `gmint ARGS` run under `setting`; the run must succeed."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"GMINT_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SETTINGS[setting], *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"gmint {' '.join(args)} failed under {setting}: {done.stderr.strip()[-300:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--neighbour", choices=sorted(NEIGHBOURS), default="python")
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        timed("gmint", ["demo", "--out", str(work / "ready")])  # a trained model for the extraction runs
        tasks = {
            "demo": lambda folder: ["demo", "--out", str(folder)],
            "extract": lambda folder: ["extract", "--model", str(work / "ready" / "audited.pt"), "--layers",
                                       "combined", "--out", str(folder / "f.h5")],
            # Training runs on one thread by default (reproducible weights); users may ask for more.
            "train": lambda folder: ["audited", "train", "--data", "digits", "--split",
                                     str(work / "ready" / "split.json"), "--epochs", "20", "--threads", "2",
                                     "--out", str(folder / "a.pt")],
        }
        for round_ in range(args.repeats):
            for loaded in (False, True):
                neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOURS[args.neighbour]],
                                             env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}) \
                    if loaded else None
                try:
                    for setting in sorted(SETTINGS, reverse=bool(round_ % 2)):
                        for task, command in tasks.items():
                            folder = work / f"{task}-{setting}-{loaded}-{round_}"
                            folder.mkdir()
                            key = f"{task}/{setting}/{'loaded' if loaded else 'idle'}"
                            times.setdefault(key, []).append(timed(setting, command(folder)))
                            shutil.rmtree(folder)
                            print(f"{key}: {times[key][-1]:.1f} s", flush=True)
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
    median = {key: statistics.median(values) for key, values in times.items()}
    summary = {f"{task}/{setting}": {"idle_s": median[f"{task}/{setting}/idle"],
                                     "loaded_s": median[f"{task}/{setting}/loaded"],
                                     "slowdown": median[f"{task}/{setting}/loaded"] / median[f"{task}/{setting}/idle"]}
               for task in tasks for setting in SETTINGS}
    result = {"machine": machine_info(available_cores(), torch.device("cpu")), "repeats": args.repeats,
              "neighbour": args.neighbour, "neighbour_code": NEIGHBOURS[args.neighbour], "times_s": times,
              "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    for key, row in summary.items():
        print(f"{key}: idle {row['idle_s']:.1f} s, beside a busy neighbour {row['loaded_s']:.1f} s "
              f"(× {row['slowdown']:.2f})")


if __name__ == "__main__":
    main()
