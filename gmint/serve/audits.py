"""Published audits: folders holding an audited model, its MINT classifier and the store it is calibrated on.

An audit folder is described by `audit.json` (format `gmint-audit/1`):

    {"format": "gmint-audit/1", "title": "Handwritten digits", "description": "...",
     "model": "audited.pt", "mint": "mint-combined.pt", "store": "audited-gradient.h5", "alpha": 0.05}

`model`, `mint` and `store` are files inside the folder, named relative to it (no absolute paths, no `..`):
the folder is the audit and can be moved whole. `alpha` is the false-positive rate the verdict is held to;
it belongs to whoever publishes the audit, not to the person checking images (choosing it after seeing a
p-value would undo its meaning). The model must be a gmint checkpoint, read weights-only: a published audit
never runs code from its files.

Everything is loaded and checked when the server starts (`find_audits`): the model, the classifier (trained on
this model's features), the store (complete, matching the classifier, with held-out external rows the
classifier was never fitted on). A bad audit is one line naming its folder, and is left out of the listing.
Every file an audit names must be a regular file: a FIFO or a device would block the server's start-up on its
first read. `audit.json` is read bounded (`MANIFEST_BYTES`, `MANIFEST_DEPTH`) before it is parsed, as Python's
parser recurses once per nesting level and a deep enough file would end the start-up with a `RecursionError`.

The store is read again for every scoring request (its held-out rows calibrate the verdict), so the server
records its identity when it loads it (`PublishedAudit.changed`): a store replaced, rewritten or removed while
the server runs is found before it is read, not trusted.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from gmint.assess.candidates import PREDICTED_LABELS, model_classes, model_input
from gmint.assess.evaluate import ModelGap
from gmint.assess.scoring import calibration_scores
from gmint.errors import GmintError, InputError, StoreMismatchError
from gmint.features.provenance import Provenance
from gmint.files import atomic_write
from gmint.mint import TrainedMint
from gmint.models.io import AuditedModel, load_audited, read_checkpoint

MANIFEST = "audit.json"
FORMAT = "gmint-audit/1"
# Audit names appear in URLs; they are looked up in the listing built at start-up, never joined into a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TITLE_LENGTH, DESCRIPTION_LENGTH = 200, 2000
# A manifest is one flat object of short fields: the longest valid one (a 2,000-character description of
# characters written as \uXXXX escapes) is about 13 KB. Anything larger, or nested deeper than an object holding
# a list, is not a manifest, and is refused before Python's recursive JSON parser sees it.
MANIFEST_BYTES = 64 * 1024
MANIFEST_DEPTH = 2
_FILES = ("model", "mint", "store")
_WHAT = {"model": "audited model", "mint": "MINT classifier", "store": "feature store"}


@dataclass(frozen=True)
class AuditManifest:
    """The contents of `audit.json`.

    Attributes:
        model: the audited model, a gmint checkpoint (`gmint audited train`), relative to the audit folder.
        mint: its MINT classifier (`gmint train`), relative to the audit folder.
        store: the feature store the classifier was trained on (`gmint extract`); its held-out external rows
            calibrate the verdict.
        title: what the page calls the audit (default: the folder's name).
        description: a few sentences for the people checking their images: what the model is, who runs it.
        alpha: the false-positive rate the verdict is calibrated to, in (0, 0.5].
    """

    model: str
    mint: str
    store: str
    title: str = ""
    description: str = ""
    alpha: float = 0.05

    def __post_init__(self) -> None:
        for key in _FILES:
            _relative_file(key, getattr(self, key))
        for key, bound in (("title", TITLE_LENGTH), ("description", DESCRIPTION_LENGTH)):
            value = getattr(self, key)
            if not isinstance(value, str) or len(value) > bound:
                raise InputError(f"'{key}' must be text of at most {bound} characters")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or not 0 < self.alpha <= 0.5:
            raise InputError(f"'alpha' must be a number in (0, 0.5], got {self.alpha!r}")

    def to_dict(self) -> dict[str, object]:
        """The JSON form, with its format tag."""
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, payload: object) -> AuditManifest:
        """Read the JSON form, refusing unknown keys (a misspelt `alpha` must not silently become 0.05).

        Raises:
            InputError: not an object, another format, a missing or unknown key, a bad value.
        """
        if not isinstance(payload, dict):
            raise InputError("must be a JSON object")
        if payload.get("format") != FORMAT:
            raise InputError(f"'format' must be \"{FORMAT}\", got {payload.get('format')!r}")
        keys = {k for k in payload if k != "format"}
        allowed = set(cls.__dataclass_fields__)
        if keys - allowed:
            raise InputError(f"unknown key(s) {sorted(keys - allowed)}; the keys are {sorted(allowed)}")
        missing = [k for k in _FILES if k not in keys]
        if missing:
            raise InputError(f"missing {', '.join(repr(k) for k in missing)}")
        return cls(**{k: payload[k] for k in keys})


def _relative_file(key: str, value: object) -> PurePosixPath:
    """A file named relative to the audit folder that cannot leave it."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"'{key}' must name a file in the audit folder, got {value!r}")
    path = PurePosixPath(value)
    if path.is_absolute() or "\\" in value or ":" in value or ".." in path.parts:
        raise InputError(f"'{key}' must be a path inside the audit folder (relative, without '..'), got {value!r}")
    return path


def read_manifest(path: Path) -> AuditManifest:
    """`audit.json` at `path`, checked.

    The file is opened without blocking and must be a regular file of at most `MANIFEST_BYTES`, nested at most
    `MANIFEST_DEPTH` deep: a FIFO would hang the reader and a deep nesting would exhaust the parser's recursion.

    Raises:
        InputError: missing, not a regular file, too large or deep, not JSON, or not a valid manifest.
    """
    path = Path(path)
    regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"{path} not found") from None
    with os.fdopen(fd, "rb") as fh:
        _check_regular(path, os.fstat(fd))  # it could have been swapped between the check and the open
        raw = fh.read(MANIFEST_BYTES + 1)
    if len(raw) > MANIFEST_BYTES:
        raise InputError(f"{path} is over {MANIFEST_BYTES:,} bytes; a manifest is a few short fields")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    if json_depth(text, MANIFEST_DEPTH) > MANIFEST_DEPTH:
        raise InputError(f"{path} is nested more than {MANIFEST_DEPTH} deep; a manifest is one flat JSON object")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    return AuditManifest.from_dict(payload)


def json_depth(text: str, stop: int | None = None) -> int:
    """How deep JSON `text` nests arrays and objects, counted without parsing (brackets inside strings do not
    count); the count stops once it passes `stop`. Malformed text gets a count too: the parser refuses it after."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if stop is not None and deepest > stop:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def regular_file(path: Path, what: str = "") -> os.stat_result:
    """`path`'s status, checked to be a regular file (following links) before anything opens it.

    Args:
        path: the file.
        what: what it is, for messages ("MINT classifier", ...).

    Raises:
        InputError: missing, or a folder, FIFO, socket or device: a FIFO would block its reader forever.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found".lstrip()) from None
    _check_regular(path, status, what)
    return status


def _check_regular(path: Path, status: os.stat_result, what: str = "") -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = ("a folder" if stat.S_ISDIR(status.st_mode) else "a FIFO" if stat.S_ISFIFO(status.st_mode)
                else "a socket" if stat.S_ISSOCK(status.st_mode) else "a device")
        raise InputError(f"{what} {path} is {kind}, not a regular file".lstrip())


def file_identity(status: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a file from its replacement: device, inode, size, modification time (ns)."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def write_manifest(folder: Path, manifest: AuditManifest) -> Path:
    """Write `folder/audit.json`, whole or not at all, after checking that its files are there.

    The files are checked (they exist in `folder`), not loaded: `load_audit` does that, as the server will.
    """
    folder = Path(folder)
    for key in _FILES:
        if not (folder / getattr(manifest, key)).is_file():
            raise InputError(f"'{key}': {folder / getattr(manifest, key)} not found")
    path = folder / MANIFEST
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True, eq=False)
class PublishedAudit:
    """One audit, loaded and checked, as the server holds it.

    Attributes:
        name: its name in URLs (the folder's name).
        manifest: its `audit.json`.
        audited: the audited model (eval mode).
        mint: its MINT classifier.
        store: the calibration store.
        classes: the model's class names; each uploaded image is labelled with one of them, or with the
            model's prediction.
        channels / side: the model's input (channels, side in pixels); None where the checkpoint does not say.
        gap: the model's own accuracy and loss on members and externals, from its training record (None when
            the checkpoint has none).
        n_calibration: the held-out external rows the verdict is calibrated on.
        store_identity: the store's `file_identity` when it was loaded; `changed` compares it with the file's.
        lock: one scoring at a time per audit: extraction engines briefly attach hooks to the shared model.
    """

    name: str
    manifest: AuditManifest
    audited: AuditedModel
    mint: TrainedMint
    store: Path
    classes: tuple[str, ...]
    channels: int | None
    side: int | None
    gap: ModelGap | None
    n_calibration: int
    store_identity: tuple[int, int, int, int]
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def title(self) -> str:
        """The manifest's title, else the audit's name."""
        return self.manifest.title or self.name

    def changed(self) -> str | None:
        """Why the store can no longer be trusted (removed, replaced, rewritten, not a regular file since the
        audit was loaded), else None. The reason names server paths: it is for the server's log, not for the
        people using the page. The classifier and model are held in memory, so only the store can change."""
        try:
            status = regular_file(self.store, "its feature store")
        except InputError as exc:
            return str(exc)
        except OSError as exc:
            return f"its feature store {self.store} cannot be read ({exc.strerror or exc})"
        if file_identity(status) != self.store_identity:
            return f"its feature store {self.store} was replaced or rewritten since the audit was loaded"
        return None

    def to_dict(self) -> dict[str, object]:
        """What the listing says about the audit (no file paths: they are the server's business)."""
        return {"name": self.name, "title": self.title, "description": self.manifest.description,
                "alpha": self.manifest.alpha, "classes": list(self.classes),
                "input": {"channels": self.channels, "side": self.side},
                "dataset": self.mint.spec.dataset, "classifier": {"kind": self.mint.kind, "setup": self.mint.spec.setup,
                                                                  "reduction": self.mint.spec.reduction},
                "gap": self.gap.to_dict() if self.gap is not None else None, "n_calibration": self.n_calibration}


def model_gap(audited: AuditedModel, store: Provenance) -> ModelGap | None:
    """The generalisation gap from a gmint checkpoint's training record, else from the check the store's
    extraction ran on the declared members and externals (a model from outside records no training); None
    without either."""
    if audited.record.training is not None:
        return ModelGap.of(audited.record.training)
    # A store from elsewhere may record its check otherwise: no gap rather than a failed start.
    return ModelGap.of(store.model_check) if store.model_check is not None else None


def load_audit(folder: Path, name: str | None = None) -> PublishedAudit:
    """Load and check the audit in `folder` (its `audit.json`, model, classifier and store).

    Args:
        folder: the audit folder.
        name: its name in URLs (default: the folder's name); must match `NAME`.

    Raises:
        InputError / StoreMismatchError / ...: one line saying what is wrong.
    """
    folder = Path(folder)
    name = folder.resolve().name if name is None else name
    if not NAME.fullmatch(name):
        raise InputError(f"'{name}' cannot name an audit in a URL: use letters, digits, '.', '_' and '-' (at most "
                         "64, starting with a letter or digit)")
    manifest = read_manifest(folder / MANIFEST)
    paths = {key: folder / getattr(manifest, key) for key in _FILES}
    status = {key: regular_file(path, _WHAT[key]) for key, path in paths.items()}  # before any is opened: a FIFO blocks
    # Weights only: TorchScript archives and pickled modules are refused (with no hint at options that would
    # run their code), and so is a plain state dict, which records no architecture, classes or input.
    if not {"meta", "state_dict"} <= set(read_checkpoint(paths["model"])):
        raise InputError(f"{paths['model']} is not a gmint checkpoint; a published audit needs one (it records "
                         "the model's architecture, classes and input)")
    audited = load_audited(paths["model"])
    mint = TrainedMint.load(paths["mint"])
    if audited.fingerprint != mint.spec.model_fingerprint:
        raise StoreMismatchError(f"{paths['mint']} was trained on features of another model, not {paths['model']}")
    calibration = calibration_scores(mint, paths["store"])
    classes = model_classes(audited)
    if not classes:
        raise InputError(f"{paths['model']} records no classes; uploads could not be labelled")
    if PREDICTED_LABELS.name in classes:  # on the page, that label asks for the model's own prediction
        raise InputError(f"class name {PREDICTED_LABELS.name!r} of {paths['model']} is the label that asks for the "
                         "model's prediction; a published audit cannot have a class so named")
    channels, side = model_input(audited)
    return PublishedAudit(name, manifest, audited, mint, paths["store"], tuple(classes), channels, side,
                          model_gap(audited, calibration.provenance), len(calibration.score),
                          store_identity=file_identity(status["store"]))


def find_audits(root: Path) -> tuple[dict[str, PublishedAudit], list[str]]:
    """Every audit under `root`: `root/audit.json` itself, or `root/<name>/audit.json` for each sub-folder.

    Returns:
        The audits that loaded, by name (sorted), and one line per audit folder that did not.

    Raises:
        InputError: `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"audit folder {root} {'is a file' if root.exists() else 'not found'}")
    # Any `audit.json`, even one that is not a regular file, marks an audit folder: it is refused in one line
    # (by `read_manifest`) rather than passed over in silence.
    folders = [root] if os.path.lexists(root / MANIFEST) else sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and os.path.lexists(p / MANIFEST))
    audits: dict[str, PublishedAudit] = {}
    problems: list[str] = []
    for folder in folders:
        try:
            audit = load_audit(folder)
        except GmintError as exc:
            problems.append(f"{folder / MANIFEST}: {exc}")
            continue
        except OSError as exc:
            problems.append(f"{folder / MANIFEST}: {exc.strerror or exc} ({exc.filename})")
            continue
        except RecursionError:  # a file of the audit (a store's or classifier's JSON record) nested too deep
            problems.append(f"{folder / MANIFEST}: one of its files is nested too deeply to be read")
            continue
        audits[audit.name] = audit
    return audits, problems
