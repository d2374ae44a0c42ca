"""Drawing a membership split from a dataset's official parts: seeded, class-balanced and, under the
`grouped` protocol, group-aware (all frames of one GTSRB track land on the same side, and each class gives
the pool and the holdout as many member groups as external groups).

`build_manifest`, `rank_keys` and `prefix_length` are shared with the list-based splits (`lists`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.split.record import FRACTIONS, PROTOCOLS, MembershipSplit, subpool_mask
from gmint.errors import InputError, Remedy


def make_split(data: ImageSet, *, members: float | int = 0.5, external: float | int = 0.5,
               holdout: float = 0.5, control: float | int = 0, protocol: str = "grouped",
               seed: int = 0) -> MembershipSplit:
    """Draw a seeded, class-balanced membership split of `data`.

    Args:
        data: the dataset; members and external come from its official `train` part.
        members: a fraction (≤ 1.0) of the train part or a row count (int > 1).
        external: the same, for the external samples.
        holdout: fraction of the smaller side held out for evaluation, the same number on both sides.
        control: rows (fraction or count of the train part) for a negative-control model, drawn before
            members and external (after them under `grouped`); 0 for none.
        protocol: `paper` (rows drawn independently; where the dataset has an official `test` part,
            the held-out externals come from it, as the authors did) or `grouped` (for data with
            groups: whole groups, members and external as same-class pairs so every class is level
            between them in the pool and in the holdout; for data without, the same as `paper` with
            the held-out externals from the external rows).
        seed: seeds every random choice; recorded in the manifest.

    Raises:
        InputError: unknown protocol, sizes that do not fit, or an empty side.
    """
    check_request(protocol, holdout)
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(data.part == "train")
    test = np.flatnonzero(data.part == "test")
    n_members, n_external = _count(members, len(train), "members"), _count(external, len(train), "external")
    n_control = _count(control, len(train), "control") if control else 0
    if n_members + n_external + n_control > len(train):
        raise InputError(f"{n_members} members + {n_external} external + {n_control} control exceed the "
                         f"{len(train)} rows of {data.name}'s train part")
    if protocol == "grouped" and data.groups is not None:
        roles = _grouped_roles(train, data.labels, data.groups, n_members, n_external, n_control, holdout, rng)
    else:
        roles = _row_roles(train, test if protocol == "paper" else test[:0], data.labels, n_members, n_external,
                           n_control, holdout, rng)
    options: dict[str, object] = {
        "members": members, "external": external, "holdout": holdout, "control": control,
        "grouped_by": "group" if protocol == "grouped" and data.groups is not None else "row"}
    return build_manifest(data, protocol, seed, roles, options, rng)



def check_request(protocol: str, holdout: float) -> None:
    """Refuse an unknown protocol or a holdout fraction outside (0, 1) before anything is drawn."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol}'; choose from {list(PROTOCOLS)}")
    if not 0.0 < holdout < 1.0:
        raise InputError(f"holdout must be a fraction in (0, 1), got {holdout}")


def build_manifest(data: ImageSet, protocol: str, seed: int, roles: Roles, options: dict[str, object],
              rng: np.random.Generator) -> MembershipSplit:
    """The split `roles` describe: the holdout trimmed to as many members as externals, the pool the rest of
    both sides, and the pool's nested subpools.

    Raises:
        InputError: the pool or the holdout would lack members or external samples.
    """
    control_rows, member_rows, external_rows, held_members, held_external = roles
    pool_members = np.setdiff1d(member_rows, held_members)
    pool_external = np.setdiff1d(external_rows, held_external)
    if min(len(held_members), len(held_external), len(pool_members), len(pool_external)) == 0:
        raise InputError("empty split: too few rows to give both the pool and the holdout members and "
                         "external samples")
    n = min(len(held_members), len(held_external))  # group rounding can leave the sides unequal
    held_members, held_external = rng.permutation(held_members)[:n], rng.permutation(held_external)[:n]
    held = np.concatenate([held_members, held_external])
    pool = np.sort(np.concatenate([pool_members, pool_external]))
    membership = np.isin(pool, member_rows).astype(np.int64)
    subpools = {name: pool[subpool_mask(membership, data.labels[pool], FRACTIONS[name], seed)]
                for name in FRACTIONS if FRACTIONS[name] < 1.0}
    return MembershipSplit(
        dataset=data.name, protocol=protocol, seed=seed,
        members=sorted(map(int, member_rows)), external=sorted(map(int, np.union1d(external_rows, held_external))),
        pool=sorted(map(int, pool)), holdout=sorted(map(int, held)),
        subpools={k: sorted(map(int, v)) for k, v in subpools.items()},
        options=options, control=sorted(map(int, control_rows)),
    )


class Roles(NamedTuple):
    """Rows of each role as drawn, before the holdout is trimmed to as many members as externals."""

    control: np.ndarray
    members: np.ndarray
    external: np.ndarray
    held_members: np.ndarray
    held_external: np.ndarray   # from `external`, or from the official test part under `paper`


def _row_roles(train: np.ndarray, test: np.ndarray, labels: np.ndarray, n_members: int, n_external: int,
               n_control: int, holdout: float, rng: np.random.Generator) -> Roles:
    """Every role drawn row by row, class-balanced; held-out externals from `test` where it has rows."""
    control_rows, train = _take(train, labels, None, n_control, rng)
    member_rows, rest = _take(train, labels, None, n_members, rng)
    external_rows, _ = _take(rest, labels, None, n_external, rng)
    _refuse_empty(member_rows, external_rows)
    n_hold = int(round(holdout * min(len(member_rows), len(external_rows))))
    held_members, _ = _take(member_rows, labels, None, n_hold, rng)
    held_external, _ = _take(test if len(test) else external_rows, labels, None, n_hold, rng)
    return Roles(control_rows, member_rows, external_rows, held_members, held_external)


def _grouped_roles(train: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_members: int, n_external: int,
                   n_control: int, holdout: float, rng: np.random.Generator) -> Roles:
    """Members and external as same-class pairs of whole groups; the holdout a class-interleaved prefix of the
    pairs; control groups from what is left.

    Drawing each side's groups on its own spreads a class's few groups unevenly: with GTSRB's two-track
    classes, a class often sits in the pool as members only and in the holdout as external only, so the
    class prior a classifier learns points the wrong way on held-out rows (a negative control below
    chance). A pair gives its class one member group and one external group, in the pool or in the holdout.

    Raises:
        InputError: the pairs hold fewer rows than the smaller side asks for (by more than half a group).
    """
    unit_of = groups[train]
    units, first, sizes = np.unique(unit_of, return_index=True, return_counts=True)
    unit_class = labels[train[first]]
    pairs, keys = [], []
    for cls in np.unique(unit_class):
        shuffled = rng.permutation(np.flatnonzero(unit_class == cls))
        count = len(shuffled) // 2
        pairs.append(np.stack([shuffled[0:2 * count:2], shuffled[1:2 * count:2]], axis=1))
        keys.append(rank_keys(count, rng))
    ranked = np.concatenate(pairs)[np.argsort(np.concatenate(keys), kind="stable")]
    smaller = 0 if n_members <= n_external else 1  # the side whose count decides how many pairs
    wanted = min(n_members, n_external)
    pair_rows = sizes[ranked[:, smaller]]
    if not len(ranked) or wanted - pair_rows.sum() > sizes.max() / 2:
        available = int(pair_rows.sum())
        raise InputError(f"the grouped protocol pairs each member group with an external group of the same "
                         f"class: the train part has {len(ranked)} such pairs ({available} rows a side), fewer "
                         f"than the {wanted} asked for; ask for fewer", Remedy.PAPER_PROTOCOL)
    taken = ranked[:prefix_length(pair_rows, wanted)]

    def rows_of(unit_index: np.ndarray) -> np.ndarray:
        return np.sort(train[np.isin(unit_of, units[unit_index])])

    sides = [rows_of(taken[:, 0]), rows_of(taken[:, 1])]
    rest = np.setdiff1d(train, np.concatenate(sides))
    # the larger side's surplus over the smaller, in whole groups; it goes to the pool (the holdout is pairs)
    extra, rest = _take(rest, labels, groups, abs(n_members - n_external), rng)
    sides[1 - smaller] = np.sort(np.concatenate([sides[1 - smaller], extra]))
    member_rows, external_rows = sides
    _refuse_empty(member_rows, external_rows)
    n_hold = int(round(holdout * min(len(member_rows), len(external_rows))))
    held = taken[:prefix_length(sizes[taken[:, 0]], n_hold)]
    control_rows, _ = _take(rest, labels, groups, n_control, rng)
    return Roles(control_rows, member_rows, external_rows, rows_of(held[:, 0]), rows_of(held[:, 1]))



def _refuse_empty(member_rows: np.ndarray, external_rows: np.ndarray) -> None:
    if len(member_rows) == 0 or len(external_rows) == 0:
        raise InputError(f"empty split: {len(member_rows)} members, {len(external_rows)} external")


def _count(size: float | int, total: int, what: str) -> int:
    if isinstance(size, float) and size <= 1.0:
        if size <= 0:
            raise InputError(f"{what} must be positive, got {size}")
        return int(round(size * total))
    if int(size) <= 0:
        raise InputError(f"{what} must be positive, got {size}")
    return int(size)


def _take(rows: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, count: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """About `count` of `rows`, class-balanced, whole groups when given → (taken rows, remaining rows).

    Units (rows, or groups of rows) are shuffled within their class and interleaved across classes by
    their relative rank, so any prefix holds each class in proportion; the prefix whose row count is
    closest to `count` is taken. Per-class rounding would starve classes with few groups (GTSRB has
    classes of two tracks).
    """
    if count <= 0:
        return np.empty(0, np.int64), rows
    unit_of = groups[rows] if groups is not None else rows
    units, first = np.unique(unit_of, return_index=True)
    unit_class = labels[rows[first]]
    keys = np.empty(len(units))
    for cls in np.unique(unit_class):
        members = np.flatnonzero(unit_class == cls)
        order = rng.permutation(len(members))
        keys[members[order]] = rank_keys(len(members), rng)
    ranked = units[np.argsort(keys, kind="stable")]
    sizes = np.array([np.count_nonzero(unit_of == u) for u in ranked]) if groups is not None else \
        np.ones(len(ranked), np.int64)
    taken = np.isin(unit_of, ranked[:prefix_length(sizes, count)])
    return np.sort(rows[taken]), rows[~taken]


def rank_keys(count: int, rng: np.random.Generator) -> np.ndarray:
    """Sort keys in [0, 1) for `count` units of one class already in random order: the i-th lands in the
    i-th of `count` equal slots, so sorting all classes' keys together interleaves the classes by relative
    rank and any prefix holds each class in proportion."""
    return (np.arange(count) + rng.random(count)) / max(count, 1)


def prefix_length(sizes: np.ndarray, count: int) -> int:
    """How many of the leading units (of `sizes` rows each) come closest to `count` rows; at least one."""
    return int(np.argmin(np.abs(np.cumsum(sizes) - count))) + 1

