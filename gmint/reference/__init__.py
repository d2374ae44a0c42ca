"""Reference models and the attacks that calibrate against them (LiRA, RMIA, calibrated gMINT).

A stage beside the audit, not below it: it imports data, models, features, mint and assess; only the CLI and
the benchmarks import it. Importing it registers every attack: one module per family (`lira`, `rmia`,
`calibrated`) on the interface of `base`.
"""

from gmint.reference import calibrated, lira, rmia  # noqa: F401  (register the attacks)
from gmint.reference.base import ATTACKS, NotApplicable, Task, attack_options
from gmint.reference.compare import Comparison, compare_attacks
from gmint.reference.design import ReferenceDraw, design_references
from gmint.reference.manifest import ReferenceSet
from gmint.reference.models import train_references
from gmint.reference.signals import ReferenceExtraction, extract_references, load_signals

__all__ = ["ATTACKS", "Comparison", "NotApplicable", "ReferenceDraw", "ReferenceExtraction", "ReferenceSet", "Task",
           "attack_options", "compare_attacks", "design_references", "extract_references", "load_signals",
           "train_references"]
