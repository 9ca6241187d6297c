"""Literal references for the DINOv2 extractor, written from reference/extraction.md independently of
rerankrt.models.dinov2: the hub→Hugging Face key mapping (for `Dinov2WithRegistersModel` parity) and the
AMES detector, the selection and the global vectors of §5 as the published code computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_hf(sd: dict, depth: int, hf_keys: set[str]) -> dict:
    """The hub state_dict (dinov2_vitb14_reg4_pretrain.pth layout) in Dinov2WithRegistersModel's names:
    `attention.attention.{query,key,value}` and `attention.output.dense` (transformers 4.x) or
    `attention.{q,k,v,o}_proj` (5.x), whichever `hf_keys` holds."""
    out = {"embeddings.cls_token": sd["cls_token"], "embeddings.mask_token": sd["mask_token"],
           "embeddings.position_embeddings": sd["pos_embed"], "embeddings.register_tokens": sd["register_tokens"],
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    v5 = "encoder.layer.0.attention.q_proj.weight" in hf_keys
    qkv_names = ("q_proj", "k_proj", "v_proj") if v5 else tuple(f"attention.{n}" for n in ("query", "key", "value"))
    out_name = "o_proj" if v5 else "output.dense"
    for i in range(depth):
        p, q = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for name, part in zip(qkv_names, sd[p + f"attn.qkv.{kind}"].chunk(3), strict=True):
                out[q + f"attention.{name}.{kind}"] = part
            out[q + f"attention.{out_name}.{kind}"] = sd[p + f"attn.proj.{kind}"]
            for n in ("norm1", "norm2"):
                out[q + f"{n}.{kind}"] = sd[p + f"{n}.{kind}"]
            for n in ("fc1", "fc2"):
                out[q + f"mlp.{n}.{kind}"] = sd[p + f"mlp.{n}.{kind}"]
        out[q + "layer_scale1.lambda1"] = sd[p + "ls1.gamma"]
        out[q + "layer_scale2.lambda1"] = sd[p + "ls2.gamma"]
    return out


def published_detector(sd: dict, patch_tokens: torch.Tensor, topk: int):
    """§5 over one image's final-norm patch tokens [N, C]: the published reshape to [1, C, a, N/a] (a the
    largest divisor of N not above √N), SpatialAttention2d with nn modules, torch.topk, the global vectors.
    Returns (descriptors [k, C], weights [k], global [C], all weights [N]) in the order topk gives them."""
    n, c = patch_tokens.shape
    a = max(d for d in range(1, int(n**0.5) + 1) if n % d == 0)
    x = patch_tokens.T.reshape(1, c, a, n // a)
    conv1, conv2 = torch.nn.Conv2d(c, c, 1), torch.nn.Conv2d(c, 1, 1)
    bn = torch.nn.BatchNorm2d(c, eps=1e-5).eval()
    conv1.load_state_dict({"weight": sd["conv1.weight"], "bias": sd["conv1.bias"]})
    conv2.load_state_dict({"weight": sd["conv2.weight"], "bias": sd["conv2.bias"]})
    bn.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("bn.")})
    with torch.no_grad():
        y = bn(conv1(x))
        desc = y / y.norm(p=2, dim=1, keepdim=True).clamp(min=1e-15)
        weight = F.softplus(conv2(F.relu(y)), beta=1, threshold=20)
    desc, weight = desc.reshape(c, n).T, weight.reshape(n)
    top = torch.topk(weight, min(n, topk)).indices
    pooled = F.normalize((weight[:, None] * desc).mean(dim=0), dim=-1)
    return desc[top], weight[top], pooled, weight
