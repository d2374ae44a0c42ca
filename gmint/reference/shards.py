"""Training one reference set in several processes: shards, their own manifests, and the merge.

A set trained in N shards (separate processes, machines or torchrun ranks sharing the folder, `Shard`) is
written so that no two processes ever write one file: shard R trains models R, R + N, R + 2N, ... (interleaved,
so every shard gets as many models as any other, give or take one, and the first pairs finish first), and records
them in its own manifest, `references.shard<R>-of-<N>.json`. The merge (`merge_references`: by the shard that
finds every model recorded, or asked for) checks every model file against its record and writes the one
references.json, then removes the shard manifests; manifests are written, and shard manifests removed, only
under an exclusive lock on the folder, so a merge never reads a shard manifest being replaced nor removes one
written after it read it. Until the merge, the folder holds no references.json, and every reader refuses it in
one line naming the shards and models still missing.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gmint.errors import InputError, Remedy
from gmint.models.io import load_audited
from gmint.reference.manifest import MANIFEST, ModelRecord, ReferenceSet, check_model, rows_sha256

# A shard's own manifest: references.shard<R>-of-<N>.json.
_SHARD_FILE = re.compile(r"references\.shard(\d+)-of-(\d+)\.json")


@dataclass(frozen=True)
class Shard:
    """One of `count` processes that train a reference set together in one folder (see the module docstring).

    Shard `index` trains models index, index + count, index + 2·count, ...: interleaved rather than in blocks,
    so the shards' loads differ by one model at most for any K, the complementary pairs 2j, 2j + 1 finish
    together, and a set grown to a larger K with the same shards gives each its share of the new models.

    Attributes:
        index: this shard, from 0 (torchrun's RANK, a job array's task id).
        count: the number of shards (torchrun's WORLD_SIZE, the job array's size).
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"shard {self.index} of {self.count} does not exist: shards are numbered from 0 to "
                             "their count - 1")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """The shard written `INDEX/COUNT`, e.g. `0/4` (the first of four)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise InputError(f"a shard is written INDEX/COUNT, INDEX from 0 to COUNT - 1 (e.g. 0/4), got '{text}'")
        return cls(int(match[1]), int(match[2]))

    def models(self, k: int) -> list[int]:
        """The reference models of a set of `k` this shard trains."""
        return list(range(self.index, k, self.count))

    @property
    def file(self) -> str:
        """This shard's own manifest, beside the models."""
        return f"references.shard{self.index}-of-{self.count}.json"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ShardedSet:
    """What a folder's shard manifests (and the references.json of an earlier merge, if any) hold together.

    Attributes:
        manifest: the set the shards train, each model recorded where its shard (or references.json) records it.
        count: the number of shards.
        missing: shard index → the models it has not recorded yet, for each shard with some missing.
    """

    manifest: ReferenceSet
    count: int
    missing: dict[int, list[int]]


def shard_manifests(folder: Path) -> list[Shard]:
    """The shards whose manifests the folder holds, by count and index."""
    found = [_SHARD_FILE.fullmatch(p.name) for p in Path(folder).glob("references.shard*-of-*.json")]
    return sorted((Shard(int(m[1]), int(m[2])) for m in found if m and int(m[1]) < int(m[2])),
                  key=lambda s: (s.count, s.index))


def gather_shards(folder: Path) -> ShardedSet:
    """Read every shard manifest of the folder, check that they draw one set, and collect their records.

    Raises:
        InputError: no shard manifest, shards of sets split in different counts, or shards that draw different
            sets (another K, seed, mode, audited model, ...) or another than the folder's references.json.
    """
    folder = Path(folder)
    shards = shard_manifests(folder)
    if not shards:
        raise InputError(f"{folder} holds no shard of a reference set")
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        raise InputError(f"{folder} holds shards of a set split {' and '.join(map(str, counts))} ways; every shard "
                         "of one set must be given the same count: remove the others' shard manifests")
    sets = {s: ReferenceSet.load(folder, s.file) for s in shards}
    first, drawn = shards[0], replace(sets[shards[0]], models={})
    for shard, one in sets.items():
        if replace(one, models={}) != drawn:
            keys = [key for key, value in asdict(drawn).items() if key != "models" and asdict(one)[key] != value]
            raise InputError(f"{folder / shard.file} draws another reference set than {folder / first.file} "
                             f"({', '.join(keys)} differ); every shard of a set must be given the same options")
    names = {drawn.model_file(i) for i in range(drawn.k)}
    records: dict[str, ModelRecord] = {}
    if (folder / MANIFEST).exists():
        merged = ReferenceSet.load(folder)
        if merged.design() != drawn.design():
            keys = [key for key, value in drawn.design().items() if merged.design().get(key) != value]
            raise InputError(f"{folder} holds a reference set of another design than its shards ({', '.join(keys)} "
                             "differ); train the shards in another folder")
        records.update({name: r for name, r in merged.models.items() if name in names})
    for shard, one in sets.items():
        own = {drawn.model_file(i) for i in shard.models(drawn.k)}
        records.update({name: r for name, r in one.models.items() if name in own})
    missing = {index: left for index in range(counts[0])
               if (left := [i for i in Shard(index, counts[0]).models(drawn.k) if drawn.model_file(i) not in records])}
    return ShardedSet(replace(drawn, models=dict(sorted(records.items()))), counts[0], missing)


def unmerged_error(folder: Path, state: ShardedSet) -> InputError:
    """Why a folder of shards is no reference set yet, in one line: the shards and models still missing."""
    if not state.missing:
        return InputError(f"{folder}: every shard of its reference set has finished but they are not merged "
                          f"({MANIFEST} not written yet)", Remedy.MERGE_SHARDS)
    manifest = state.manifest
    left = "; ".join(f"shard {index}/{state.count} has not trained {_names([manifest.model_file(i) for i in models])}"
                     for index, models in state.missing.items())
    return InputError(f"{folder} holds a reference set trained in {state.count} shards that is not complete: {left}; "
                      f"train {'that shard' if len(state.missing) == 1 else 'those shards'} (each resumes where it "
                      "stopped), and the last to finish merges the set")


def _names(names: Sequence[str], shown: int = 4) -> str:
    """'a, b, c' or, for a long list, its first few and how many in all."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, ... ({len(names)} models)"


@contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's exclusive lock while writing a manifest or merging shards (waits for the holder).

    The lock is an flock on the folder itself, so it leaves no file behind and the kernel drops it when its
    holder dies: a killed shard never blocks the others.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def save_shard(folder: Path, manifest: ReferenceSet, shard: Shard) -> Path:
    """Write a shard's own manifest, under the folder's lock (a merge never reads it half replaced)."""
    with manifest_lock(folder):
        return manifest.save(folder, shard.file)


def merge_references(folder: Path) -> ReferenceSet:
    """Merge the shards of a reference set into its references.json, once every model is trained.

    Every model file is checked against its shard's record (its weights' fingerprint, its training rows) before
    references.json is written; then the shard manifests are removed. A folder already merged is left as it is.

    Raises:
        InputError: a shard or model still missing (one line naming them), a model file that is not the one
            recorded, shards that draw different sets, or a folder with no reference set.
    """
    merged = _merge(Path(folder), only_complete=False)
    assert merged is not None
    return merged


def merge_if_complete(folder: Path) -> ReferenceSet | None:
    """`merge_references` where every shard has recorded all its models; None (nothing written) otherwise."""
    return _merge(Path(folder), only_complete=True)


def _merge(folder: Path, *, only_complete: bool) -> ReferenceSet | None:
    with manifest_lock(folder):
        if not shard_manifests(folder):
            return ReferenceSet.load(folder)  # merged already, or its one line on what the folder lacks
        state = gather_shards(folder)
        if state.missing:
            if only_complete:
                return None
            raise unmerged_error(folder, state)
        manifest = state.manifest
        for i in range(manifest.k):
            path = folder / manifest.model_file(i)
            if not path.is_file():
                raise InputError(f"{path} is recorded by its shard but is missing; train shard "
                                 f"{i % state.count}/{state.count} again")
            check_model(manifest, i, load_audited(path), path)
            if manifest.models[path.name].rows_sha256 != rows_sha256(manifest.rows_of(i)):
                raise InputError(f"{path} trained on other rows than the {len(manifest.rows_of(i))} the set gives "
                                 f"model {i}")
        if not (folder / MANIFEST).exists() or ReferenceSet.load(folder) != manifest:
            manifest.save(folder)
        for shard in shard_manifests(folder):
            (folder / shard.file).unlink()
        return manifest
