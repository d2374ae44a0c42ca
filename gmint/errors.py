"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

# The remedy for a model that records no preprocessing, in the library's terms; the CLI puts its own command
# in this phrase's place.
DESCRIBE_HINT = "import it once with its description (architecture, preprocessing, classes)"
# What to do where no data root is given; the CLI names its option in this phrase's place.
ROOT_HINT = "give the data root (the folder holding the datasets) or set GMINT_DATA"


class GmintError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in gmint."""


class InputError(GmintError):
    """Bad argument, file or data (missing path, wrong layout, label out of range, empty split)."""


class UnknownNameError(InputError):
    """A name not found in a registry (reduction, engine, dataset, architecture, layer)."""


class UnsupportedModelError(GmintError):
    """The audited model cannot be audited as given (train mode, unsupported layer, bad checkpoint)."""


class StoreMismatchError(GmintError):
    """A feature store does not match what the caller expects (other model, layers or reduction)."""


class IncompleteStoreError(GmintError):
    """A feature store whose extraction did not finish; it can be continued with --resume."""


class StoreBusyError(GmintError):
    """Another process is writing the store (one writer per store)."""
