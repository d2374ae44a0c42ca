"""Membership splits: which rows trained the audited model, which are external, which the auditor may use.

One seeded manifest decides everything downstream, so it is saved as JSON with a content hash that
feature stores and classifiers record. Splits are class-balanced and, under the `grouped` protocol,
group-aware: all frames of one GTSRB track land on the same side, and each class gives the pool and the
holdout as many member groups as external groups. An auditor who knows which files trained the model lists
them instead (`split_from_lists`): the lists fix members and external, the pool and the holdout are drawn
from them in the same way, and a third list may name control rows, known never to have trained the model,
for the models the auditor trains beside it (reference models, a negative control).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gmint.data.base import ImageSet
from gmint.errors import InputError, Remedy
from gmint.files import atomic_write

FRACTIONS = {"D100": 1.0, "D10": 0.1, "D1": 0.01}
# Roles that must never share a row: a row on both sides would be labelled, fitted or scored as both.
DISJOINT = (("members", "external"), ("pool", "holdout"), ("control", "members"), ("control", "external"),
            ("control", "pool"), ("control", "holdout"))
PROTOCOLS = ("paper", "grouped")
MEMBER, EXTERNAL = 1, 0
POOL, HOLDOUT = 0, 1
# Columns of a CSV list file that name its items, should a header name one; else the first column is read.
LIST_COLUMNS = ("file", "path", "sample_id", "row")
# Offenders an error message quotes: enough to find the pattern, short enough for one line.
_QUOTED = 3


@dataclass(frozen=True)
class MembershipSplit:
    """Row indices (into the ImageSet) of each role, plus how they were drawn.

    `members` trained the audited model; `external` never did. `pool` is the part of both the auditor
    may fit a MINT classifier on; `holdout` is only ever scored, with as many members as externals.
    `subpools` holds the nested, class-balanced D10/D1 subsets of the pool. `control` rows are in
    neither set: they train a negative-control model that saw neither members nor externals.
    """

    dataset: str
    protocol: str
    seed: int
    members: list[int]
    external: list[int]
    pool: list[int]
    holdout: list[int]
    subpools: dict[str, list[int]] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)
    control: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Refuse roles that overlap, and pool/holdout rows that are neither member nor external (they
        would be labelled external): a hand-edited manifest can carry a valid hash and still be wrong."""
        problems = []
        for a, b in DISJOINT:
            common = np.intersect1d(getattr(self, a), getattr(self, b))
            if len(common):
                problems.append(f"{a} and {b} share {len(common)} rows (e.g. {', '.join(map(str, common[:3]))})")
        unlabelled = np.setdiff1d(self.pool + self.holdout, self.members + self.external)
        if len(unlabelled):
            problems.append(f"{len(unlabelled)} pool/holdout rows are neither members nor external (e.g. "
                            f"{', '.join(map(str, unlabelled[:3]))})")
        if problems:
            raise InputError("split roles overlap: " + "; ".join(problems))

    @property
    def sha256(self) -> str:
        """Hash of the manifest's content: what stores and classifiers record to detect mix-ups."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def membership_of(self, rows: np.ndarray) -> np.ndarray:
        """(N,) int8: 1 for members, 0 for external."""
        return np.isin(rows, self.members).astype(np.int8)

    def role_of(self, rows: np.ndarray) -> np.ndarray:
        """(N,) int8: 0 for the auditor's pool, 1 for the held-out evaluation rows."""
        return np.isin(rows, self.holdout).astype(np.int8)

    def save(self, path: Path) -> None:
        """Write the manifest as JSON with its hash, whole or not at all (a half-written one would not load)."""
        payload = {**asdict(self), "sha256": self.sha256}
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(payload))

    @classmethod
    def load(cls, path: Path) -> MembershipSplit:
        """Read a manifest written by `save`.

        Raises:
            InputError: the file is missing, not JSON, has other fields, overlapping roles, or a content that
                no longer matches its hash (edited by hand).
        """
        try:
            payload = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"split manifest {path} not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"split manifest {path} is not valid JSON ({exc})") from None
        recorded = payload.pop("sha256", None)
        try:
            split = cls(**payload)
        except TypeError as exc:
            raise InputError(f"split manifest {path} has the wrong fields ({exc})") from None
        except InputError as exc:
            raise InputError(f"split manifest {path}: {exc.message}", exc.remedy) from None
        if recorded != split.sha256:
            raise InputError(f"split manifest {path} was modified after it was written (hash mismatch)")
        return split

    @classmethod
    def from_json(cls, text: str) -> MembershipSplit:
        """The split a JSON text describes (the copy a checkpoint records), its hash not checked."""
        payload = json.loads(text)
        payload.pop("sha256", None)
        return cls(**payload)


def check_model_split(meta: Mapping[str, object], split: MembershipSplit, *, trained_outside: bool = False) -> None:
    """Refuse to label rows with a split other than the one the audited model was trained on.

    The split decides each row's membership label; another split's labels call members external and
    back, and the audit still runs to the end. A gmint checkpoint records its split (`meta["split"]`);
    a model trained elsewhere records none (nothing to check) or one that no longer describes it, which
    the caller states with `trained_outside=True`.

    Raises:
        InputError: the hashes differ; the message names both.
    """
    recorded = meta.get("split")
    if recorded is None or trained_outside:
        return
    trained = MembershipSplit.from_json(json.dumps(recorded)).sha256
    if trained != split.sha256:
        raise InputError(f"the split {split.sha256} is not the one the audited model was trained on ({trained}): "
                         "its membership labels would be wrong", Remedy.OWN_SPLIT)


def one_sided_groups(membership: np.ndarray, groups: np.ndarray) -> np.ndarray | None:
    """`groups` where rows should be drawn by whole group, else None (draw rows one by one).

    Only where every row has a group (-1 marks none), some group holds several rows, and every group sits
    on one side: a group on both sides (GTSRB split by frame) cannot be drawn for one side alone. The
    bootstrap resamples such groups, and a MINT classifier holds out whole groups to stop its training on.
    """
    membership, groups = np.asarray(membership), np.asarray(groups)
    if len(groups) == 0 or (groups < 0).any():
        return None
    sides_per_group = np.unique(np.stack([groups, membership]), axis=1)[0]
    if len(np.unique(sides_per_group)) < len(sides_per_group) or len(np.unique(groups)) == len(groups):
        return None
    return groups


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
    _check_request(protocol, holdout)
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
    return _manifest(data, protocol, seed, roles, options, rng)


def split_from_lists(data: ImageSet, members: Sequence[str | int], external: Sequence[str | int], *,
                     control: Sequence[str | int] | None = None, holdout: float = 0.5, protocol: str = "grouped",
                     seed: int = 0) -> MembershipSplit:
    """The membership split the auditor's own lists describe: members and external as listed, and a seeded
    pool and holdout drawn from them; control rows as listed, if a control list is given.

    Each list names rows one way: by integer row id (`data.sample_ids`), or by image file path relative to
    the dataset folder (`data.files`, e.g. `train/cat/001.png`; `./` prefixes and backslash separators are
    normalised). The lists, not the official parts, decide membership: a listed row of the `test` part is a
    member if the members list names it. The holdout pairs a member unit with an external unit of the same
    class (a row, or a whole group under `grouped` where `data.groups` is given), so every class holds out as
    many members as externals; units left unpaired stay in the pool. Nothing is drawn from outside the
    lists: under `paper` too, the held-out externals come from the external list.

    Control rows are rows the auditor knows the model never saw, kept for the models trained beside it: the
    offline reference models of gmint.reference train on halves of them, so they must not be candidates (a
    reference model that trained on a candidate would calibrate it against itself). They are never in the pool
    or the holdout, and under `grouped` a group is on the control list or on the others, not both.

    Args:
        data: the dataset the lists name rows of.
        members: the rows that trained the audited model (row ids or file paths).
        external: rows it never saw, named the same way or the other.
        control: more rows it never saw, for reference models and negative controls (None: none). Its row
            ids or paths and hash are recorded in the manifest's options only where it is given, so a split
            without one keeps its hash.
        holdout: fraction of the smaller list held out for evaluation, the same number on both sides.
        protocol: `grouped` (a group may not have rows on both lists, and is held out whole) or `paper`
            (rows are units, groups ignored).
        seed: seeds the draw of the pool and holdout; recorded in the manifest with a hash of each list.

    Raises:
        InputError: unknown protocol or a holdout outside (0, 1); a list that is empty, mixes row ids with
            paths, names an item twice or one the dataset lacks; paths for a dataset without one file per
            row; an item on two lists; under `grouped`, a group with rows on two lists; no class on both
            the members and the external lists; too few rows for both a pool and a holdout.
    """
    _check_request(protocol, holdout)
    listed = _resolve_list(data, members, "members"), _resolve_list(data, external, "external")
    member_rows, external_rows = (np.sort(side.rows) for side in listed)
    shared = np.intersect1d(member_rows, external_rows)
    if len(shared):
        raise InputError(f"{_plural(len(shared), 'item')} on both lists: {_quote(_keys_of(listed[0], shared))}; a "
                         "row is a member or external, not both")
    controlled = _resolve_list(data, control, "control") if control is not None else None
    if controlled is not None:
        for side, role in zip(listed, ("members", "external"), strict=True):
            shared = np.intersect1d(controlled.rows, side.rows)
            if len(shared):
                raise InputError(f"{_plural(len(shared), 'item')} on the control list and the {role} list: "
                                 f"{_quote(_keys_of(controlled, shared))}; a control row is neither a member nor "
                                 "external")
    groups = data.groups if protocol == "grouped" and data.groups is not None else None
    if groups is not None:
        _refuse_split_groups(groups, *listed)
        if controlled is not None:
            _refuse_control_groups(groups, controlled, listed)
    rng = np.random.default_rng(seed)
    n_hold = int(round(holdout * min(len(member_rows), len(external_rows))))
    held_members, held_external = _paired_holdout(member_rows, external_rows, data.labels, groups, n_hold, rng)
    control_rows = np.sort(controlled.rows) if controlled is not None else np.empty(0, np.int64)
    roles = Roles(control_rows, member_rows, external_rows, held_members, held_external)
    options: dict[str, object] = {"source": "lists", "holdout": holdout,
                                  "grouped_by": "group" if groups is not None else "row"}
    sides = [("members", listed[0]), ("external", listed[1])]
    if controlled is not None:
        sides.append(("control", controlled))
    for role, side in sides:
        options[f"{role}_by"] = side.by
        options[f"{role}_sha256"] = side.sha256
    return _manifest(data, protocol, seed, roles, options, rng)


def _keys_of(listed: _Listed, rows: np.ndarray) -> list[str | int]:
    """The items of a list that name `rows`, in the list's order."""
    return [key for key, hit in zip(listed.keys, np.isin(listed.rows, rows), strict=True) if hit]


def read_item_list(path: Path) -> list[str | int]:
    """The items of a list file, in its order: row ids (int) or image file paths (str), as given.

    By suffix: `.json` holds a JSON list of strings and integers; `.csv` is read by its first column, or
    by the first column its header names `file`, `path`, `sample_id` or `row` (a header naming none of
    them would be read as an item); any other file is plain text, one item per line, blank lines and lines
    starting with `#` skipped. An item that is a whole number, in any of them, is a row id.

    Raises:
        InputError: the file is missing, not UTF-8 text, not a valid JSON list of strings and integers, not
            valid CSV, or has a CSV row without the item.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"list file {path} {'is a folder' if path.is_dir() else 'not found'}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often begin a CSV with a BOM
    except UnicodeDecodeError as exc:
        raise InputError(f"list file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_items(text, path)
    if suffix == ".csv":
        return _csv_items(text, path)
    lines = (line.strip() for line in text.splitlines())
    return [_item(line) for line in lines if line and not line.startswith("#")]


def _check_request(protocol: str, holdout: float) -> None:
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol}'; choose from {list(PROTOCOLS)}")
    if not 0.0 < holdout < 1.0:
        raise InputError(f"holdout must be a fraction in (0, 1), got {holdout}")


def _manifest(data: ImageSet, protocol: str, seed: int, roles: Roles, options: dict[str, object],
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
        keys.append(_rank_keys(count, rng))
    ranked = np.concatenate(pairs)[np.argsort(np.concatenate(keys), kind="stable")]
    smaller = 0 if n_members <= n_external else 1  # the side whose count decides how many pairs
    target = min(n_members, n_external)
    pair_rows = sizes[ranked[:, smaller]]
    if not len(ranked) or target - pair_rows.sum() > sizes.max() / 2:
        available = int(pair_rows.sum())
        raise InputError(f"the grouped protocol pairs each member group with an external group of the same "
                         f"class: the train part has {len(ranked)} such pairs ({available} rows a side), fewer "
                         f"than the {target} asked for; ask for fewer", Remedy.PAPER_PROTOCOL)
    taken = ranked[:_prefix_length(pair_rows, target)]

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
    held = taken[:_prefix_length(sizes[taken[:, 0]], n_hold)]
    control_rows, _ = _take(rest, labels, groups, n_control, rng)
    return Roles(control_rows, member_rows, external_rows, rows_of(held[:, 0]), rows_of(held[:, 1]))


class _Listed(NamedTuple):
    """One list resolved against the dataset."""

    rows: np.ndarray         # (K,) row positions, in the list's order
    keys: list[str | int]    # the items as matched: row ids, or normalised paths
    by: str                  # `row id` or `file`

    @property
    def sha256(self) -> str:
        """Hash of the items, one per line, sorted as text: the same for any order of the same list."""
        return hashlib.sha256("".join(f"{key}\n" for key in sorted(map(str, self.keys))).encode()).hexdigest()


def _item(text: str) -> str | int:
    """One item as written: a whole number is a row id, anything else a path."""
    text = text.strip()
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else text


def _json_items(text: str, path: Path) -> list[str | int]:
    try:
        listed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"list file {path} is not valid JSON ({exc})") from None
    if not isinstance(listed, list):
        raise InputError(f"list file {path} must hold a JSON list of file paths or row ids, not a "
                         f"{type(listed).__name__}")
    odd = [item for item in listed if isinstance(item, bool) or not isinstance(item, (str, int))]
    if odd:
        raise InputError(f"list file {path} holds {_quote(odd)}: items are file paths (strings) or row ids "
                         "(integers)")
    return [_item(item) if isinstance(item, str) else item for item in listed]


def _csv_items(text: str, path: Path) -> list[str | int]:
    try:
        reader = csv.reader(io.StringIO(text))
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise InputError(f"list file {path} is not valid CSV ({exc})") from None
    header = [cell.strip().lower() for cell in rows[0][1]] if rows else []
    named = [i for i, cell in enumerate(header) if cell in LIST_COLUMNS]
    column = named[0] if named else 0
    what = f"'{header[column]}' value" if named else "item in its first column"
    items = []
    for line, row in rows[1:] if named else rows:
        cell = row[column].strip() if column < len(row) else ""
        if not cell:
            raise InputError(f"list file {path}, line {line}: no {what}")
        items.append(_item(cell))
    return items


def _resolve_list(data: ImageSet, items: Sequence[str | int], role: str) -> _Listed:
    """The rows one list names, refusing a list that is empty, mixed, repeated or names rows `data` lacks."""
    if len(items) == 0:
        raise InputError(f"the {role} list is empty")
    items = [int(item) if isinstance(item, np.integer) else item for item in items]  # a NumPy array of ids
    odd = [item for item in items if isinstance(item, bool) or not isinstance(item, (str, int))]
    if odd:
        raise InputError(f"the {role} list holds {_quote(odd)}: items are row ids (integers) or file paths (text)")
    ids = [item for item in items if isinstance(item, int)]
    paths = [item for item in items if isinstance(item, str)]
    if ids and paths:
        raise InputError(f"the {role} list mixes row ids ({_quote(ids)}) and file paths ({_quote(paths)}); "
                         "name its rows one way")
    keys: list[str | int]
    if ids:
        by, keys = "row id", list(ids)
        index: dict[str | int, int] = {int(sid): row for row, sid in enumerate(data.sample_ids)}
        hint = f"its row ids run from {int(data.sample_ids.min())} to {int(data.sample_ids.max())}"
    else:
        files = _per_image_files(data, role)
        by, keys = "file", [_normal_path(p) for p in paths]
        index = {_normal_path(str(f)): row for row, f in enumerate(files)}
        hint = f"paths are relative to the dataset folder, as in '{files[0]}'"
    repeated = [key for key, n in Counter(keys).items() if n > 1]
    if repeated:
        raise InputError(f"the {role} list names {_plural(len(repeated), 'item')} more than once: "
                         f"{_quote(repeated)}")
    unknown = [key for key in keys if key not in index]
    if unknown:
        raise InputError(f"the {role} list names {_plural(len(unknown), by)} that {data.name} lacks: "
                         f"{_quote(unknown)} ({hint})")
    return _Listed(np.array([index[key] for key in keys], dtype=np.int64), keys, by)


def _per_image_files(data: ImageSet, role: str) -> np.ndarray:
    """`data.files` where each row has a file of its own; else the list must name row ids."""
    if data.files is None:
        raise InputError(f"{data.name} records no image files, so the {role} list must name its rows by "
                         "integer row id")
    names, counts = np.unique(data.files, return_counts=True)
    if counts.max() > 1:
        raise InputError(f"{data.name} has no file per image (its file '{names[counts.argmax()]}' holds "
                         f"{counts.max()} rows), so the {role} list must name its rows by integer row id")
    return data.files


def _normal_path(text: str) -> str:
    """A listed path as `ImageSet.files` spells it: `/` separators, no `./` or doubled separators."""
    return posixpath.normpath(text.strip().replace("\\", "/"))


def _refuse_split_groups(groups: np.ndarray, members: _Listed, external: _Listed) -> None:
    """Refuse lists that put one group (a GTSRB track) on both sides, naming the first such group."""
    member_groups, external_groups = groups[members.rows], groups[external.rows]
    shared = np.intersect1d(member_groups, external_groups)
    if len(shared):
        group = shared[0]
        member = members.keys[int(np.flatnonzero(member_groups == group)[0])]
        external_key = external.keys[int(np.flatnonzero(external_groups == group)[0])]
        more = f", and so do {_plural(len(shared) - 1, 'other group')}" if len(shared) > 1 else ""
        raise InputError(f"group {int(group)} has rows on both lists ({_quote([member])} a member, "
                         f"{_quote([external_key])} external){more}; the grouped protocol keeps each group on "
                         "one side: list a group on one side only", Remedy.PAPER_PROTOCOL)


def _refuse_control_groups(groups: np.ndarray, control: _Listed, candidates: tuple[_Listed, _Listed]) -> None:
    """Refuse a control list that shares a group (a GTSRB track) with the members or external list: a model
    trained on control rows would see near-copies of candidates."""
    for side, role in zip(candidates, ("members", "external"), strict=True):
        shared = np.intersect1d(groups[control.rows], groups[side.rows])
        if len(shared):
            group = shared[0]
            mine = control.keys[int(np.flatnonzero(groups[control.rows] == group)[0])]
            theirs = side.keys[int(np.flatnonzero(groups[side.rows] == group)[0])]
            raise InputError(f"group {int(group)} has rows on the control list ({_quote([mine])}) and the {role} "
                             f"list ({_quote([theirs])}); the grouped protocol keeps each group on one list: list "
                             "it on one only", Remedy.PAPER_PROTOCOL)


class _Units(NamedTuple):
    """Rows of one side as units (rows, or whole groups), each with its class and size."""

    rows: np.ndarray
    unit_of: np.ndarray   # (rows,) unit of each row
    units: np.ndarray     # (U,) distinct units
    classes: np.ndarray   # (U,) class of each unit (of its first row)
    sizes: np.ndarray     # (U,) rows of each unit

    @classmethod
    def of(cls, rows: np.ndarray, labels: np.ndarray, groups: np.ndarray | None) -> _Units:
        unit_of = groups[rows] if groups is not None else rows
        units, first, sizes = np.unique(unit_of, return_index=True, return_counts=True)
        return cls(rows, unit_of, units, labels[rows[first]], sizes)

    def rows_of(self, index: np.ndarray) -> np.ndarray:
        """The rows of the units at `index`, sorted."""
        return np.sort(self.rows[np.isin(self.unit_of, self.units[index])])


def _paired_holdout(members: np.ndarray, external: np.ndarray, labels: np.ndarray, groups: np.ndarray | None,
                    count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """About `count` member rows held out as same-class pairs of a member unit and an external unit (a row,
    or a whole group where `groups` is given) → (held members, held externals).

    As in `_grouped_roles`, a class gives the holdout as many member units as external units, so its member
    share there is even whatever its shares on the lists (a class prior learned on the pool carries no
    signal to the holdout); pairs interleave classes by relative rank, so any prefix holds each class in
    proportion to its pairs.

    Raises:
        InputError: no class has both members and external samples.
    """
    sides = _Units.of(members, labels, groups), _Units.of(external, labels, groups)
    pairs, keys = [], []
    for cls in np.intersect1d(sides[0].classes, sides[1].classes):
        member_units = rng.permutation(np.flatnonzero(sides[0].classes == cls))
        external_units = rng.permutation(np.flatnonzero(sides[1].classes == cls))
        n = min(len(member_units), len(external_units))
        pairs.append(np.stack([member_units[:n], external_units[:n]], axis=1))
        keys.append(_rank_keys(n, rng))
    if not pairs:
        raise InputError("no class has both members and external samples: a holdout cannot compare them "
                         "within a class")
    ranked = np.concatenate(pairs)[np.argsort(np.concatenate(keys), kind="stable")]
    held = ranked[:_prefix_length(sides[0].sizes[ranked[:, 0]], count)]
    return sides[0].rows_of(held[:, 0]), sides[1].rows_of(held[:, 1])


def _quote(items: Sequence[object]) -> str:
    """The first few offenders for a one-line message: paths quoted, numbers bare."""
    shown = ", ".join(repr(item) if isinstance(item, str) else str(item) for item in items[:_QUOTED])
    return shown + (f" and {len(items) - _QUOTED} more" if len(items) > _QUOTED else "")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
        keys[members[order]] = _rank_keys(len(members), rng)
    ranked = units[np.argsort(keys, kind="stable")]
    sizes = np.array([np.count_nonzero(unit_of == u) for u in ranked]) if groups is not None else \
        np.ones(len(ranked), np.int64)
    taken = np.isin(unit_of, ranked[:_prefix_length(sizes, count)])
    return np.sort(rows[taken]), rows[~taken]


def _rank_keys(count: int, rng: np.random.Generator) -> np.ndarray:
    """Sort keys in [0, 1) for `count` units of one class already in random order: the i-th lands in the
    i-th of `count` equal slots, so sorting all classes' keys together interleaves the classes by relative
    rank and any prefix holds each class in proportion."""
    return (np.arange(count) + rng.random(count)) / max(count, 1)


def _prefix_length(sizes: np.ndarray, count: int) -> int:
    """How many of the leading units (of `sizes` rows each) come closest to `count` rows; at least one."""
    return int(np.argmin(np.abs(np.cumsum(sizes) - count))) + 1


def subpool_mask(membership: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over the (sorted) pool rows: a `fraction` balanced over (membership, class).

    Nested (D1 ⊂ D10) because every fraction takes a prefix of the same seeded permutation of each
    stratum; at least one row per stratum. Used by the split and again by MINT training, from the
    store's columns, so both agree without the store carrying the manifest.
    """
    rng = np.random.default_rng([seed, 1])
    mask = np.zeros(len(membership), dtype=bool)
    for side in (MEMBER, EXTERNAL):
        for cls in np.unique(labels):
            stratum = np.flatnonzero((membership == side) & (labels == cls))
            if len(stratum):
                k = max(1, int(round(fraction * len(stratum))))
                mask[rng.permutation(stratum)[:k]] = True
    return mask
