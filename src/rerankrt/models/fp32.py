"""FP32 islands shared by the models: in a half-precision model (the FP16 export) these compute in fp32
and return the input's dtype, so the strongly typed FP16 graph keeps them in FP32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """`F.normalize` computed in fp32: in fp16 the eps underflows and a zero (padded) row gives 0/0 = NaN."""
    xf = x.float()
    return (xf / xf.norm(dim=-1, keepdim=True).clamp_min(eps)).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm with input, weight and bias in fp32 (ONNX's LayerNormalization binds them to one type;
    in fp16 LayerNorm overflows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class GroupNorm(nn.GroupNorm):
    """GroupNorm in fp32 (the group variance overflows and loses precision in fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)
