"""Thread settings that keep results independent of the machine they run on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
