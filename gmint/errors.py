"""Errors a user can cause. The CLI prints their message as one line and exits non-zero.

An error may carry a `Remedy`: what the user can do about it, said in the library's own terms (its arguments,
not a front end's). `str(error)` reads "message; remedy". A front end that knows how the user carries a remedy
out (the CLI: which of its options) says that instead, from one table keyed by `Remedy`, so no library message
ever names an option the caller may not have.
"""

from __future__ import annotations

import enum


class Remedy(enum.Enum):
    """What the user can do about an error; the value is the phrase in the library's terms (argument names in
    parentheses, so a reader of the library knows what to pass). A phrase that begins with "or" is the other way
    out beside advice the message itself gives ("put each under <folder>/<class name>/; or label them ...")."""

    RESUME_OR_OVERWRITE = "replace it (overwrite) or continue it (resume)"
    OVERWRITE = "replace it (overwrite)"
    REBUILD_STORE = "remove it, or extract it again with overwrite"
    ANOTHER_STORE_OR_REBUILD = "extract into another file, or remove it, or extract it again with overwrite"
    RESUME_EXTRACTION = "finish its extraction (resume)"
    RESUME_TRAINING = "finish its training (resume) before auditing it"
    DESCRIBE_MODEL = "import it once with its description (architecture, preprocessing, classes)"
    DATA_ROOT = "give the data root (the folder holding the datasets) or set GMINT_DATA"
    RESIZE = "give a size N to resize every image to NxN"
    TORCHSCRIPT = "load it as TorchScript (torchscript)"
    TRUST_PICKLE = "load it as a pickled module (trust_pickle) only if you trust its source"
    NOT_A_PICKLE = "load it as a checkpoint (without trust_pickle)"
    ARCHITECTURE = "give the architecture that builds the model (arch: package.module:factory)"
    NAIVE_ENGINE = ("extract with the naive engine (or build the model from its Python code instead of loading "
                    "TorchScript)")
    OWN_SPLIT = ("use the model's own split, or declare the model trained outside gmint (trained_outside) if it "
                 "was trained outside gmint on this split")
    PAPER_PROTOCOL = "or use the paper protocol"
    CONTROL_ROWS = "draw a split with control rows"
    PREDICTED_LABELS = "or label them with the audited model's predictions (labels: predicted)"
    TO_GREY = "convert them explicitly (to_grey: luma) if that is what it was trained on"
    SUBSET = "audit a subset of them"
    LIST_LAYERS = "list the model's weight layers (weight_layers)"
    LIST_MODULES = "list the model's modules (module_presets)"
    TRAIN_REFERENCES = "train a reference set into it"
    EXTRACT_REFERENCES = "extract the reference set's stores (extract_references)"
    MERGE_SHARDS = "merge the shards' records into the set (merge_references)"


class GmintError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in gmint.

    Attributes:
        message: what is wrong, without the remedy.
        remedy: what the user can do about it (None where nothing but other input would help).
    """

    def __init__(self, message: str, remedy: Remedy | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return self.message if self.remedy is None else f"{self.message}; {self.remedy.value}"


class InputError(GmintError):
    """Bad argument, file or data (missing path, wrong layout, label out of range, empty split)."""


class UnknownNameError(InputError):
    """A name not found in a registry (reduction, engine, dataset, architecture, layer)."""


class UnsupportedModelError(GmintError):
    """The audited model cannot be audited as given (train mode, unsupported layer, bad checkpoint)."""


class StoreMismatchError(GmintError):
    """A feature store does not match what the caller expects (other model, layers or reduction)."""


class IncompleteStoreError(GmintError):
    """A feature store whose extraction did not finish; it can be resumed."""


class StoreBusyError(GmintError):
    """Another process is writing the store (one writer per store)."""
