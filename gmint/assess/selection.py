"""Which rows of a dataset a set audit scores: the audited model's held-out members or externals, or the rows
a file lists, named in the membership split the model was trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmint.assess.candidates import holdout_rows, read_row_ids
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit, check_model_split
from gmint.errors import InputError
from gmint.models.io import AuditedModel

# Candidate rows named by their place in the audited model's split; anything else names a JSON file of row ids.
ROW_SELECTIONS = ("holdout-members", "holdout-external")
# How this module's errors name a row selection, unless the caller names it otherwise (after its own option).
ROWS_PHRASE = "candidate rows"


def audit_split(audited: AuditedModel, split: MembershipSplit | None = None, *,
                trained_outside: bool = False) -> MembershipSplit | None:
    """The membership split candidate rows are named in: `split` where given, else the one the audited model
    records (None where it records none).

    A given split must be the model's own (another split's held-out members would be the model's externals, and
    back), unless the model was trained outside gmint (see `check_model_split`).
    """
    if split is not None:
        check_model_split(audited.record.split, split, trained_outside=trained_outside)
    return MembershipSplit.of(audited.record.split) if split is None else split


def select_rows(rows: str, split: MembershipSplit | None, data: ImageSet, *, named: str = ROWS_PHRASE) -> np.ndarray:
    """The rows of `data` that `rows` names: a name in ROW_SELECTIONS (the split's held-out members or externals)
    or a JSON file listing row ids.

    Args:
        rows: the selection's name, or the path of the JSON file.
        split: the membership split the selection is taken from (None: the model records none).
        data: the dataset whose rows are selected.
        named: how the errors name the selection: a caller that takes it from an option of its own names that
            option, so the message points at what the user typed.

    Raises:
        InputError: a split selection without a split, a file that is missing or lists no valid ids, or a row
            outside `data` (a negative one would otherwise count from the end).
    """
    if rows in ROW_SELECTIONS:
        if split is None:
            raise InputError(f"{named} {rows}: the audited model records no membership split to take them "
                             "from")
        index = holdout_rows(split, members=rows == "holdout-members")
    elif not Path(rows).is_file():
        raise InputError(f"{named} must be {' or '.join(ROW_SELECTIONS)} or a JSON file of row ids; "
                         f"{rows} not found")
    else:
        try:
            index = read_row_ids(Path(rows))
        except InputError as exc:
            raise InputError(f"{named}: {exc.message}", exc.remedy) from None
    outside = index[(index < 0) | (index >= len(data))]
    if len(outside):
        raise InputError(f"{named} {rows}: row {int(outside[0])} is outside the {len(data)} rows of "
                         f"{data.name} (0 to {len(data) - 1})")
    return index
