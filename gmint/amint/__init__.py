"""Active MINT (aMINT): an audited model trained together with a MINT head that reads its activations.

`train_amint` trains both (`taps` says where the head reads, `head` what it is); `evaluate_amint` reports the
head on held-out members and on the members it saw, beside passive gMINT and the loss threshold on the same
model; `audit_with_head` scores new samples with the set-level verdict.
"""

from gmint.amint.evaluate import AmintReport, evaluate_amint, write_report
from gmint.amint.head import HeadSpec, MintHead, TrainedHead
from gmint.amint.score import audit_with_head
from gmint.amint.taps import TAP_PRESETS, TapCollector, resolve_taps, tap_shapes
from gmint.amint.train import AmintConfig, AmintModel, train_amint

__all__ = ["TAP_PRESETS", "AmintConfig", "AmintModel", "AmintReport", "HeadSpec", "MintHead", "TapCollector",
           "TrainedHead", "audit_with_head", "evaluate_amint", "resolve_taps", "tap_shapes", "train_amint",
           "write_report"]
