"""Reference models and the attacks that calibrate against them (LiRA, RMIA, calibrated gMINT).

A stage beside the audit, not below it: it imports data, models, features, mint and assess; only the CLI and
the benchmarks import it.
"""

from gmint.reference.attacks import ATTACKS, NotApplicable, Task
from gmint.reference.compare import Comparison, compare_attacks
from gmint.reference.models import ReferenceSet, design_references, train_references
from gmint.reference.signals import ReferenceExtraction, extract_references, load_signals

__all__ = ["ATTACKS", "Comparison", "NotApplicable", "ReferenceExtraction", "ReferenceSet", "Task", "compare_attacks",
           "design_references", "extract_references", "load_signals", "train_references"]
