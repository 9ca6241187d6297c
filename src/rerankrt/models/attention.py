"""Masked softmax attention shared by AMES, LOCORE, RRT, R2Former and DINOv2, and the ViT parts that
R2Former and DINOv2 share (timm's fused-qkv attention and MLP: `attn.qkv`, `attn.proj`, `mlp.fc1`,
`mlp.fc2`).

Masks enter as an additive, fp32-finite bias (never −inf: TensorRT's fused FP16 kernels can turn
−inf − (−inf) into NaN). Every caller guarantees that no row is fully masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: additive bias of a masked key; fp32-finite. Combine masks with `torch.where`, never by adding biases.
MASKED = torch.finfo(torch.float32).min


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q·kᵀ + bias)·v for pre-scaled queries; `bias` is fp32 and broadcasts to the scores (None:
    nothing masked).

    In fp32 this is PyTorch's fused SDPA (it exports as plain MatMul/Softmax ops). In reduced
    precision the scores, the masked addition and the softmax are an explicit FP32 island.
    """
    if q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    scores = (q @ k.transpose(-1, -2)).float()
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1).to(v.dtype) @ v


class SelfAttention(torch.nn.Module):
    """Multi-head self-attention with `nn.MultiheadAttention`'s parameter names (`in_proj_weight`,
    `in_proj_bias`, `out_proj`), batch first, a key-padding bias instead of a bool mask."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = torch.nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = torch.nn.Parameter(torch.empty(3 * dim))
        self.out_proj = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """x [B, N, E], key_bias [B, N] fp32 (0 or MASKED) → [B, N, E]."""
        b, n, e = x.shape
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
                   for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1))
        out = attend(q * (e // self.num_heads) ** -0.5, k, v, key_bias[:, None, None, :])
        return self.out_proj(out.transpose(1, 2).reshape(b, n, e))


class VitAttention(torch.nn.Module):
    """timm's ViT attention: fused `qkv` with bias, scaled dot product, `proj`; no mask."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = attend(q * (c // self.num_heads) ** -0.5, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(torch.nn.Module):
    """timm's ViT MLP: `fc1`, exact (erf) GELU, `fc2`."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(dim, hidden)
        self.fc2 = torch.nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
