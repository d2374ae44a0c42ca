"""Membership splits from the auditor's own lists: an auditor who knows which files trained the model lists
them (`split_from_lists`); the lists fix members and external, the pool and the holdout are drawn from them
as `draw` draws them, and a third list may name control rows, known never to have trained the model, for the
models the auditor trains beside it (reference models, a negative control). `read_item_list` reads a list
file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.split.draw import Roles, build_manifest, check_request, prefix_length, rank_keys
from gmint.data.split.record import MembershipSplit
from gmint.errors import InputError, Remedy

# Columns of a CSV list file that name its items, should a header name one; else the first column is read.
LIST_COLUMNS = ("file", "path", "sample_id", "row")
# Offenders an error message quotes: enough to find the pattern, short enough for one line.
_QUOTED = 3


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
    check_request(protocol, holdout)
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
    return build_manifest(data, protocol, seed, roles, options, rng)


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
        keys.append(rank_keys(n, rng))
    if not pairs:
        raise InputError("no class has both members and external samples: a holdout cannot compare them "
                         "within a class")
    ranked = np.concatenate(pairs)[np.argsort(np.concatenate(keys), kind="stable")]
    held = ranked[:prefix_length(sides[0].sizes[ranked[:, 0]], count)]
    return sides[0].rows_of(held[:, 0]), sides[1].rows_of(held[:, 1])


def _quote(items: Sequence[object]) -> str:
    """The first few offenders for a one-line message: paths quoted, numbers bare."""
    shown = ", ".join(repr(item) if isinstance(item, str) else str(item) for item in items[:_QUOTED])
    return shown + (f" and {len(items) - _QUOTED} more" if len(items) > _QUOTED else "")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

