"""Thread settings that keep results independent of the machine they run on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU kernels on exactly `n` threads, then restore the caller's setting.

    Reductions split across threads round differently for each thread count; a fixed count makes results
    bit-reproducible on any machine (and for small nets one thread is also the fastest: no synchronisation,
    no oversubscription when other processes share the cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota where one is set
    (a container's share), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def fit_threads_to_cores() -> int:
    """Never run more intra-op threads than the cores this process may use (torch counts the machine's
    cores, not a container's share or the affinity a scheduler gave): more threads than cores only
    take turns. Returns the thread count in effect."""
    threads = min(torch.get_num_threads(), available_cores())
    torch.set_num_threads(threads)
    return threads
