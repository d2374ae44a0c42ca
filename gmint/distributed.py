"""Scale-out on PyTorch's own launcher: each rank extracts a disjoint block of whole batches into its
own shard store; rank 0 then joins the shards into one store of HDF5 virtual datasets, so readers see
a single store (the shard files stay beside it).

    torchrun --nproc-per-node 2 -m gmint_cli extract --model audited.pt --out features.h5

Shards hold whole batches, the same batches a single process computes, so the joined store equals a
single-process run row for row. `gloo` serves CPUs and `nccl` GPUs (chosen from --device).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from gmint.errors import InputError, StoreMismatchError
from gmint.store import COMPUTED_COLUMNS, FORMAT, ROW_COLUMNS, SPEC_KEYS, FeatureStore, encode_attribute

# Keys that differ between shards by design.
PER_SHARD_KEYS = ("n_rows", "rows_sha256", "extract_seconds", "rows_written", "shard", "complete")


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_path(out: Path, rank: int, world_size: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.shard{rank}-of-{world_size}{out.suffix}")


def shard_bounds(n_rows: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Row range [lo, hi) of `rank`: a contiguous block of whole batches, as even as possible."""
    n_batches = -(-n_rows // batch_size)
    if n_batches < world_size:
        raise InputError(f"{world_size} processes but only {n_batches} batches of {batch_size} rows; "
                         "use fewer processes or a smaller --batch-size")
    blocks = np.array_split(np.arange(n_batches), world_size)[rank]
    return int(blocks[0]) * batch_size, min(n_rows, (int(blocks[-1]) + 1) * batch_size)


def merge_shards(out: Path, world_size: int, *, rows_sha256: str, overwrite: bool = False) -> Path:
    """Join complete shard stores into one store at `out` made of virtual datasets.

    Raises:
        IncompleteStoreError / StoreMismatchError: a shard is unfinished or from another extraction.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    shards = [shard_path(out, r, world_size) for r in range(world_size)]
    info = []
    for path in shards:
        with FeatureStore.open(path) as store:
            store.require_complete()
            info.append((len(store), store.provenance, store.dims, {n: store._h5[n].dtype for n in
                                                                     (*ROW_COLUMNS, *COMPUTED_COLUMNS, "done")}))
    first = info[0][1]
    for path, (_, prov, _, _) in zip(shards[1:], info[1:], strict=True):
        diff = [k for k in SPEC_KEYS if k not in PER_SHARD_KEYS and prov.get(k) != first.get(k)]
        if diff:
            raise StoreMismatchError(f"{path} differs from {shards[0]} in {', '.join(diff)}")
    n = sum(length for length, *_ in info)
    offsets = np.cumsum([0] + [length for length, *_ in info])
    dims, dtypes = info[0][2], info[0][3]

    def join(h5: h5py.File, name: str, shape_rest: tuple[int, ...], dtype: np.dtype) -> None:
        layout = h5py.VirtualLayout(shape=(n, *shape_rest), dtype=dtype)
        for path, (length, *_), lo in zip(shards, info, offsets, strict=False):
            # A relative source name: HDF5 looks beside the joined file, so the folder can move.
            layout[lo:lo + length] = h5py.VirtualSource(path.name, name, shape=(length, *shape_rest))
        h5.create_virtual_dataset(name, layout, fillvalue=0)

    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w", libver="latest") as h5:
        for name, dtype in dtypes.items():
            join(h5, name, (), dtype)
        h5.create_group("features")
        for name, d in dims.items():
            join(h5, f"features/{name}", (d,), np.dtype(np.float32))
        h5.attrs["format"] = FORMAT
        for key, value in first.items():
            if key not in PER_SHARD_KEYS and key != "format":
                h5.attrs[key] = encode_attribute(value)
        h5.attrs["n_rows"] = n
        h5.attrs["rows_sha256"] = rows_sha256
        h5.attrs["shards"] = encode_attribute([p.name for p in shards])
        h5.attrs["extract_seconds"] = max(float(p.get("extract_seconds", 0.0)) for _, p, _, _ in info)
        h5.attrs["rows_written"] = n
        h5.attrs["complete"] = True
    tmp.replace(out)
    return out


def run_distributed(extract_shard: Callable[[int, int], None], merge: Callable[[int], None], *,
                    device: str) -> None:
    """Init the process group from torchrun's environment, run this rank's shard, join on rank 0."""
    import torch.distributed as dist

    rank, world_size = world()
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        extract_shard(rank, world_size)
        dist.barrier()
        if rank == 0:
            merge(world_size)
        dist.barrier()
    finally:
        dist.destroy_process_group()
