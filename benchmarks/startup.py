"""Start-up time: `gmint --help` and `import gmint.version` beside a bare `python -c pass`, in one run.

Every process pays Python's own start-up; what gmint adds on top is what users feel on each call. The
commands run in turn, round after round (so a change in the machine's load hits all of them alike), and
the report gives each one's median wall time and its ratio to the bare interpreter's. Both gmint commands
must load no torch (tests/test_startup.py checks that); this measures what that buys.

    python -m benchmarks.startup --repeats 15 --out benchmarks/results/startup-cpu.json

writes the JSON (every time) and, beside it, a Markdown table (`.md`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gmint.files import atomic_write

# What is timed: a name → the command line. The first is the baseline the others are divided by.
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import gmint.version": [sys.executable, "-c", "import gmint.version"],
    "gmint --help": [sys.executable, "-m", "gmint_cli", "--help"],
}
BASELINE = next(iter(COMMANDS))


def timed(command: list[str]) -> float:
    """Wall seconds of one run of `command`, which must succeed."""
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"})
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}")
    return seconds


def measure(repeats: int) -> dict[str, list[float]]:
    """Every command's wall times, `repeats` rounds of one run each (after one unmeasured round that warms
    the file cache)."""
    for command in COMMANDS.values():
        timed(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            times[name].append(timed(command))
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Each command's median seconds and its ratio to the baseline's median."""
    base = statistics.median(times[BASELINE])
    return {name: {"median_s": statistics.median(values), "ratio": statistics.median(values) / base}
            for name, values in times.items()}


def markdown(result: dict[str, object], summary: dict[str, dict[str, float]]) -> str:
    """The report: one row per command."""
    rows = [f"| `{name}` | {row['median_s']:.3f} | {row['ratio']:.2f} |" for name, row in summary.items()]
    return "\n".join([
        "# Start-up time", "",
        f"Median of {result['repeats']} runs each, interleaved; {result['machine']}.", "",
        f"| command | median s | ÷ `{BASELINE}` |", "|---|---:|---:|", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/startup-cpu.json"))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    load_start = os.getloadavg()
    times = measure(args.repeats)
    summary = summarise(times)
    machine = (f"Python {platform.python_version()}, {os.cpu_count()} cores, load average {load_start[0]:.1f} at "
               f"the start, {datetime.date.today().isoformat()}")
    result = {"machine": machine, "repeats": args.repeats, "times_s": times, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    with atomic_write(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result, summary))
    for name, row in summary.items():
        print(f"{name}: {row['median_s']:.3f} s (× {row['ratio']:.2f})")


if __name__ == "__main__":
    main()
