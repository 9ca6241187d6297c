"""RAML student/teacher encoder (reference/models.md §4): ResNet-50 → GeM → L2N → whiten → L2N.

Student (224 px queries) and teacher (448 px database) share this architecture; checkpoints differ.
Output is batch-first `[B, 512]` (the published code returns `[512, B]`).

FP32 islands for FP16 deployment: GeM's clamp/power/mean/root and both L2Ns run in fp32, because a
layer-4 activation above ~40 cubed overflows fp16 (reference §6.3).
"""

from __future__ import annotations

import torch
from torch import nn

from rerankrt.core.errors import CheckpointError, InputError
from rerankrt.models.cards.raml import RamlConfig
from rerankrt.models.checks import check_float, checking
from rerankrt.models.resnet import Bottleneck, resnet50_backbone


class GeM(nn.Module):
    """Generalised mean pooling with a learnable exponent `p` ([1]); `mean` over H, W so that
    the export stays dynamic in the image size (an `avg_pool2d` kernel would bake it in)."""

    def __init__(self, p: float, eps: float) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), p))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        pooled = x.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / p)


def l2n(x: torch.Tensor, eps: float) -> torch.Tensor:
    """`x / (‖x‖₂ + eps)` — the *additive* eps of the published L2N."""
    return x / (x.norm(dim=-1, keepdim=True) + eps)


class Raml(nn.Module):
    """`model(images [B,3,H,W]) → [B, 512]`, L2-normalised. Images are ImageNet-normalised RGB."""

    def __init__(self, cfg: RamlConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = resnet50_backbone()
        self.pool = GeM(cfg.gem_p, cfg.gem_eps)
        self.whiten = nn.Linear(cfg.backbone_dim, cfg.output_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if checking():
            check_float("images", images, ("B", 3, "H", "W"))
            if images.shape[-2] < 32 or images.shape[-1] < 32:
                raise InputError(f"images: expected H, W ≥ 32 (the backbone's stride), "
                                 f"got {tuple(images.shape[-2:])}")
        o = l2n(self.pool(self.backbone(images)), self.config.l2n_eps)  # fp32 from GeM on
        w = self.whiten.weight.float()
        b = self.whiten.bias.float()
        o = l2n(nn.functional.linear(o, w, b), self.config.l2n_eps)
        return o.to(images.dtype)


# --- registry hooks (see registry.ModelInfo.implementation) -------------------------------------


def build(cfg: RamlConfig) -> Raml:
    return Raml(cfg)


def init_weights(model: Raml) -> None:
    """torchvision's ResNet initialisation (Kaiming fan-out for convolutions, unit BatchNorm) with the
    last BatchNorm of every block scaled down, so that random-weight activations stay in the range of
    a trained network (the residual sum would otherwise grow with depth); whitening trunc-normal."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.backbone.modules():
        if isinstance(m, Bottleneck):
            nn.init.constant_(m.bn3.weight, 0.2)
    nn.init.trunc_normal_(model.whiten.weight, std=0.02)
    nn.init.zeros_(model.whiten.bias)


def config_from_state_dict(sd: dict) -> dict:
    return {"output_dim": int(sd["whiten.weight"].shape[0]), "backbone_dim": int(sd["whiten.weight"].shape[1])}


def identify(sd: dict) -> str | None:
    if "whiten.weight" in sd and "backbone.0.weight" in sd and "pool.p" in sd:
        return f"raml (ResNet-50 GeM, whitening {sd['whiten.weight'].shape[0]})"
    return None


def check_meta(meta: object, cfg: RamlConfig) -> None:
    """The release's `meta` must describe this architecture: resnet50, gem, whitening 512."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"raml checkpoint: expected a 'meta' dict, got {type(meta).__name__}")
    expected = {"architecture": "resnet50", "pooling": "gem", "whitening": cfg.output_dim}
    wrong = {k: meta.get(k, "<missing>") for k, v in expected.items() if meta.get(k, "<missing>") != v}
    if wrong:
        got = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        want = ", ".join(f"{k}={expected[k]!r}" for k in wrong)
        raise CheckpointError(f"raml checkpoint meta: expected {want}, got {got}")
