"""Literal RAML written from reference/models.md §4.1, independent of rerankrt.models.raml.

A functional ResNet-50 over the torchvision-named state_dict, GeM with `avg_pool2d` as published,
L2N with additive eps, whitening, and the published `[512, B]` output layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCKS = (3, 4, 6, 3)


def _bn(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=False, eps=1e-5)


def backbone(sd: dict, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(_bn(sd, "backbone.1.", F.conv2d(x, sd["backbone.0.weight"], stride=2, padding=3)))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for stage, blocks in enumerate(BLOCKS):
        for i in range(blocks):
            p = f"backbone.{4 + stage}.{i}."
            stride = 2 if (stage > 0 and i == 0) else 1
            out = F.relu(_bn(sd, p + "bn1.", F.conv2d(x, sd[p + "conv1.weight"])))
            out = F.relu(_bn(sd, p + "bn2.", F.conv2d(out, sd[p + "conv2.weight"], stride=stride, padding=1)))
            out = _bn(sd, p + "bn3.", F.conv2d(out, sd[p + "conv3.weight"]))
            if i == 0:
                x = _bn(sd, p + "downsample.1.", F.conv2d(x, sd[p + "downsample.0.weight"], stride=stride))
            x = F.relu(out + x)
    return x


def gem(x: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return F.avg_pool2d(x.clamp(min=eps).pow(p), (x.size(-2), x.size(-1))).pow(1.0 / p)


def l2n(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / (torch.norm(x, p=2, dim=1, keepdim=True) + eps).expand_as(x)


def published(sd: dict, images: torch.Tensor) -> torch.Tensor:
    """The published forward: → [512, B] column vectors."""
    o = l2n(gem(backbone(sd, images), sd["pool.p"])).squeeze(-1).squeeze(-1)
    o = l2n(o @ sd["whiten.weight"].T + sd["whiten.bias"])
    return o.permute(1, 0)
