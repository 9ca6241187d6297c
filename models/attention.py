"""Masked softmax attention shared by AMES and LOCORE.

Masks enter as an additive, fp32-finite bias (never −inf: TensorRT's fused FP16 kernels can turn
−inf − (−inf) into NaN). Every caller guarantees that no row is fully masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: additive bias of a masked key; fp32-finite. Combine masks with `torch.where`, never by adding biases.
MASKED = torch.finfo(torch.float32).min


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ + bias)·v for pre-scaled queries; `bias` is fp32 and broadcasts to the scores.

    In fp32 this is PyTorch's fused SDPA (it exports as plain MatMul/Softmax ops). In reduced
    precision the scores, the masked addition and the softmax are an explicit FP32 island.
    """
    if q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    scores = (q @ k.transpose(-1, -2)).float() + bias
    return scores.softmax(dim=-1).to(v.dtype) @ v
