"""Loading and saving audited models safely, and fingerprinting them for provenance.

A gmint checkpoint is a dict of tensors plus one JSON string (`meta`), so it loads with
`torch.load(weights_only=True)`: opening a checkpoint never executes code from it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy, UnsupportedModelError
from gmint.files import atomic_write
from gmint.models.description import ModelDescription, build_architecture, select_output, working_directory_on_path
from gmint.models.record import CheckpointRecord

# Where a TorchScript file imported with its description keeps it (an extra file of the archive).
SCRIPT_META = "gmint/meta.json"


@dataclass
class AuditedModel:
    """An audited model in eval mode with what is known about it (architecture, data, split, training).

    Attributes:
        module: the model.
        meta: its checkpoint's meta as written, which saving the model again writes unchanged.
        record: what the meta records, read once (every reader goes through it, never through `meta`).
    """

    module: nn.Module
    meta: dict[str, object] = field(default_factory=dict)
    record: CheckpointRecord = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.record = CheckpointRecord.read(self.meta)

    @property
    def description(self) -> ModelDescription | None:
        """How the model is built, fed and read, as its checkpoint records it; None for a model that records
        no preprocessing (a plain state dict, a TorchScript file or a pickle loaded as it is)."""
        return self.record.description

    @property
    def transform(self) -> Transform:
        """The preprocessing the model was trained with.

        Raises:
            InputError: the model records none; feeding it inputs prepared another way would audit a model
                that never saw them, so nothing is assumed.
        """
        description = self.description
        if description is None:
            raise InputError("the audited model records no preprocessing (image size, mean, std), and auditing "
                             "it with guessed inputs would measure the wrong thing", Remedy.DESCRIBE_MODEL)
        return description.transform

    def check_classes(self, classes: Sequence[str]) -> None:
        """Refuse data whose class names are not the model's, in the model's order: its labels would name other
        classes than the model's outputs, and every loss and Weight Modifier would be of a wrong label.

        Raises:
            InputError: the names or their order differ (the data is to be relabelled by class name first).
        """
        description = self.description
        if description is None or description.classes is None or tuple(classes) == description.classes:
            return
        raise InputError(f"the data's classes ({_listed(classes)}) are not the audited model's "
                         f"({_listed(description.classes)}) in its order; relabel the data by class name first")

    @property
    def fingerprint(self) -> str:
        """The module's `fingerprint`: what stores and classifiers record to tell audited models apart."""
        return fingerprint(self.module)


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:6]) + (", …" if len(names) > 6 else "")


def fingerprint(model: nn.Module) -> str:
    """sha256 over parameter and buffer names, shapes and bytes: changes whenever the weights do."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, object],
                    extra: Mapping[str, object] | None = None) -> None:
    """Write state dict + JSON meta whole or not at all (`atomic_write`), so a crash never leaves half a file.

    Args:
        path: the checkpoint file; its folder is created.
        model: whose state dict is saved.
        meta: what is known about the model, stored as one JSON string.
        extra: more entries beside `state_dict` and `meta` (a training run's optimiser and scheduler state);
            tensors, numbers, strings and containers of them, so the file still loads with weights_only=True.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": model.state_dict(), "meta": json.dumps(meta), **(extra or {})}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What a file that did not load is, in words (see `file_kind`).
FILE_KINDS = {
    "torch": "a torch.save archive (a checkpoint, a state dict or a pickled module)",
    "pickle": "a pickle (torch.save's legacy format)",
    "torchscript": "a TorchScript archive",
    "hdf5": "an HDF5 file (a gmint feature store?), not a model",
    "zip": "a zip archive that torch did not write",
    "damaged": "a damaged or truncated zip archive",
    "empty": "an empty file",
    "unknown": "of an unknown format (neither a torch archive nor a pickle)",
}


def file_kind(path: Path) -> str:
    """What a model file is, from its bytes and without unpickling anything: a key of FILE_KINDS. Messages
    must say what a file is: calling random bytes or a feature store "pickled objects" would push the user
    towards --trust-pickle, i.e. towards running code from it."""
    with Path(path).open("rb") as fh:
        head = fh.read(8)
    if not head:
        return "empty"
    if head == HDF5_SIGNATURE:
        return "hdf5"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "damaged"
        if any(name.split("/")[1:2] == ["code"] for name in names):
            return "torchscript"
        return "torch" if any(name.endswith("/data.pkl") for name in names) else "zip"
    return "pickle" if head[0] == 0x80 and 2 <= head[1] <= 5 else "unknown"  # PROTO opcode, protocol 2-5


def what_file(path: Path) -> str:
    """What a file is, in words, for a message refusing it: its kind (FILE_KINDS), or for a torch archive
    what its meta says it is (a checkpoint, a MINT classifier, an aMINT head)."""
    kind = file_kind(path)
    if kind in ("torch", "pickle"):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return "a torch archive of pickled objects, or a damaged one"
        if isinstance(payload, dict):
            other = _other_gmint_file(payload)
            if other:
                return other
            if "meta" in payload and "state_dict" in payload:
                return "an audited model's checkpoint"
            return "a state dict or another torch archive"
    return FILE_KINDS[kind]


def _model_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} {'is a folder' if path.is_dir() else 'not found'}")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The raw checkpoint dict, loaded with weights_only=True; its entries are the caller's to check.

    Args:
        path: a gmint checkpoint or a plain state dict (a TorchScript archive or a pickled module is refused,
            naming how load_audited would read it: a caller that cannot read it so says otherwise).
    """
    path = _model_file(path)
    kind = file_kind(path)
    if kind == "torchscript":
        raise InputError(f"{path} is a TorchScript archive, not a checkpoint", Remedy.TORCHSCRIPT)
    if kind not in ("torch", "pickle"):
        raise InputError(f"{path} is not a gmint checkpoint or state dict: it is {FILE_KINDS[kind]}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise InputError(f"{path} holds pickled Python objects (e.g. a whole module), which can run arbitrary "
                             "code when loaded", Remedy.TRUST_PICKLE) from None
        raise InputError(f"{path} is a damaged checkpoint ({exc})") from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise InputError(f"{path} is a damaged checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None


def load_audited(path: Path, *, arch: str | None = None, arch_args: Mapping[str, Any] | None = None,
                 torchscript: bool = False, trust_pickle: bool = False) -> AuditedModel:
    """Load an audited model, in eval mode, reading its logits as its description says.

    Args:
        path: a gmint checkpoint (trained by gmint, or a model from outside imported with its description), a
            plain state dict (with `arch`), a TorchScript file (`torchscript=True`) or — only with
            `trust_pickle=True` — a pickled full module. Only a checkpoint (or a TorchScript file imported
            with its description) records the preprocessing an audit needs.
        arch: a zoo name, `package.module:factory` or `path/to/file.py:factory` building the module for a
            plain state dict (or, for a checkpoint, instead of the architecture it records).
        arch_args: the factory's keyword arguments (default: those the checkpoint records, else none).
        torchscript: load `path` as TorchScript, which runs code from the file.
        trust_pickle: load `path` as a pickled module, which runs code from the file.

    Raises:
        InputError / UnsupportedModelError: missing file, unknown format, keys that do not match.
    """
    path = _model_file(path)
    if torchscript:
        extra = {SCRIPT_META: ""}
        module = _unsafe_load(path, ("torchscript",), "a TorchScript archive",
                              lambda: torch.jit.load(str(path), map_location="cpu", _extra_files=extra))
        meta = json.loads(extra[SCRIPT_META]) if extra[SCRIPT_META] else {"format": "torchscript"}
        return AuditedModel(select_output(refuse_nonfinite(module.eval(), path), CheckpointRecord.read(meta).output),
                            meta)
    if trust_pickle:
        with working_directory_on_path():
            module = _unsafe_load(path, ("torch", "pickle"), "a pickled module",
                                  lambda: torch.load(path, map_location="cpu", weights_only=False))
        if not isinstance(module, nn.Module):
            raise InputError(f"{path} holds a {type(module).__name__}, not a pickled nn.Module",
                             Remedy.NOT_A_PICKLE if isinstance(module, dict) else None)
        return AuditedModel(refuse_nonfinite(module.eval(), path), {"format": "pickled-module"})
    payload = read_checkpoint(path)
    other = _other_gmint_file(payload)
    if other:
        raise InputError(f"{path} is {other}, not an audited model")
    if "meta" in payload and "state_dict" in payload:
        meta = json.loads(payload["meta"])
        record = CheckpointRecord.read(meta)
        refuse_unfinished(path, record)
        recorded = arch or record.arch
        if recorded is None:
            raise InputError(f"{path} records no architecture; give the one that builds the model")
        module = build_architecture(recorded, record.arch_args if arch_args is None else arch_args,
                                    sha256=None if arch else record.arch_sha256)
        load_state(module, payload["state_dict"], path)
        return AuditedModel(select_output(refuse_nonfinite(module.eval(), path), record.output), meta)
    if arch is None:
        raise InputError(f"{path} is a plain state dict", Remedy.ARCHITECTURE)
    module = build_architecture(arch, arch_args or {})
    load_state(module, payload, path)
    return AuditedModel(refuse_nonfinite(module.eval(), path),
                        {"format": "state-dict", "arch": arch, "arch_args": dict(arch_args or {})})


def refuse_nonfinite(module: nn.Module, path: Path) -> nn.Module:
    """`module`, unless a weight or buffer holds NaN or Inf: every loss, Weight Modifier and score of such a
    model is NaN or meaningless (a training run that diverged, a damaged file).

    Raises:
        InputError: naming up to three of the tensors.
    """
    bad = [name for name, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise InputError(f"{path} holds non-finite weights ({', '.join(bad[:3])}{', …' if len(bad) > 3 else ''}); "
                         "a model with NaN or Inf weights cannot be audited")
    return module


# What other gmint files are, by what their payload holds: loading one as a model must say what it is.
_OTHER_FILES = {"gmint-mint/1": "a MINT classifier", "gmint-amint-head/1": "an aMINT head"}


def _other_gmint_file(payload: Mapping[str, Any]) -> str | None:
    """What a gmint file that is not an audited model is, in words; None for a checkpoint or a state dict."""
    if not isinstance(payload.get("meta"), str):
        return None
    try:
        meta = json.loads(payload["meta"])
    except json.JSONDecodeError:
        return None
    found = meta.get("format") if isinstance(meta, dict) else None
    return _OTHER_FILES.get(found) if isinstance(found, str) else None


def refuse_unfinished(path: Path, record: CheckpointRecord) -> None:
    """Refuse a training checkpoint whose run stopped before its end: its weights are an accident of when it was
    killed.

    Raises:
        InputError: the checkpoint records training progress but the run did not finish.
    """
    if record.unfinished:
        cap = (record.train_config or {}).get("epochs", "?")
        raise InputError(f"{path} is an unfinished training run (it stopped after epoch {record.epochs_done} of "
                         f"{cap})", Remedy.RESUME_TRAINING)


def _unsafe_load(path: Path, kinds: tuple[str, ...], wanted: str, load: Callable[[], Any]) -> Any:
    """Run a loader that executes code from the file (TorchScript, pickle) only on a file of one of `kinds`;
    whatever goes wrong inside is one line, not a traceback."""
    found = file_kind(path)
    if found not in kinds:
        raise InputError(f"{path} is not {wanted}: it is {FILE_KINDS[found]}")
    try:
        return load()
    except Exception as exc:  # damaged archives, classes that no longer import, errors in pickled code
        raise InputError(f"{path} could not be loaded ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n")[0]


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load `state` into `module`, every key and shape matching (one line naming what differs, else)."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when strict=False
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise UnsupportedModelError(f"{path} does not match the architecture: {first}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {result.missing_keys[:3]}{'…' if len(result.missing_keys) > 3 else ''}")
    if result.unexpected_keys:
        problems.append(f"unexpected {result.unexpected_keys[:3]}"
                        f"{'…' if len(result.unexpected_keys) > 3 else ''}")
    if problems:
        raise UnsupportedModelError(f"{path} does not match the architecture: {'; '.join(problems)}")

