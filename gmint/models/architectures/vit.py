"""Vision Transformer at dataset resolution (patch 4, dim 64, depth 12, 8 heads by default).

Attention is one qkv `nn.Linear`, matmul, softmax and an output `nn.Linear` rather than
`nn.MultiheadAttention`, which keeps its qkv weight as a bare parameter (no Linear module for layer
presets or the hooks engine to see) and switches to a fused kernel outside autograd. Every weight is
thus a plain Linear or Conv2d, and the forward is pure tensor algebra that torch.func.vmap batches.
`F.scaled_dot_product_attention` is avoided too: it has no vmap batching rule in torch 2.13, so per-sample
gradients would fall back to a slow per-sample loop with a performance warning.
"""

from __future__ import annotations

import torch
from torch import nn

from gmint.models.zoo import ARCHITECTURES


class Attention(nn.Module):
    """Multi-head self-attention: qkv projection, scaled dot-product softmax, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) tokens → (B, N, dim), every token attending to all of them."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # scale the small tensor
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) tokens → (B, N, dim)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Conv patch embedding, class token, learned positional embedding, blocks, LayerNorm, linear head."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, patch: int, dim: int,
                 depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2 + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, num_classes) logits, read from the class token."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


@ARCHITECTURES.register("vit")
def vit(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0, patch: int = 4,
        dim: int = 64, depth: int = 12, heads: int = 8, mlp_ratio: float = 4.0) -> nn.Module:
    """ViT on `patch`×`patch` patches of the full-size input; `width` scales `dim` to a multiple of `heads`.

    Raises:
        ValueError: `image_size` not divisible by `patch`, or `dim` (before scaling) not divisible by `heads`.
    """
    if image_size % patch:
        raise ValueError(f"vit: image size {image_size} is not divisible by the patch size {patch}; "
                         f"choose a patch that divides it (e.g. patch=4 for 8, 28, 32 or 64 px)")
    if dim % heads:
        raise ValueError(f"vit: dim {dim} is not divisible by heads {heads}")
    dim = heads * max(1, round(dim * width / heads))
    return VisionTransformer(in_channels, num_classes, image_size, patch=patch, dim=dim, depth=depth,
                             heads=heads, mlp_ratio=mlp_ratio)
