"""gmint: Membership Inference Test from per-sample Weight Modifiers.

The public API, one function per stage of an audit (see README.md):
dataset → split → audited model → extract → train a MINT classifier → evaluate / audit a set;
`run_cell` composes them into one experiment cell.

The names are loaded on first use (PEP 562): most stages import torch, and a program that only needs
`gmint.version` or the command line's help should not pay seconds for it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from gmint.version import __version__

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and editors
    from gmint.assess.evaluate import Evaluation, evaluate_store, evaluate_with_control
    from gmint.assess.scoring import audit_set
    from gmint.data.readers import load_dataset
    from gmint.data.split import MembershipSplit, make_split, read_item_list, split_from_lists
    from gmint.experiment import Probe, Recipe, run_cell
    from gmint.features.extract import extract, split_rows
    from gmint.features.settings import ExtractSettings
    from gmint.features.store import FeatureStore
    from gmint.mint import TrainedMint, train_mint
    from gmint.models.check import check_model
    from gmint.models.imported import ModelSpec, import_model
    from gmint.models.io import load_audited
    from gmint.models.train import TrainConfig, train_audited

# Each public name → the module that defines it.
_EXPORTS = {
    "Evaluation": "gmint.assess.evaluate", "evaluate_store": "gmint.assess.evaluate",
    "evaluate_with_control": "gmint.assess.evaluate", "audit_set": "gmint.assess.scoring",
    "load_dataset": "gmint.data.readers", "MembershipSplit": "gmint.data.split", "make_split": "gmint.data.split",
    "read_item_list": "gmint.data.split", "split_from_lists": "gmint.data.split", "Probe": "gmint.experiment",
    "Recipe": "gmint.experiment", "run_cell": "gmint.experiment", "extract": "gmint.features.extract",
    "split_rows": "gmint.features.extract", "ExtractSettings": "gmint.features.settings",
    "FeatureStore": "gmint.features.store", "TrainedMint": "gmint.mint",
    "train_mint": "gmint.mint", "check_model": "gmint.models.check", "ModelSpec": "gmint.models.imported",
    "import_model": "gmint.models.imported", "load_audited": "gmint.models.io", "TrainConfig": "gmint.models.train",
    "train_audited": "gmint.models.train",
}

__all__ = ["Evaluation", "ExtractSettings", "FeatureStore", "MembershipSplit", "ModelSpec", "Probe", "Recipe",
           "TrainConfig",
           "TrainedMint", "__version__", "audit_set", "check_model", "evaluate_store", "evaluate_with_control",
           "extract", "import_model", "load_audited", "load_dataset", "make_split", "read_item_list", "run_cell",
           "split_from_lists", "split_rows", "train_audited", "train_mint"]


def __getattr__(name: str) -> object:
    """Load a public name's module the first time the name is asked for, and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gmint' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
