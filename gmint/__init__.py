"""gmint: Membership Inference Test from per-sample Weight Modifiers."""

__version__ = "0.1.0"
