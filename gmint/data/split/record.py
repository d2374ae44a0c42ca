"""The membership split as a record: which rows trained the audited model, which are external, which the
auditor may use; saved and read back as JSON with a content hash, and looked up for a verb or a checkpoint.

One seeded manifest decides everything downstream, so it is saved as JSON with a content hash that feature
stores and classifiers record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gmint.errors import InputError, Remedy
from gmint.files import atomic_write

FRACTIONS = {"D100": 1.0, "D10": 0.1, "D1": 0.01}
# Roles that must never share a row: a row on both sides would be labelled, fitted or scored as both.
DISJOINT = (("members", "external"), ("pool", "holdout"), ("control", "members"), ("control", "external"),
            ("control", "pool"), ("control", "holdout"))
PROTOCOLS = ("paper", "grouped")
MEMBER, EXTERNAL = 1, 0
POOL, HOLDOUT = 0, 1


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
    def of(cls, recorded: MembershipSplit | None, given: Path | None = None) -> MembershipSplit | None:
        """The split rows are labelled with: the manifest file `given`, else the copy the audited model's
        checkpoint records (`recorded`); None where there is neither (a model trained outside gmint).

        Every command that labels rows looks its split up here, so a given manifest and a recorded one mean
        the same everywhere; whether a given one may differ from the recorded one is `check_model_split`'s
        to decide.

        Raises:
            InputError: `given` cannot be read as a manifest (see `load`).
        """
        return cls.load(given) if given is not None else recorded

    @classmethod
    def from_json(cls, text: str) -> MembershipSplit:
        """The split a JSON text describes (the copy a checkpoint records), its hash not checked."""
        payload = json.loads(text)
        payload.pop("sha256", None)
        return cls(**payload)


def check_model_split(trained: MembershipSplit | None, split: MembershipSplit, *,
                      trained_outside: bool = False) -> None:
    """Refuse to label rows with a split other than the one the audited model was trained on.

    The split decides each row's membership label; another split's labels call members external and
    back, and the audit still runs to the end. A gmint checkpoint records its split (`trained`); a
    model trained elsewhere records none (nothing to check) or one that no longer describes it, which
    the caller states with `trained_outside=True`.

    Raises:
        InputError: the hashes differ; the message names both.
    """
    if trained is None or trained_outside:
        return
    if trained.sha256 != split.sha256:
        raise InputError(f"the split {split.sha256} is not the one the audited model was trained on "
                         f"({trained.sha256}): "
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
