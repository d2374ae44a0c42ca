"""Loading and saving audited models safely, and fingerprinting them for provenance.

A gmint checkpoint is a dict of tensors plus one JSON string (`meta`), so it loads with
`torch.load(weights_only=True)`: opening a checkpoint never executes code from it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gmint.errors import InputError, UnsupportedModelError
from gmint.models.zoo import build


@dataclass
class AuditedModel:
    """An audited model in eval mode with what is known about it (architecture, data, split, training)."""

    module: nn.Module
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.module)


def fingerprint(model: nn.Module) -> str:
    """sha256 over parameter and buffer names, shapes and bytes: changes whenever the weights do."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, object],
                    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """Write state dict + JSON meta atomically (temp file, then rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": model.state_dict(), "meta": json.dumps(meta), **(extra_tensors or {})}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path) -> dict[str, object]:
    """The raw checkpoint dict, loaded with weights_only=True."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"model checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise InputError(f"{path} holds pickled Python objects (e.g. a whole module), which can run "
                             "arbitrary code when loaded; pass --trust-pickle only if you trust its source"
                             ) from None
        raise InputError(f"{path} is not a readable checkpoint ({exc})") from None
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise InputError(f"{path} is not a gmint checkpoint or state dict ({type(exc).__name__}); "
                         "for a TorchScript file pass --torchscript") from None


def load_audited(path: Path, *, arch: str | None = None, torchscript: bool = False,
                 trust_pickle: bool = False) -> AuditedModel:
    """Load an audited model, in eval mode.

    Args:
        path: a gmint checkpoint, a plain state dict (with `arch`), a TorchScript file
            (`torchscript=True`) or — only with `trust_pickle=True` — a pickled full module.
        arch: `package.module:factory` building the module for a plain state dict.

    Raises:
        InputError / UnsupportedModelError: missing file, unknown format, keys that do not match.
    """
    path = Path(path)
    if torchscript:
        if not path.exists():
            raise InputError(f"model file {path} not found")
        return AuditedModel(torch.jit.load(str(path), map_location="cpu").eval(), {"format": "torchscript"})
    if trust_pickle:
        module = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(module, nn.Module):
            raise InputError(f"{path} does not hold a pickled nn.Module")
        return AuditedModel(module.eval(), {"format": "pickled-module"})
    payload = read_checkpoint(path)
    if "meta" in payload and "state_dict" in payload:
        meta = json.loads(payload["meta"])  # type: ignore[arg-type]
        module = _from_arch(arch) if arch else build(meta["arch"], **meta["arch_args"])  # type: ignore[arg-type]
        _load_state(module, payload["state_dict"], path)  # type: ignore[arg-type]
        return AuditedModel(module.eval(), meta)
    if arch is None:
        raise InputError(f"{path} is a plain state dict; pass --arch package.module:factory to build the model")
    module = _from_arch(arch)
    _load_state(module, payload, path)
    return AuditedModel(module.eval(), {"format": "state-dict", "arch": arch})


def _from_arch(arch: str) -> nn.Module:
    module_name, _, attr = arch.partition(":")
    if not attr:
        raise InputError(f"--arch must look like package.module:factory, got '{arch}'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import {arch} ({exc})") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise InputError(f"{arch}() returned {type(model).__name__}, not an nn.Module")
    return model


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
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

