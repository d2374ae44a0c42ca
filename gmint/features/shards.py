"""Scale-out on PyTorch's own launcher: each rank extracts a disjoint block of whole batches into its
own shard store; rank 0 then joins the shards into one store of HDF5 virtual datasets, so readers see
a single store (the shard files stay beside it).

    torchrun --nproc-per-node 2 -m gmint_cli extract --model audited.pt --out features.h5

Shards hold whole batches, the same batches a single process computes, so the joined store equals a
single-process run row for row. `gloo` serves CPUs and `nccl` GPUs (chosen from --device). Run again
with --resume, a finished extraction is left as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from gmint.errors import GmintError, InputError, Remedy, StoreMismatchError
from gmint.features.lock import WriterLock
from gmint.features.schema import (
    COMPUTED_COLUMNS,
    FORMAT,
    LIBVER,
    READABLE_FORMATS,
    ROW_COLUMNS,
    SPEC_KEYS,
    describe_codes,
    encode_attribute,
)
from gmint.features.store import FeatureStore
from gmint.files import atomic_write

# Keys that differ between shards by design.
PER_SHARD_KEYS = ("n_rows", "rows_sha256", "extract_seconds", "rows_written", "shard", "complete")


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_path(out: Path, rank: int, world_size: int) -> Path:
    """Where rank `rank` of `world_size` writes its shard of the store `out` (beside it)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard{rank}-of-{world_size}{out.suffix}")


def shard_bounds(n_rows: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Row range [lo, hi) of `rank`: a contiguous block of whole batches, as even as possible."""
    n_batches = -(-n_rows // batch_size)
    if n_batches < world_size:
        raise InputError(f"{world_size} processes but only {n_batches} batches of {batch_size} rows; "
                         "use fewer processes or a smaller batch size")
    blocks = np.array_split(np.arange(n_batches), world_size)[rank]
    return int(blocks[0]) * batch_size, min(n_rows, (int(blocks[-1]) + 1) * batch_size)


def merge_shards(out: Path, world_size: int, *, rows_sha256: str, overwrite: bool = False) -> Path:
    """Join complete shard stores into one store at `out` made of virtual datasets (holding `out`'s
    writer lock). A store at `out` that already joins these shards is kept as it is.

    Raises:
        IncompleteStoreError / StoreMismatchError: a shard is unfinished or from another extraction.
        StoreBusyError: another process is writing `out`.
    """
    out = Path(out)
    with WriterLock(out):
        return _merge(out, world_size, rows_sha256=rows_sha256, overwrite=overwrite)


def _merge(out: Path, world_size: int, *, rows_sha256: str, overwrite: bool) -> Path:
    shards = [shard_path(out, r, world_size) for r in range(world_size)]
    info = []
    for path in shards:
        with FeatureStore.open(path) as store:
            store.require_complete()
            arrays = store.arrays()
            info.append((len(store), store.provenance, store.dims, {n: arrays[n].dtype for n in
                                                                     (*ROW_COLUMNS, *COMPUTED_COLUMNS, "done")
                                                                     if n in arrays}))  # /2: no group
    first = info[0][1]
    for path, (_, prov, _, _) in zip(shards[1:], info[1:], strict=True):
        diff = [k for k in SPEC_KEYS if k not in PER_SHARD_KEYS and prov.get(k) != first.get(k)]
        if diff:
            raise StoreMismatchError(f"{path} differs from {shards[0]} in {', '.join(diff)}")
    if out.exists() and not overwrite:
        if _joins(out, shards, first, rows_sha256):
            return out
        raise InputError(f"{out} exists", Remedy.OVERWRITE)
    n = sum(length for length, *_ in info)
    offsets = np.cumsum([0] + [length for length, *_ in info])
    dims, dtypes = info[0][2], info[0][3]

    def join(h5: h5py.File, name: str, shape_rest: tuple[int, ...], dtype: np.dtype) -> None:
        layout = h5py.VirtualLayout(shape=(n, *shape_rest), dtype=dtype)
        for path, (length, *_), lo in zip(shards, info, offsets, strict=False):
            # A relative source name: HDF5 looks beside the joined file, so the folder can move.
            layout[lo:lo + length] = h5py.VirtualSource(path.name, name, shape=(length, *shape_rest))
        h5.create_virtual_dataset(name, layout, fillvalue=0)

    with atomic_write(out) as tmp, h5py.File(tmp, "w", libver=LIBVER, locking=False) as h5:
        for name, dtype in dtypes.items():
            join(h5, name, (), dtype)
        describe_codes(h5)
        h5.create_group("features")
        for name, d in dims.items():
            join(h5, f"features/{name}", (d,), np.dtype(np.float32))
        h5.attrs["format"] = FORMAT if "group" in dtypes else READABLE_FORMATS[0]  # the shards' own format
        for key, value in first.items():
            if key not in PER_SHARD_KEYS and key != "format":
                h5.attrs[key] = encode_attribute(value)
        h5.attrs["n_rows"] = n
        h5.attrs["rows_sha256"] = rows_sha256
        h5.attrs["shards"] = encode_attribute([p.name for p in shards])
        h5.attrs["extract_seconds"] = max(float(str(p.get("extract_seconds", 0.0))) for _, p, _, _ in info)
        h5.attrs["rows_written"] = n
        h5.attrs["complete"] = True
    return out


def _joins(out: Path, shards: list[Path], spec: dict[str, object], rows_sha256: str) -> bool:
    """Whether the store at `out` is a complete join of `shards` for the same extraction."""
    try:
        with FeatureStore.open(out) as store:
            complete, prov = store.complete, store.provenance
    except GmintError:
        return False
    return (complete and prov.get("shards") == [p.name for p in shards]
            and prov.get("rows_sha256") == rows_sha256
            and all(prov.get(k) == spec.get(k) for k in SPEC_KEYS if k not in PER_SHARD_KEYS))


def run_distributed(extract_shard: Callable[[int, int], None], merge: Callable[[int], None], *,
                    device: str) -> None:
    """Init the process group from torchrun's environment, run this rank's shard, join on rank 0.

    The ranks agree after each step whether all of them succeeded, so an error on one (a refused store,
    a bad shard) stops every rank with one line, rather than leaving the others to die in a collective
    whose peer has gone (a gloo/nccl traceback).
    """
    import torch.distributed as dist

    rank, world_size = world()
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        _agreed(lambda: extract_shard(rank, world_size), device)
        _agreed(lambda: merge(world_size) if rank == 0 else None, device)
    finally:
        dist.destroy_process_group()


def _agreed(step: Callable[[], object], device: str) -> None:
    """Run this rank's part of a step, then learn which ranks failed; raise if any did (a failed rank
    raises its own error, the others say which ranks to look at)."""
    import torch
    import torch.distributed as dist

    rank, world_size = world()
    failed = torch.zeros(world_size, device=device)
    try:
        step()
    except Exception:
        failed[rank] = 1
        dist.all_reduce(failed)
        raise
    dist.all_reduce(failed)
    if failed.any():
        ranks = ", ".join(str(r) for r in failed.nonzero().flatten().tolist())
        raise GmintError(f"stopped: process {ranks} of this torchrun failed (its error is above)")
