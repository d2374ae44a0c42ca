"""What a feature store file holds: its layout, the meaning of its integer codes, and how provenance values
are written as HDF5 attributes.

Layout:
    /features/<parameter name>   (N, d) float32, chunked, gzip — one dataset per selected layer
    /membership (N,) int8        1 member, 0 external, -1 unknown (samples being scored)
    /role       (N,) int8        0 auditor's pool (may fit a MINT classifier), 1 held out, -1 n/a
                                 (both spell their codes out in a `codes` attribute)
    /label      (N,) int64       true class; /sample_id (N,) int64 row of the dataset
    /loss       (N,) float32     the audited model's loss; /pred (N,) int64 its predicted class
    /finite     (N,) bool        every feature and the loss are finite (NaN/Inf rows are kept, flagged,
                                 and left out of training and evaluation with a warning)
    /done       (N,) bool        row written and flushed (resume skips these)
    /seconds    (1,) float64     wall seconds spent writing, over every run that worked on the store
    attrs: provenance (one attribute per key, JSON for lists/dicts), complete (and, once complete,
           rows_written and timing)

Files use the HDF5 1.10 format (the oldest that SWMR accepts, and no newer), so HDF5 1.10 tools
(h5dump, h5ls) and PyTables read them.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

FORMAT = "gmint-feature-store/3"  # /2: per-row `finite` flags; /3: per-row `group` ids
# /2 stores lack only /group, which reads as -1 (no group): they are read as they are, not extracted again.
READABLE_FORMATS = ("gmint-feature-store/2", FORMAT)
ROW_COLUMNS = {"membership": np.int8, "role": np.int8, "label": np.int64, "sample_id": np.int64, "group": np.int64}
COMPUTED_COLUMNS = {"loss": np.float32, "pred": np.int64, "finite": bool}
# Provenance keys that must agree for a resumed extraction to continue the same store.
SPEC_KEYS = ("model_fingerprint", "layers", "source", "reduction", "engine", "loss_function", "dataset",
             "split_sha256", "transform", "seed", "n_rows", "rows_sha256")
CHUNK_BYTES = 1 << 20
# What the integer codes of the per-row columns mean, written beside them for readers without gmint.
CODES = {"membership": {1: "member", 0: "external", -1: "unknown"},
         "role": {0: "auditor's pool", 1: "holdout", -1: "n/a"},
         "group": {-1: "none (other values: the dataset's group, e.g. a GTSRB track)"}}
# Library-version bounds for every file written: SWMR needs the 1.10 superblock; anything newer locks out
# HDF5 1.10 tools and PyTables.
LIBVER = ("v110", "v110")


def describe_codes(h5: h5py.File) -> None:
    """Spell out the integer codes of /membership, /role and /group in a `codes` attribute on each."""
    for name, codes in CODES.items():
        if name in h5:  # a join of /2 shards has no /group
            h5[name].attrs["codes"] = ", ".join(f"{code} {meaning}" for code, meaning in codes.items())


def encode_attribute(value: object) -> object:
    """A provenance value as an HDF5 attribute: scalars and strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return str(value)  # np.str_ would be stored as a fixed-width array h5py cannot convert
    if isinstance(value, (int, float, bool, np.integer, np.floating, np.bool_)):
        return value
    return json.dumps(value)


def decode_attribute(value: object) -> object:
    """The inverse of `encode_attribute`."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def roundtrip(value: object) -> object:
    """The value as it reads back from HDF5 attributes (tuples become lists, etc.)."""
    return decode_attribute(encode_attribute(value))
