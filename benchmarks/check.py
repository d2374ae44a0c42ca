"""Threshold gate on speed results: exits non-zero listing the rows where a ratio exceeds its maximum.

A limit reads `NUM/DEN=MAX`: per-sample time of method NUM over that of DEN, on each row (model × layer
setup) of a results file written by `benchmarks.speed` — for two methods timed in the same interleaved
rounds, the median of the per-round ratios (see `ratio`). Besides method names (`floor`, `naive`, `vmap`,
`hooks`, `auto`, `opacus`, `backpack`, `extract`, ...) two groups stand for their fastest member: `gmint`
(gmint's engines) and `competitors` (Opacus and BackPACK). `--max-memory` limits the ratio of peak
memory the same way. Rows lacking either side (a method unsupported or not run) are not judged; a limit
that judges no row at all is an error, so a gate never passes on nothing.

    python -m benchmarks.check --results benchmarks/results/speed-cpu.json --max "hooks/floor=1.10" \
        --max "extract/floor=1.25" --max-memory "hooks/floor=1.0"

Exit status: 0 all judged rows pass, 1 some row violates a limit, 2 bad usage or nothing to judge.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUPS: dict[str, tuple[str, ...]] = {
    "gmint": ("naive", "vmap", "hooks", "auto"),
    "competitors": ("opacus", "backpack"),
}
TIME = "per_sample_s"
MEMORY = "peak_mib"

Row = dict[str, object]


@dataclass(frozen=True)
class Limit:
    """`num/den ≤ maximum` on one quantity of each row (TIME or MEMORY)."""

    num: str
    den: str
    maximum: float
    quantity: str = TIME

    @classmethod
    def parse(cls, spec: str, quantity: str = TIME) -> Limit:
        """`"hooks/floor=1.10"` → Limit("hooks", "floor", 1.1)."""
        ratio, sep, value = spec.partition("=")
        num, slash, den = ratio.strip().partition("/")
        try:
            maximum = float(value)
        except ValueError:
            maximum = float("nan")
        if not (sep and slash and num and den) or not maximum > 0:
            raise ValueError(f"a limit looks like 'hooks/floor=1.10', got {spec!r}")
        return cls(num.strip(), den.strip(), maximum, quantity)

    @property
    def label(self) -> str:
        return f"{self.num}/{self.den}{' memory' if self.quantity == MEMORY else ''} ≤ {self.maximum:g}"


def value(row: Row, name: str, quantity: str = TIME) -> float | None:
    """A method's measured quantity on a row, the smallest of a group's members, or None if not measured."""
    methods: dict[str, dict[str, Any]] = row["methods"]  # type: ignore[assignment]
    found = [float(methods[m][quantity]) for m in GROUPS.get(name, (name,))
             if methods.get(m, {}).get(quantity) is not None]
    return min(found) if found else None


def round_times(row: Row, name: str) -> list[float] | None:
    """Per-sample seconds of each interleaved timing round (a group: its fastest member per round), or None
    for a method not timed in the rounds (`extract`, unsupported ones)."""
    methods: dict[str, dict[str, Any]] = row["methods"]  # type: ignore[assignment]
    per_member = [[t / methods[m]["samples"] for t in methods[m]["times"]] for m in GROUPS.get(name, (name,))
                  if "calls_per_round" in methods.get(m, {})]
    return [min(ts) for ts in zip(*per_member, strict=True)] if per_member else None


def ratio(row: Row, limit: Limit) -> float | None:
    """num/den of the limit's quantity on this row, or None when either side is missing or zero.

    Time ratios of two methods timed in the same rounds are paired: the median over rounds of the
    per-round ratio, so a change of machine load between rounds cancels out. Otherwise (`extract`,
    memory) the plain ratio of the row's values.
    """
    if limit.quantity == TIME:
        num_rounds, den_rounds = round_times(row, limit.num), round_times(row, limit.den)
        if num_rounds and den_rounds and len(num_rounds) == len(den_rounds):
            return statistics.median(a / b for a, b in zip(num_rounds, den_rounds, strict=True))
    num, den = value(row, limit.num, limit.quantity), value(row, limit.den, limit.quantity)
    return num / den if num is not None and den else None


def row_name(row: Row) -> str:
    return f"{row['model']}/{row['setup']}"


def judge(rows: list[Row], limit: Limit) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(passing, violating) rows as (name, ratio); rows lacking a side are in neither."""
    passing, violating = [], []
    for row in rows:
        r = ratio(row, limit)
        if r is not None:
            (passing if r <= limit.maximum else violating).append((row_name(row), r))
    return passing, violating


def check(rows: list[Row], limits: list[Limit]) -> tuple[int, list[str]]:
    """Exit status and report lines for `limits` over `rows` (see the module docstring)."""
    status, lines = 0, []
    for limit in limits:
        passing, violating = judge(rows, limit)
        judged = len(passing) + len(violating)
        if judged == 0:
            lines.append(f"{limit.label}: no row has both '{limit.num}' and '{limit.den}' measured")
            status = max(status, 2)
            continue
        lines.append(f"{limit.label}: {len(passing)}/{judged} rows pass"
                     + (f" ({len(rows) - judged} not judged)" if judged < len(rows) else ""))
        for name, r in violating:
            lines.append(f"  FAIL {name}: {r:.3f}")
        if violating:
            status = max(status, 1)
    return status, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="JSON written by benchmarks.speed")
    parser.add_argument("--max", action="append", default=[], metavar="NUM/DEN=MAX",
                        help="largest allowed per-sample time ratio (repeatable)")
    parser.add_argument("--max-memory", action="append", default=[], metavar="NUM/DEN=MAX",
                        help="largest allowed peak-memory ratio (repeatable)")
    args = parser.parse_args(argv)
    try:
        limits = [Limit.parse(s) for s in args.max] + [Limit.parse(s, MEMORY) for s in args.max_memory]
        rows = json.loads(args.results.read_text())["rows"]
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not limits:
        print("error: give at least one --max or --max-memory", file=sys.stderr)
        return 2
    status, lines = check(rows, limits)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
