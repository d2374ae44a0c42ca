"""A model description: everything needed to run an audited model as it was trained.

A model trained elsewhere arrives as weights; gmint must also know the code that builds it (a zoo name,
`package.module:factory` or `path/to/file.py:factory`, with its arguments), which part of its output holds
the logits, how its images were prepared, and its classes. Each is stated once, checked against the
weights when the model is imported, and recorded in the checkpoint's meta (the same keys a zoo checkpoint
carries), so every verb, store and report runs the model exactly as described and never with a guessed
default.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.models.zoo import ARCHITECTURES, build

# The output forms a model may return and how the logits are read from each: a tensor as it is, the
# `index:N`-th element of a tuple or list, the `key:NAME` entry of a dict (or attribute of a dataclass or
# Hugging Face `ModelOutput`).
TENSOR = "tensor"


@dataclass(frozen=True)
class ModelDescription:
    """How to build, feed and read an audited model.

    Attributes:
        arch: a zoo architecture, `package.module:factory` (imported with the working directory on the
            path) or `path/to/file.py:factory` (recorded as an absolute path).
        arch_args: keyword arguments of the factory.
        transform: the preprocessing the model was trained with.
        input_channels: channels the model takes (None: not recorded, in metas older than descriptions).
        input_size: side of the square images the model takes (None: any).
        output: where the logits are: `tensor`, `index:N` or `key:NAME` (see `read_output`).
        classes: class names, index = label; None where only their number is known.
        num_classes: outputs of the model (1 for a single logit; None: not recorded).
        arch_sha256: hash of the source file `arch` is defined in, where it is the user's code: a changed
            file may compute another function with the same weights.
    """

    arch: str
    arch_args: dict[str, Any]
    transform: Transform
    input_channels: int | None
    input_size: int | None
    num_classes: int | None
    output: str = TENSOR
    classes: tuple[str, ...] | None = None
    arch_sha256: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        parse_output(self.output)
        if self.classes is not None and self.num_classes is not None:
            if len(self.classes) != self.num_classes and not (self.num_classes == 1 and len(self.classes) == 2):
                raise InputError(f"{len(self.classes)} class names for a model with {self.num_classes} outputs")
            duplicated = sorted({c for c in self.classes if self.classes.count(c) > 1})
            if duplicated:
                raise InputError(f"class names must differ; repeated: {', '.join(duplicated[:5])}")

    def to_meta(self) -> dict[str, object]:
        """The checkpoint meta keys this description is recorded under (those of a zoo checkpoint, plus the
        output form and the input shape)."""
        return {"arch": self.arch, "arch_args": dict(self.arch_args), "arch_sha256": self.arch_sha256,
                "transform": self.transform.to_dict(), "output": self.output,
                "input": {"channels": self.input_channels, "size": self.input_size},
                "num_classes": self.num_classes, "classes": list(self.classes) if self.classes is not None else None}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ModelDescription | None:
        """The description a checkpoint's meta records (an imported model's, or a zoo model's, whose input
        shape is in its arguments); None where the meta records no preprocessing (a plain state dict)."""
        if not isinstance(meta.get("transform"), Mapping) or "arch" not in meta:
            return None
        args = dict(meta.get("arch_args") or {})
        shape = meta.get("input") or {"channels": args.get("in_channels"), "size": args.get("image_size")}
        classes, count = meta.get("classes"), meta.get("num_classes")
        return cls(arch=str(meta["arch"]), arch_args=args, transform=Transform.from_dict(meta["transform"]),
                   input_channels=whole(shape.get("channels")), input_size=whole(shape.get("size")),
                   num_classes=whole(count), output=str(meta.get("output", TENSOR)),
                   classes=tuple(map(str, classes)) if isinstance(classes, list) else None,
                   arch_sha256=meta.get("arch_sha256"))


def whole(value: object) -> int | None:
    """`value` as a whole number where a JSON number records one (a bool is not one); None otherwise."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_output(output: str) -> tuple[str, str | int]:
    """(`tensor`|`index`|`key`, what) of an output selector.

    Raises:
        InputError: anything else.
    """
    kind, _, what = output.partition(":")
    if kind == TENSOR and not what:
        return kind, ""
    if kind == "index" and what.isdigit():
        return kind, int(what)
    if kind == "key" and what:
        return kind, what
    raise InputError(f"output selector '{output}' is not 'tensor', 'index:N' or 'key:NAME'")


def read_output(output: object, selector: str) -> torch.Tensor:
    """The logits in a model's output, as `selector` locates them.

    Raises:
        InputError: the output has another form, or no such element.
    """
    kind, what = parse_output(selector)
    found: object = output
    if kind == "index":
        if not isinstance(output, tuple | list) or not isinstance(what, int) or what >= len(output):
            raise InputError(f"the model returned {_form(output)}, which has no element {what}")
        found = output[what]
    elif kind == "key":
        if isinstance(output, Mapping):
            if what not in output:
                raise InputError(f"the model returned a mapping without '{what}' (its keys: "
                                 f"{', '.join(map(str, output))})")
            found = output[what]
        elif hasattr(output, str(what)):
            found = getattr(output, str(what))
        else:
            raise InputError(f"the model returned {_form(output)}, which has no '{what}'")
    if not isinstance(found, torch.Tensor):
        raise InputError(f"the model's output{'' if kind == TENSOR else f' {selector}'} is {_form(found)}, not a "
                         "tensor of logits; name the element holding the logits")
    return found


def find_output(output: object, key: str | None = None) -> str:
    """The selector of the logits in one output: the tensor itself, `logits` of a mapping or dataclass
    (Hugging Face's `ModelOutput` is both), or a tuple's first element; `key` (a name, or a whole number for
    a position) chooses where the form alone does not tell.

    Raises:
        InputError: no tensor where the selector points.
    """
    if key is not None:
        selector = f"index:{key}" if key.isdigit() and isinstance(output, tuple | list) else f"key:{key}"
    elif isinstance(output, torch.Tensor):
        selector = TENSOR
    elif isinstance(output, Mapping) or is_dataclass(output) or hasattr(output, "logits"):
        selector = "key:logits"
    elif isinstance(output, tuple | list):
        selector = "index:0"
    else:
        raise InputError(f"the model returned {_form(output)}; gmint reads a tensor of logits, a tuple's first "
                         "element or a mapping's 'logits'")
    read_output(output, selector)
    return selector


def _form(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


_SELECTED: dict[tuple[type, str], type] = {}


def select_output(module: nn.Module, selector: str) -> nn.Module:
    """`module`, now returning only its logits: its class becomes a subclass whose forward reads them.

    Subclassing (rather than wrapping) keeps every parameter name, hook and buffer as the model's own, so
    layer names, state dicts and fingerprints are those of the model as trained.

    Raises:
        InputError: a TorchScript module that does not return a tensor (its forward cannot be overridden).
    """
    if selector == TENSOR:
        return module
    if isinstance(module, torch.jit.ScriptModule):
        raise InputError(f"a TorchScript model must return its logits as a tensor, this one needs '{selector}'; "
                         "script a forward that returns them, or import the weights with the module's code")
    cls = type(module)
    key = (cls, selector)
    if key not in _SELECTED:
        def forward(self: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
            return read_output(cls.forward(self, *args, **kwargs), selector)

        _SELECTED[key] = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                     "__qualname__": cls.__qualname__})
    module.__class__ = _SELECTED[key]
    return module


def build_architecture(arch: str, args: Mapping[str, Any], *, sha256: str | None = None) -> nn.Module:
    """The module `arch` builds with `args`: a zoo architecture, or a factory in the user's code.

    Args:
        arch: a zoo name, `package.module:factory` or `path/to/file.py:factory`.
        args: keyword arguments of the factory.
        sha256: the recorded hash of the factory's source file; a file that changed since is refused.

    Raises:
        InputError: a name that does not import, a factory that is not callable or refuses the arguments,
            a source file that changed, or a result that is not an nn.Module.
    """
    if ":" not in arch:
        if arch not in ARCHITECTURES:
            raise InputError(f"unknown architecture '{arch}': give a zoo name ({', '.join(ARCHITECTURES.names())}), "
                             "package.module:factory or path/to/file.py:factory")
        return build(arch, **args)
    factory, source = import_factory(arch)
    if sha256 is not None and source is not None and file_sha256(source) != sha256:
        raise InputError(f"{source}, which defines {arch}, changed since the model was described (its sha256 is "
                         "no longer the recorded one); describe the model again with the code as it is now")
    try:
        inspect.signature(factory).bind(**args)
    except TypeError as exc:
        given = f"with {', '.join(args)}" if args else "without arguments"
        raise InputError(f"{arch} cannot be called {given} ({exc}); give its arguments as a JSON object") from None
    except ValueError:
        pass  # no signature to check (some builtins): calling it is the check
    try:
        model = factory(**args)
    except Exception as exc:  # the user's code: whatever it raises is one line, not a traceback
        raise InputError(f"{arch}(**{dict(args)}) failed ({type(exc).__name__}: {str(exc).strip()[:200]})") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{arch} returned {type(model).__name__}, not an nn.Module")
    return model


def import_factory(arch: str) -> tuple[Callable[..., Any], Path | None]:
    """The callable `arch` names and the source file it lives in (None for installed packages' files).

    `package.module:factory` is imported as `python -m` would, with the working directory first on the path;
    `path/to/file.py:factory` is loaded from that file.
    """
    where, _, attr = arch.rpartition(":")
    if not where or not attr:
        raise InputError(f"architecture must look like package.module:factory or path/to/file.py:factory, "
                         f"got '{arch}'")
    module = _load_file(Path(where)) if where.endswith(".py") else _import(where)
    factory = getattr(module, attr, None)
    if factory is None:
        raise InputError(f"cannot import {arch}: {where} has no '{attr}'")
    if not callable(factory):
        raise InputError(f"{arch} is a {type(factory).__name__}, not a function or class building the model")
    source = getattr(module, "__file__", None)
    return factory, _user_file(Path(source)) if source else None


def _import(name: str) -> ModuleType:
    with working_directory_on_path():
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise InputError(f"cannot import {name} ({exc}); run from the folder that holds it, or give "
                             "path/to/file.py:factory") from None
        except Exception as exc:  # the user's module failed while importing
            raise InputError(f"importing {name} failed ({type(exc).__name__}: {exc})") from None


def _load_file(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise InputError(f"architecture file {path} not found")
    name = f"gmint_user_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its classes pickle and its dataclasses resolve by this name
    with working_directory_on_path():
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise InputError(f"loading {path} failed ({type(exc).__name__}: {exc})") from None
    return module


@contextmanager
def working_directory_on_path() -> Iterator[None]:
    """The working directory first on sys.path while the user's code imports (as `python -m` puts it): a module
    beside the working directory, or the classes a trusted pickle names."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _user_file(path: Path) -> Path | None:
    """`path` where it is the user's own code; None inside installed packages and gmint (versioned there)."""
    path = path.resolve()
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return None
    if Path(__file__).resolve().parents[1] in path.parents:
        return None
    return path


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def canonical_arch(arch: str) -> str:
    """`arch` as recorded, so that it builds the same module from any working directory: a file path made
    absolute, and a top-level module of the user's own (`mymodels:build` beside the working directory)
    recorded as its file. Modules of packages keep their import name (their relative imports need it)."""
    where, sep, attr = arch.rpartition(":")
    if not sep:
        return arch
    if where.endswith(".py"):
        return f"{Path(where).expanduser().resolve()}:{attr}"
    _, source = import_factory(arch)
    if "." not in where and source is not None and source.name != "__init__.py":
        return f"{source}:{attr}"
    return arch


def describe(module: nn.Module, *, arch: str, arch_args: Mapping[str, Any], transform: Transform,
             classes: Sequence[str] | None = None, output_key: str | None = None,
             input_channels: int | None = None) -> tuple[ModelDescription, nn.Module]:
    """Check a description against its module by running one input through it, and complete it.

    The input shape is the transform's output (its side, and `input_channels` or the first convolution's);
    the output form is found (or `output_key` followed) and must give (1, K) logits, K agreeing with the
    class names.

    Returns:
        The description, and `module` reading its logits (see `select_output`).

    Raises:
        InputError: an input the model refuses, an output without logits, or classes that do not fit.
    """
    if transform.side is None:
        raise InputError("preprocessing: the image size the model was trained on must be given")
    channels = input_channels or transform.channels or _first_conv_channels(module)
    if channels is None:
        raise InputError("the model's input channels cannot be read from its weights; give them (1 or 3)")
    if transform.channels is not None and transform.channels != channels:
        raise InputError(f"preprocessing brings images to {transform.channels} channels, the model takes {channels}")
    example = torch.zeros(1, channels, transform.side, transform.side)
    module.eval()
    try:
        with torch.no_grad():
            raw = module(example)
    except Exception as exc:  # the user's model: whatever it raises on the declared input is one line
        raise InputError(f"the model fails on a {channels}x{transform.side}x{transform.side} image as described "
                         f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})") from None
    selector = find_output(raw, output_key)
    logits = read_output(raw, selector)
    if logits.dim() != 2 or logits.shape[0] != 1:
        raise InputError(f"the model's logits have shape {tuple(logits.shape)} for one image; expected (1, classes)")
    sha = None
    if ":" in arch:
        _, source = import_factory(arch)
        sha = file_sha256(source) if source is not None else None
    description = ModelDescription(arch=arch, arch_args=dict(arch_args), transform=transform,
                                   input_channels=channels, input_size=transform.side,
                                   num_classes=int(logits.shape[1]), output=selector,
                                   classes=tuple(classes) if classes is not None else None, arch_sha256=sha)
    return description, select_output(module, selector)


def _first_conv_channels(module: nn.Module) -> int | None:
    """In-channels of the first image convolution, from its (out, in, kh, kw) weight: read from parameters,
    not module types, so a TorchScript module's convolutions count too."""
    for name, p in module.named_parameters():
        if name.endswith("weight") and p.dim() == 4:
            return int(p.shape[1])
    return None
