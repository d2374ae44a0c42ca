"""Membership splits: which rows trained the audited model, which are external, which the auditor may use.

`record` holds the split itself (`MembershipSplit`: its JSON, its hash, the lookup every verb uses) and the
checks against a checkpoint; `draw` draws one from a dataset's official parts (`make_split`); `lists` makes
one from the auditor's own lists of files or row ids (`split_from_lists`, `read_item_list`).
"""

from gmint.data.split.draw import make_split
from gmint.data.split.lists import LIST_COLUMNS, read_item_list, split_from_lists
from gmint.data.split.record import (
    DISJOINT,
    EXTERNAL,
    FRACTIONS,
    HOLDOUT,
    MEMBER,
    POOL,
    PROTOCOLS,
    MembershipSplit,
    check_model_split,
    one_sided_groups,
    subpool_mask,
)

__all__ = ["DISJOINT", "EXTERNAL", "FRACTIONS", "HOLDOUT", "LIST_COLUMNS", "MEMBER", "POOL",
           "PROTOCOLS", "MembershipSplit", "check_model_split", "make_split", "one_sided_groups", "read_item_list",
           "split_from_lists", "subpool_mask"]
