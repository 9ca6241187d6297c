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
