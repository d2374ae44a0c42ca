"""Which rows are the same items: what a set of rows was read from, and whether two reads name the same samples.

Sample ids are positions in one read of one dataset, so a candidate is the same item as a store's or a
classifier's row only if it is the same row of the same dataset (same name and folder, or the same files:
`same_dataset`) or the same file of that dataset's folder (`same_items`). Where a record does not say which
folder its rows were read from, that is said, not guessed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmint.data.base import ImageSet
from gmint.errors import GmintError, InputError
from gmint.features.provenance import Provenance
from gmint.mint.base import TrainedMint


@dataclass(frozen=True)
class DataOrigin:
    """What a set of rows was read from, as far as its record tells: what its sample ids are ids of.

    Attributes:
        dataset: the dataset's name.
        root: the folder its rows were read from, resolved; "" for data without one (digits); None where
            it is not known (a record from an older gmint, or a file-based set built in memory).
        files_sha256: `ImageSet.files_sha256` of the read ("" without files); None where not recorded.
        what: how messages name the record ("the MINT classifier", a store's path, "the candidates").
    """

    dataset: str
    root: str | None
    files_sha256: str | None
    what: str

    @classmethod
    def of(cls, data: ImageSet, what: str = "the candidates") -> DataOrigin:
        """The origin of rows read now."""
        return cls(data.name, _known_root(data.name, data.root), data.files_sha256(), what)

    @classmethod
    def recorded(cls, dataset: object, root: object, files_sha256: object, what: str) -> DataOrigin:
        """The origin a store's provenance or a classifier's spec records (None where a key is missing)."""
        return cls(str(dataset), _known_root(str(dataset), root),
                   str(files_sha256) if files_sha256 is not None else None, what)

    @classmethod
    def of_store(cls, provenance: Provenance, where: object) -> DataOrigin:
        """The origin of a store's rows, from its provenance."""
        return cls.recorded(provenance.dataset, provenance.dataset_root, provenance.dataset_files_sha256, str(where))

    @classmethod
    def of_classifier(cls, mint: TrainedMint) -> DataOrigin:
        """The origin of the rows a MINT classifier was fitted on (its `fitted_ids`)."""
        spec = mint.spec
        return cls.recorded(spec.dataset, spec.dataset_root, spec.dataset_files_sha256, "the MINT classifier")


def _known_root(dataset: str, root: object) -> str | None:
    """A recorded folder as text; "" for a dataset that has none (embedded data); None where unknown."""
    from gmint.data.readers.common import SOURCES  # which datasets are read from files

    if isinstance(root, str | Path) and str(root):
        return str(root)
    return None if dataset in SOURCES else ""


def same_dataset(a: DataOrigin, b: DataOrigin) -> bool:
    """Whether sample ids of `a` and of `b` name the same items: the same dataset read from the same folder,
    or from a copy of it (every sample id naming the same file).

    Raises:
        InputError: it cannot be told (a folder not recorded), or the folder's files changed between the two
            reads, so one id may name two files.
    """
    if a.dataset != b.dataset:
        return False
    if a.files_sha256 and a.files_sha256 == b.files_sha256:
        return True
    unknown = next((o for o in (a, b) if o.root is None), None)
    if unknown is not None:
        raise InputError(f"cannot tell whether {a.what} and {b.what} hold the same {a.dataset} rows: the folder "
                         f"behind {unknown.what} is not recorded (an older gmint wrote it, or it was built in memory); "
                         "extract the store again (and train the classifier on it)")
    if a.root != b.root:
        return False
    if a.files_sha256 is not None and b.files_sha256 is not None and a.files_sha256 != b.files_sha256:
        raise InputError(f"{a.root or a.dataset} has changed between {a.what} and {b.what}: its files differ, so a "
                         f"{a.dataset} row id no longer names the same file; extract the store again from the "
                         "folder as it is")
    return True


def same_items(data: ImageSet, index: np.ndarray, origin: DataOrigin, *, side: int | None = None) -> np.ndarray:
    """For each candidate row `index` of `data`, the sample id of the row of `origin` it is, else -1.

    A candidate is a row of `origin` when it is the same row of the same dataset (`same_dataset`), or the same
    file (resolved path, links followed) as a row read from `origin`'s folder — never by position alone. Files
    are matched only where a candidate lies inside that folder; the folder is then read again (at `side`, as
    the model's input) and must still hold the files `origin` recorded.

    Raises:
        InputError: where it cannot be told (see `same_dataset`), or the folder cannot be read again.
    """
    none = np.full(len(index), -1, dtype=np.int64)
    if same_dataset(DataOrigin.of(data), origin):
        return data.sample_ids[index].astype(np.int64)
    if data.root is None or data.files is None or origin.root == "":
        return none  # rows that are no files, or a dataset whose rows are no files
    if origin.root is None:
        raise InputError(f"cannot tell whether the candidates are files of {origin.what}'s {origin.dataset} rows: it "
                         "does not record the folder they were read from (written by an older gmint); extract the "
                         "store again (and train the classifier on it)")
    base = Path(origin.root)
    paths = [(data.root / str(f)).resolve() for f in data.files[index]]
    if not any(p.is_relative_to(base) for p in paths):
        return none
    listing = _files_of(origin, side)
    return np.array([listing.get(p, -1) for p in paths], dtype=np.int64)


def _files_of(origin: DataOrigin, side: int | None) -> dict[Path, int]:
    """Resolved file → sample id of every row of `origin`, from its folder read again."""
    from gmint.data.base import DATASETS
    from gmint.data.readers import load_dataset

    try:
        # Read as extraction reads a folder of mixed sizes (at the model's side); only the file list matters here.
        if side and "size" in inspect.signature(DATASETS.get(origin.dataset)).parameters:
            data = load_dataset(origin.dataset, origin.root, size=side)
        else:
            data = load_dataset(origin.dataset, origin.root)
    except GmintError as exc:
        raise InputError(f"cannot tell which candidates inside {origin.root} are rows of {origin.what}: "
                         f"{exc.message}", exc.remedy) from None
    if origin.files_sha256 is not None and data.files_sha256() != origin.files_sha256:
        raise InputError(f"{origin.root} has changed since {origin.what} was written: its files differ, so its "
                         f"{origin.dataset} row ids no longer name the same files; extract the store again from the "
                         "folder as it is")
    if data.root is None or data.files is None:
        return {}
    return {(data.root / str(f)).resolve(): int(i) for f, i in zip(data.files, data.sample_ids, strict=True)}
