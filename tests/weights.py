"""Weights for tests: every parameter redrawn at a scale where the outputs depend on the inputs, and the
containers of the released checkpoints.

The released random initialisation is so small that every pair (or window) gets nearly the same logit,
so the first-stage similarity alone would decide a re-ranking and a comparison could not tell two
models apart.
"""

from __future__ import annotations

import torch

#: the `meta` of RAML's released checkpoints (checked against the architecture on load)
RAML_META = {"architecture": "resnet50", "pooling": "gem", "whitening": 512, "outputdim": 512,
             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def perturb(model: torch.nn.Module, gain: float, spread: float, seed: int = 7) -> torch.nn.Module:
    """In place: matrices N(0, gain² / fan_in), normalisation weights 1 + N(0, spread²), other vectors
    N(0, spread²), drawn in parameter order from `seed`."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                centre = 1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0
                p.copy_(centre + spread * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * gain / p.shape[-1] ** 0.5)
    return model


def release_like_extractor(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """In place: the DINOv2 extractor's weights as a trained one has them, not the near-identity default:
    LayerScale drawn from U(0, 0.2), every other parameter moved by N(0, 0.02²), the detector's BatchNorm
    statistics varied (means N(0, 0.1²), variances log-uniform in [e⁻¹², 1]: some channels almost constant,
    so 1/√var amplifies them) and its weight head ×3, so the weights reach ~100 where tokens stay below 1
    (what a fixed absolute tolerance cannot cover)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.2)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
        bn = model.detector.bn
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
        bn.running_var.copy_(torch.exp(torch.rand(bn.running_var.shape, generator=g) * -12))
        model.detector.conv2.weight.mul_(3)
    return model


def save_extractor(model: torch.nn.Module, folder) -> tuple:
    """The extractor as its two released files: (backbone .pth, plain state_dict; detector .pt, {'state': …})."""
    from pathlib import Path

    sd = model.state_dict()
    backbone, detector = Path(folder) / "dinov2_vitb14_reg4_pretrain.pth", Path(folder) / "dinov2_detector.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("detector.")}, backbone)
    torch.save({"state": {k.removeprefix("detector."): v for k, v in sd.items() if k.startswith("detector.")}},
               detector)
    return backbone, detector
