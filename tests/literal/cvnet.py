"""Literal CVNet-Rerank head from pairwise-rerankers.md §2, written the way the original computes it:
HSNet's CenterPivotConv4d with `index_select` on a flat index for the strided positions, `interpolate4d`
as two 2-D resizes, the learner from the state_dict. Independent of rerankrt.models.cvnet."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def prune(ct: torch.Tensor, stride: int) -> torch.Tensor:
    """HSNet's prune: the key positions (last two dims) every `stride`, by a flat index_select."""
    bsz, ch, ha, wa, hb, wb = ct.shape
    idxh, idxw = torch.arange(0, hb, stride), torch.arange(0, wb, stride)
    idx = (idxw.repeat(len(idxh), 1) + idxh.repeat(len(idxw), 1).t() * wb).view(-1)
    return ct.reshape(bsz, ch, ha, wa, -1).index_select(4, idx).view(bsz, ch, ha, wa, len(idxh), len(idxw))


def conv4d(sd: dict, p: str, x: torch.Tensor, stride: int) -> torch.Tensor:
    k = sd[p + "conv1.weight"].shape[-1]
    out1 = prune(x, stride) if stride > 1 else x
    bsz, inch, ha, wa, hb, wb = out1.shape
    out1 = out1.permute(0, 4, 5, 1, 2, 3).contiguous().view(-1, inch, ha, wa)
    out1 = F.conv2d(out1, sd[p + "conv1.weight"], sd[p + "conv1.bias"], stride=stride, padding=k // 2)
    outch, o_ha, o_wa = out1.shape[-3:]
    out1 = out1.view(bsz, hb, wb, outch, o_ha, o_wa).permute(0, 3, 4, 5, 1, 2).contiguous()
    # the query positions every `stride`: prune on the swapped tensor
    swapped = x.permute(0, 1, 4, 5, 2, 3)
    out2 = (prune(swapped, stride) if stride > 1 else swapped).permute(0, 1, 4, 5, 2, 3)
    bsz, inch, ha, wa, hb, wb = out2.shape
    out2 = out2.permute(0, 2, 3, 1, 4, 5).contiguous().view(-1, inch, hb, wb)
    out2 = F.conv2d(out2, sd[p + "conv2.weight"], sd[p + "conv2.bias"], stride=stride, padding=k // 2)
    outch, o_hb, o_wb = out2.shape[-3:]
    out2 = out2.view(bsz, ha, wa, outch, o_hb, o_wb).permute(0, 3, 1, 2, 4, 5).contiguous()
    return out1 + out2


def interpolate4d(x: torch.Tensor, size) -> torch.Tensor:
    bsz, ha, wa, hb, wb = x.shape
    x = x.view(bsz, ha, wa, hb * wb).permute(0, 3, 1, 2)
    x = F.interpolate(x, size[:2], mode="bilinear", align_corners=True)
    x = x.permute(0, 2, 3, 1).contiguous().view(bsz, size[0] * size[1], hb, wb)
    x = F.interpolate(x, size[2:], mode="bilinear", align_corners=True)
    return x.view(bsz, *size)


LEARNER = {"block1": [(0, 2)], "block2": [(0, 1), (3, 2)], "block3": [(0, 1), (3, 1), (6, 2)],
           "block4": [(0, 1), (3, 1), (6, 1)]}  # (Sequential index of the conv4d, stride)


def literal_cvnet(sd: dict, q_map: torch.Tensor, db_map: torch.Tensor) -> torch.Tensor:
    def pyramid(x):
        h, w = x.shape[-2:]
        feats = []
        for i, s in enumerate((0.25, 0.5, 1.0)):
            y = F.interpolate(x, (round(h * math.sqrt(s)), round(w * math.sqrt(s))), mode="bilinear",
                              align_corners=True)
            feats.append(F.conv2d(y, sd[f"conv2ds.{i}.weight"], padding=1))
        return feats

    size = (*q_map.shape[-2:], *db_map.shape[-2:])
    corrs = []
    for q in pyramid(q_map):
        for k in pyramid(db_map):
            b, c, hq, wq = q.shape
            hk, wk = k.shape[-2:]
            qf, kf = q.view(b, c, -1), k.view(b, c, -1)
            corr = torch.bmm(qf.transpose(1, 2), kf) / (
                torch.bmm(qf.norm(dim=1, keepdim=True).transpose(1, 2), kf.norm(dim=1, keepdim=True)) + 1e-8)
            corrs.append(interpolate4d(corr.view(b, hq, wq, hk, wk), size))
    x = torch.stack(corrs, dim=1).clamp(min=0)
    for name, layers in LEARNER.items():
        for idx, stride in layers:
            p = f"cv_learner.{name}."
            x = conv4d(sd, f"{p}{idx}.", x, stride)
            x = F.relu(F.group_norm(x, 4, sd[f"{p}{idx + 1}.weight"], sd[f"{p}{idx + 1}.bias"]))
    x = x.mean(dim=(2, 3, 4, 5))
    x = F.relu(F.linear(x, sd["cv_learner.mlp.0.weight"], sd["cv_learner.mlp.0.bias"]))
    return F.linear(x, sd["cv_learner.mlp.2.weight"], sd["cv_learner.mlp.2.bias"])
