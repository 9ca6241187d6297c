"""Literal RRT from pairwise-rerankers.md §1 with torch's own sequence-first nn.MultiheadAttention and a
bool key_padding_mask, weights copied by name. Independent of rerankrt.models.rrt."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def literal_rrt(sd: dict, src_global, src_local, src_mask, tgt_global, tgt_local, tgt_mask, src_scale, tgt_scale):
    layers = sum(1 for k in sd if k.endswith(".norm1.weight"))
    d = sd["remap.weight"].shape[0]
    seg, scale = sd["seg_encoder.weight"], sd["scale_encoder.weight"]
    out = []
    for b in range(src_global.shape[0]):
        tokens = [seg[2]]
        for g, loc, sc, seg_g, seg_l in ((src_global[b], src_local[b], src_scale[b], 4, 0),
                                         (tgt_global[b], tgt_local[b], tgt_scale[b], 5, 1)):
            if seg_g == 5:
                tokens.append(seg[3])
            r = F.normalize(F.linear(g, sd["remap.weight"], sd["remap.bias"]), dim=-1)
            tokens.append(r + seg[seg_g])
            for j in range(loc.shape[0]):
                tokens.append(F.normalize(loc[j], dim=-1) + scale[sc[j]] + seg[seg_l])
        x = torch.stack(tokens)[:, None]  # [S, 1, d], sequence first
        mask = torch.cat([torch.zeros(2, dtype=torch.bool), src_mask[b], torch.zeros(2, dtype=torch.bool),
                          tgt_mask[b]])[None]
        for i in range(layers):
            p = f"encoder.layers.{i}."
            mha = nn.MultiheadAttention(d, 4)
            mha.load_state_dict({k[len(p) + 10:]: v for k, v in sd.items() if k.startswith(p + "self_attn.")})
            mha.eval()
            a = mha(x, x, x, key_padding_mask=mask, need_weights=False)[0]
            x = F.layer_norm(x + a, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"])
            h = F.linear(F.relu(F.linear(x, sd[p + "linear1.weight"], sd[p + "linear1.bias"])),
                         sd[p + "linear2.weight"], sd[p + "linear2.bias"])
            x = F.layer_norm(x + h, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        out.append(F.linear(x[0, 0], sd["classifier.weight"], sd["classifier.bias"])[0])
    return torch.stack(out)
