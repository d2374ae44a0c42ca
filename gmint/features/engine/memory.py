"""Batch sizing under a memory budget (`--max-memory`): an estimate of the hooks engine's peak memory.

Basis (the same on every device; nothing is allocated beyond two tiny forward passes):
- activations autograd keeps for the backward: the forward the hooks engine runs (parameters detached,
  graph from the first selected layer on), traced with saved-tensor hooks at batch 1 and 2; distinct
  storages are summed, and the difference is the per-sample cost (parameters and buffers cancel out);
- the captured inputs and output gradients of the selected layers (per sample);
- transient gradients during the backward: the largest per-sample module output;
- the forward's own transient peak, which dominates when the graph is small (e.g. only the output layer
  selected): five times the largest module output — its input, itself and the layout copies of CPU
  (oneDNN) kernels;
- materialised Weight Modifiers where a reduction has no shortcut (the `reducers` of `GRAD_FORMULAS` in
  `gmint.features.engine.formulas`): per sample the WM plus, for Conv2d, the unfolded input — for at most
  `chunk_size` samples at once.
Checked against the peak heap of the hooks engine at batch 128 on CPU (zoo small CNN and ResNet-18 ×0.25,
entry/middle/output/combined, MEAN): the estimate is 1.02–2.1× the measured peak, never below it.
Not counted: the model's own parameters, allocator caching and fragmentation, library workspaces (cuDNN,
BLAS); leave headroom for those. For the `vmap` engine the same figure bounds `chunk_size` (its batch
only holds inputs and outputs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.graph import saved_tensors_hooks

from gmint.errors import InputError
from gmint.features.engine.base import check_auditable
from gmint.features.engine.formulas import formulas_for
from gmint.features.engine.hooks import Capture, traced_forward, unsupported_parameters
from gmint.features.reduce import NamedReduction, Reduction


def _storage_bytes(tensors: list[Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (views and aliases counted once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _traced(model: nn.Module, modules: dict[str, nn.Module], x: Tensor) -> tuple[int, int, int, dict]:
    """For batch x: bytes kept for the backward (with the captured inputs), bytes of the selected layers'
    outputs, the largest output of any module, and the captures."""
    saved: list[Tensor] = []
    largest = [0]
    captures = {name: Capture() for name in modules}

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    def measure(module: nn.Module, args: tuple, out: object) -> None:
        if isinstance(out, Tensor):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    handles = [m.register_forward_hook(measure) for m in model.modules()]
    try:
        with torch.enable_grad(), saved_tensors_hooks(pack, lambda t: t):
            traced_forward(model, modules, captures, x)
    finally:
        for h in handles:
            h.remove()
    inputs = [c.a for c in captures.values() if c.a is not None]
    outputs = sum(c.zero_grad.numel() * c.zero_grad.element_size() for c in captures.values()
                  if c.zero_grad is not None)
    return _storage_bytes(saved + inputs), outputs, largest[0], captures


def _materialised_bytes(module: nn.Module, kind: str, capture: Capture, reduction: Reduction,
                        fast: bool) -> int:
    """Per-sample bytes of the Weight Modifier (and unfold) materialised for one parameter: none for a
    hook shortcut, the WM for a vmap fallback, the WM plus the unfolded input for a Conv2d weight."""
    if fast and kind == "weight" and isinstance(reduction, NamedReduction) \
            and (formulas := formulas_for(module)) is not None and reduction.name in formulas.reducers:
        return 0
    param = getattr(module, kind)
    count = param.numel()
    if fast and isinstance(module, nn.Conv2d) and kind == "weight" and capture.zero_grad is not None:
        count += module.weight[0].numel() * module.groups * capture.zero_grad[0, 0].numel()
    return count * param.element_size()


def max_batch_for_memory(model: nn.Module, layers: list[str], reduction: Reduction, sample_input: Tensor,
                         budget_bytes: int, *, chunk_size: int | None = 64) -> int:
    """Largest batch whose estimated peak extraction memory (hooks engine) fits `budget_bytes`.

    Args:
        model: audited model in eval mode.
        layers: selected parameter names.
        reduction: the reduction to be used (decides which layers materialise Weight Modifiers).
        sample_input: (n, ...) inputs shaped like the data (only the first is used).
        budget_bytes: working memory allowed on the model's device, beyond its parameters.
        chunk_size: the engine's chunk size (bounds materialised Weight Modifiers).

    Raises:
        InputError: not even one sample fits the budget.
    """
    check_auditable(model, layers)
    owners = {f"{mn}.{attr}" if mn else attr: (mn, m, attr) for mn, m in model.named_modules()
              for attr, _ in m.named_parameters(recurse=False)}
    slow = unsupported_parameters(model, layers)
    modules = {owners[n][0]: owners[n][1] for n in layers}
    one = sample_input[:1]
    kept1, _, _, captures = _traced(model, modules, one)
    kept2, outputs, largest, _ = _traced(model, modules, torch.cat([one, one]))
    backward = (kept2 - kept1) + (outputs + largest) // 2
    per_sample = max(backward, 5 * largest // 2) + one.numel() * one.element_size()
    wm = sum(_materialised_bytes(owners[n][1], owners[n][2], captures[owners[n][0]], reduction, n not in slow)
             for n in layers)
    if per_sample + wm > budget_bytes:
        raise InputError(f"a memory budget of {size_text(budget_bytes)} does not fit one sample "
                         f"(about {size_text(per_sample + wm)})")
    batch = budget_bytes // (per_sample + wm)
    if chunk_size is not None and batch > chunk_size:
        batch = max(chunk_size, (budget_bytes - chunk_size * wm) // per_sample)
    return int(batch)


def size_text(n_bytes: int) -> str:
    """A byte count a person reads: in the largest unit that keeps it at 1 or more (a 1-byte budget is "1 B",
    never "0.0 MiB")."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes} B"
