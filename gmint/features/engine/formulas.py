"""Per-sample gradient formulas of the hooks engine, one entry per layer type on `GRAD_FORMULAS`.

Per sample b, with a the layer's input and g = ∂L_b/∂(layer output) (in eval mode samples do not

Per sample b, with a the layer's input and g = ∂L_b/∂(layer output) (in eval mode samples do not
interact, so the gradient of the summed loss w.r.t. a sample's own output is that sample's g):

- Linear, input (B, T, I) (T = 1 for 2-D input; middle dims flattened): WM_b = Σ_t g_bt a_btᵀ (O × I).
  `mean`: MEAN_bo = Σ_t g_bto · mean_i(a_bti). On 2-D input that is the bias gradient g_bo times
  mean(a_b) — nearly redundant, and rounding noise when a comes out of a zero-mean LayerNorm (warned).
  `l2`: ‖WM_bo‖² = Σ_{t,t'} g_bto g_bt'o (a_bt·a_bt') (Gram trick; |g_bo|·‖a_b‖ for T = 1), used when
  T·(I + O) < O·I, else the WM is materialised.
- Conv2d with G groups (C_g = C/G inputs and F_g = F/G filters per group), U = unfold(a) (B, C·kh·kw, P):
  WM_b[f] = Σ_p g_bfp U_b[group(f)]p. `mean`: MEAN_bf = Σ_p g_bfp · m_b,group(f),p where m is the mean of
  U over a group's C_g·kh·kw rows = the group's channel-mean input averaged over each kernel window —
  a depthwise conv of (B, G, H, W) with a ones/(kh·kw) kernel; the unfold never exists.
  `l2`: the per-group P × P Gram of U when P·(C_g·kh·kw + F_g) < F_g·C_g·kh·kw (small late maps),
  else the WM is materialised.
- Biases: the per-sample bias gradient is g summed over positions (tokens, pixels); any reduction.
- Every other (layer, reduction) pair — abs_mean, std, max, flat, project:<d>, user reductions —
  materialises that layer's WM only, batched (einsum), `chunk_size` samples at a time.

A new layer type registers its `LayerFormulas` with `register_formulas(LayerType)`; the hooks engine
takes it for that exact type (a subclass may change `forward`, so it does not inherit its parent's
formulas) once `plan_hooks` finds the conditions met. Reductions that cancel (MEAN, and L2 by the Gram
trick) are accumulated in float64 (`ACCUMULATE`), so their error stays at the naive loop's level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gmint.registry import Registry

# (layer, a, g) → (B, *param.shape): a parameter's per-sample gradient from its layer's input a and
# output gradient g. Formulas are registered per layer type, so each function is only called with its own
# type (hence `Any` for the layer here and the exact type in each function's signature).
Gradient = Callable[[Any, Tensor, Tensor], Tensor]
# (layer, a, g) → (B, d): a weight's reduced Weight Modifier without materialising it, or None where
# materialising is cheaper.
HookReducer = Callable[[Any, Tensor, Tensor], Tensor | None]
# a → why a reduction is meaningless for a layer fed with a, or None.
Degeneracy = Callable[[Tensor], str | None]

# Where a reduction sums terms that cancel, it is accumulated in this type (see the module docstring).
ACCUMULATE = torch.float64


@dataclass(frozen=True)
class LayerFormulas:
    """Everything the hooks engine computes for one layer type from the layer's input and output gradient.

    Attributes:
        batched: whether an input is batched the way the formulas assume (checked on every batch).
        gradients: parameter attribute ('weight', 'bias') → its per-sample gradient; a parameter without
            one is computed by `vmap`.
        reducers: reduction name → the weight's reduced Weight Modifier computed without materialising it.
        degenerate: reduction name → why that reduction is meaningless for the layer's input (warned).
    """

    batched: Callable[[Tensor], bool]
    gradients: dict[str, Gradient]
    reducers: dict[str, HookReducer] = field(default_factory=dict)
    degenerate: dict[str, Degeneracy] = field(default_factory=dict)


GRAD_FORMULAS: Registry[LayerFormulas] = Registry("layer type with hook formulas")


def layer_key(layer_type: type[nn.Module]) -> str:
    """A layer type's name on `GRAD_FORMULAS`: its qualified name, e.g. `torch.nn.modules.linear.Linear`
    (two classes of one short name, or a subclass, never share an entry)."""
    return f"{layer_type.__module__}.{layer_type.__qualname__}"


def register_formulas(layer_type: type[nn.Module]) -> Callable[[LayerFormulas], LayerFormulas]:
    """Registers a `LayerFormulas` for exactly `layer_type` (as Opacus' `register_grad_sampler` does)."""
    return GRAD_FORMULAS.register(layer_key(layer_type))


def formulas_for(layer: nn.Module) -> LayerFormulas | None:
    """The formulas registered for `layer`'s own type, or None when the hooks engine has none for it."""
    key = layer_key(type(layer))
    return GRAD_FORMULAS.get(key) if key in GRAD_FORMULAS else None


def _tokens(t: Tensor) -> Tensor:
    """(B, ..., n) → (B, T, n): a Linear's positions (1 for 2-D input) as one axis."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _linear_weight(layer: nn.Linear, a: Tensor, g: Tensor) -> Tensor:
    """(B, O, I) = Σ_t g_t a_tᵀ."""
    return torch.einsum("bto,bti->boi", _tokens(g), _tokens(a))


def _linear_bias(layer: nn.Linear, a: Tensor, g: Tensor) -> Tensor:
    """(B, O) = Σ_t g_t."""
    return _tokens(g).sum(dim=1)


def _linear_mean(layer: nn.Linear, a: Tensor, g: Tensor) -> Tensor:
    """(B, O) = Σ_t g_to · mean_i(a_ti), accumulated in float64."""
    wide = torch.einsum("bto,bt->bo", _tokens(g).to(ACCUMULATE), _tokens(a).mean(dim=-1, dtype=ACCUMULATE))
    return wide.to(g.dtype)


def _linear_l2(layer: nn.Linear, a: Tensor, g: Tensor) -> Tensor | None:
    """(B, O) = sqrt(Σ_{t,t'} g_to g_t'o a_t·a_t'), when the T × T Gram is cheaper than the WM."""
    a, g = _tokens(a), _tokens(g)
    tokens, inputs, outputs = a.shape[1], a.shape[2], g.shape[2]
    if tokens * (inputs + outputs) >= inputs * outputs:
        return None
    a, wide = a.to(ACCUMULATE), g.to(ACCUMULATE)
    gram = a @ a.transpose(1, 2)                                   # (B, T, T)
    return ((gram @ wide) * wide).sum(dim=1).clamp_min(0).sqrt().to(g.dtype)


def _zero_mean_input(a: Tensor) -> str | None:
    """MEAN = Σ_t g_t · mean(a_t) is rounding noise when every position's input has mean ≈ 0 relative
    to its scale (a LayerNorm output without bias)."""
    a = _tokens(a)
    rms = a.pow(2).mean(dim=-1).sqrt()
    if (a.mean(dim=-1).abs() <= 1e-5 * rms).all() and (rms > 0).any():
        return ("its input has zero mean at every position (e.g. a LayerNorm output), so MEAN = bias "
                "gradient × mean(input) is rounding noise; use 'flat', 'project:<d>' or 'l2' for this layer")
    return None


register_formulas(nn.Linear)(LayerFormulas(
    batched=lambda a: a.dim() >= 2,
    gradients={"weight": _linear_weight, "bias": _linear_bias},
    reducers={"mean": _linear_mean, "l2": _linear_l2},
    degenerate={"mean": _zero_mean_input},
))


def _conv_padded(layer: nn.Conv2d, a: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """The input padded as the conv pads it when F.unfold cannot ('same'/'valid', reflect, ...)."""
    if layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
        return a, layer.padding  # type: ignore[return-value]
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    return F.pad(a, layer._reversed_padding_repeated_twice, mode=mode), (0, 0)


def _unfold(layer: nn.Conv2d, a: Tensor) -> Tensor:
    """(B, G, C_g·kh·kw, P): each group's input patches, rows in the weight's (c, kh, kw) order."""
    a, padding = _conv_padded(layer, a)
    u = F.unfold(a, layer.kernel_size, layer.dilation, padding, layer.stride)
    return u.reshape(u.shape[0], layer.groups, -1, u.shape[2])


def _per_group(layer: nn.Conv2d, g: Tensor) -> Tensor:
    """(B, F, Ho, Wo) → (B, G, F_g, P)."""
    return g.reshape(g.shape[0], layer.groups, -1, g.shape[2] * g.shape[3])


def _conv2d_weight(layer: nn.Conv2d, a: Tensor, g: Tensor) -> Tensor:
    """(B, F, C_g, kh, kw) = Σ_p g_fp U_p, per group."""
    wm = torch.einsum("bgfp,bgkp->bgfk", _per_group(layer, g), _unfold(layer, a))
    return wm.reshape(a.shape[0], *layer.weight.shape)


def _conv2d_bias(layer: nn.Conv2d, a: Tensor, g: Tensor) -> Tensor:
    """(B, F) = Σ_p g_fp."""
    return g.sum(dim=(2, 3))


def _conv2d_mean(layer: nn.Conv2d, a: Tensor, g: Tensor) -> Tensor:
    """(B, F) = Σ_p g_fp · (window average of the group's channel-mean input)_p, accumulated in float64."""
    batch, groups = a.shape[0], layer.groups
    m = a.reshape(batch, groups, -1, *a.shape[2:]).mean(dim=2, dtype=ACCUMULATE)
    m, padding = _conv_padded(layer, m)
    kh, kw = layer.kernel_size
    window = m.new_full((groups, 1, kh, kw), 1.0 / (kh * kw))
    m = F.conv2d(m, window, None, layer.stride, padding, layer.dilation, groups)   # (B, G, Ho, Wo)
    wide = torch.einsum("bgfp,bgp->bgf", _per_group(layer, g).to(ACCUMULATE), m.flatten(2))
    return wide.reshape(batch, -1).to(g.dtype)


def _conv2d_l2(layer: nn.Conv2d, a: Tensor, g: Tensor) -> Tensor | None:
    """(B, F) = sqrt(Σ_{p,p'} g_fp g_fp' U_p·U_p'), when the P × P Gram is cheaper than the WM."""
    g = _per_group(layer, g)
    filters, positions = g.shape[2], g.shape[3]
    rows = layer.weight[0].numel()                                   # C_g·kh·kw
    if positions * (rows + filters) >= filters * rows:
        return None
    u, wide = _unfold(layer, a.to(ACCUMULATE)), g.to(ACCUMULATE)
    gram = u.transpose(2, 3) @ u                                      # (B, G, P, P)
    return ((wide @ gram) * wide).sum(dim=3).clamp_min(0).sqrt().reshape(a.shape[0], -1).to(g.dtype)


register_formulas(nn.Conv2d)(LayerFormulas(
    batched=lambda a: a.dim() == 4,
    gradients={"weight": _conv2d_weight, "bias": _conv2d_bias},
    reducers={"mean": _conv2d_mean, "l2": _conv2d_l2},
))
