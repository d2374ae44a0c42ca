"""What every Weight Modifier engine shares: its result type, the per-sample losses, model checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from gmint.errors import InputError, UnsupportedModelError
from gmint.features.layers import parameter_aliases
from gmint.registry import Registry


@dataclass(frozen=True)
class EngineResult:
    """Reduced Weight Modifiers of one batch, with the audited model's own view of each sample.

    Attributes:
        features: parameter name → (B, d) reduced Weight Modifier.
        loss: (B,) the sample's loss (the quantity whose gradient is the Weight Modifier).
        pred: (B,) the audited model's predicted class.
    """

    features: dict[str, Tensor]
    loss: Tensor
    pred: Tensor


# An engine: (model, layers, reduction, x, y, *, loss, chunk_size[, plan]) → EngineResult.
Engine = Callable[..., EngineResult]


class Plan(Protocol):
    """What an engine checked once on a model (and reuses for every batch)."""

    @property
    def complete(self) -> bool:
        """Whether the engine's own method covers every selected parameter (no fallback needed)."""

    @property
    def notes(self) -> dict[str, str]:
        """Parameter → why it leaves the engine's own method."""


@dataclass(frozen=True)
class EngineSpec:
    """An engine and what `auto` may ask of it, declared once, beside the engine's code.

    Attributes:
        run: the engine.
        rank: its place in the fallback chain, fastest first; None for `auto`, which chooses among the others.
        torchscript: whether it can differentiate a TorchScript model.
        prepare: what it checks once per model and layers, from an example batch (passed to `run` as `plan`).
    """

    run: Engine
    rank: int | None
    torchscript: bool = False
    prepare: Callable[[nn.Module, list[str], Tensor], Plan] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> EngineResult:
        """Run the engine (preparing its plan for this batch where it has one)."""
        return self.run(*args, **kwargs)


ENGINES: Registry[EngineSpec] = Registry("engine")


def register_engine(name: str, *, rank: int | None, torchscript: bool = False,
                    prepare: Callable[[nn.Module, list[str], Tensor], Plan] | None = None
                    ) -> Callable[[Engine], Engine]:
    """Decorator declaring an engine in ENGINES with its capabilities."""
    def add(run: Engine) -> Engine:
        ENGINES.register(name)(EngineSpec(run, rank, torchscript, prepare))
        return run

    return add


# A loss maps (B, K) model outputs and (B,) integer labels to the SUM of per-sample losses, so the
# gradient of one sample's term is that sample's own update (no 1/B factor).
#
# Losses are evaluated in float64 from the model's outputs. A memorised training sample has p_y within
# 1e-7 of 1: in float32 the softmax rounds p_y to 1, its loss to 0 and its output gradient p_y - 1 to 0,
# so the Weight Modifiers of exactly the rows a membership test is about were mostly rounding (errors of
# 10-90% against a float64 model on a CIFAR-10 CNN, every engine alike). In float64 the output gradient
# is exact up to the outputs' own rounding; it flows back into the float32 model at no extra cost.
LossFn = Callable[[Tensor, Tensor], Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


def _wide(outputs: Tensor) -> Tensor:
    return outputs.to(torch.float64) if outputs.is_floating_point() else outputs


@LOSSES.register("cross_entropy")
def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Softmax cross-entropy on logits with the true label — the default, as in the paper."""
    return F.cross_entropy(_wide(logits), y, reduction="sum")


@LOSSES.register("nll")
def nll(log_probs: Tensor, y: Tensor) -> Tensor:
    """Negative log-likelihood, for models whose last layer is already a log-softmax."""
    return F.nll_loss(_wide(log_probs), y, reduction="sum")


@LOSSES.register("bce")
def binary_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Binary cross-entropy on one logit per sample (B, 1) or (B,), labels 0/1."""
    if logits.dim() > 1 and logits[0].numel() != 1:
        raise InputError(f"loss 'bce' needs one output (a logit) per sample, the model gives {logits[0].numel()}; "
                         "use cross_entropy")
    logits = _wide(logits).reshape(-1)
    return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="sum")


def per_sample_losses(outputs: Tensor, y: Tensor, loss: str) -> Tensor:
    """(B,) each sample's own loss, from a batch of model outputs (the LOSSES are sums over the batch)."""
    fn = LOSSES.get(loss)
    return vmap(lambda o, t: fn(o.unsqueeze(0), t.unsqueeze(0)))(outputs, y)


def predictions(outputs: Tensor) -> Tensor:
    """(B,) predicted class: argmax over classes, or the sign of a single logit."""
    if outputs.dim() == 1 or outputs.shape[-1] == 1:
        return (outputs.reshape(-1) > 0).long()
    return outputs.argmax(dim=-1)


def labels(y: Tensor) -> Tensor:
    """(B,) class labels as int64, whatever integer type they came in (uint8 from image readers, int32)."""
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InputError(f"labels must be integers, got {y.dtype}")
    return y.long()


def check_chunk_size(chunk_size: int | None) -> None:
    """`chunk_size` is a positive number of samples, or None for the whole batch at once."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
        raise InputError(f"chunk size must be a positive number of samples, got {chunk_size}")


def sample_mixing_modules(model: nn.Module) -> list[str]:
    """Modules whose output for one sample depends on its batch-mates even in eval mode: BatchNorm
    without running statistics normalises with the batch's own. Engines that run a whole batch at once
    (hooks, the activation and output sources) would store every row's value for the wrong input."""
    return [name or type(model).__name__ for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None]


@contextmanager
def model_unchanged(model: nn.Module) -> Iterator[None]:
    """Leave the user's model exactly as it was: every module's parameter and buffer slots are put back
    afterwards. `functional_call` swaps tensors in and out of modules, and with a module registered under
    two names it restores a plain tensor in place of the Parameter (torch 2.x), silently freezing it."""
    if isinstance(model, torch.jit.ScriptModule):  # nothing swaps a TorchScript model's tensors
        yield
        return
    slots = [(m, dict(m._parameters), dict(m._buffers)) for _, m in model.named_modules(remove_duplicate=False)]
    try:
        yield
    finally:
        for module, parameters, buffers in slots:
            for name, value in parameters.items():
                if module._parameters.get(name) is not value:
                    module._parameters[name] = value
            for name, value in buffers.items():
                if module._buffers.get(name) is not value:
                    module._buffers[name] = value


def checked_batch(model: nn.Module, layers: list[str], y: Tensor, chunk_size: int | None) -> Tensor:
    """What a batched engine checks before it runs: an auditable model and layers, a positive chunk size;
    returns the labels as int64."""
    check_auditable(model, layers)
    check_chunk_size(chunk_size)
    return labels(y)


def check_auditable(model: nn.Module, layers: list[str]) -> None:
    """Refuse models whose Weight Modifiers would depend on batch-mates or on randomness.

    Raises:
        UnsupportedModelError: listing every module still in training mode, or unknown layers.
    """
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (f" and {len(training) - 5} more" if len(training) > 5 else "")
        raise UnsupportedModelError(
            f"modules in training mode ({shown}); call model.eval() so BatchNorm and dropout do not mix "
            "samples")
    params = dict(model.named_parameters())
    missing = [n for n in layers if n not in params]
    if missing:
        # A tied weight's other names are not keys of named_parameters(), which every engine indexes.
        aliases = parameter_aliases(model)
        shown = ", ".join(f"{n!r} (tied: name it {aliases[n]!r})" if n in aliases else repr(n) for n in missing)
        raise UnsupportedModelError(f"the model has no parameters named {shown}")
    if not layers:
        raise UnsupportedModelError("no layers selected")
