"""The DINOv2 extractor: ViT-B/14 with 4 registers and the AMES detector (reference/extraction.md), an
image → every patch token's detector descriptor and weight, and the image's `global` and `cls` vectors.

State-dict compatible with the released files: the backbone's keys as `dinov2_vitb14_reg4_pretrain.pth`
has them, the detector's (`dinov2_detector.pt`) under `detector.`.

Why the position resize is written as two matrix products: DINOv2 resizes its 37 × 37 position grid to
the image's patch grid with an antialiased bicubic interpolation, which does not export to ONNX at any
size but 518 × 518 (facebookresearch/dinov2 #288). The resize is separable and depends on the grid sizes
alone, so it is `A_h · P · A_wᵀ` per channel with 1-D interpolation matrices built in the graph from the
output size: PyTorch's antialiased kernel (Keys, a = −0.5, its support widened by the downscale factor,
each row normalised over the source positions it covers), exactly. It runs in FP32.

The selection of the top-k tokens by weight is not in the graph: the graph returns every token (the
per-token outputs validate with plain tolerances, and no data-dependent output size reaches TensorRT);
`rerankrt.data.extraction` selects on the host, as published (descending weight, no NMS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rerankrt.core.errors import CheckpointError, InputError
from rerankrt.models.attention import Mlp, VitAttention
from rerankrt.models.cards.dinov2 import Dinov2Config
from rerankrt.models.checks import check_float, checking
from rerankrt.models.fp32 import LayerNorm, l2_normalize

#: Keys' cubic convolution kernel parameter of PyTorch's antialiased bicubic (PIL's); the plain bicubic uses −0.75
KEYS_A = -0.5


def _keys(x: torch.Tensor) -> torch.Tensor:
    """The cubic convolution kernel at |x| (0 beyond 2)."""
    x = x.abs()
    a = KEYS_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_matrix(out_size, in_size: int, device=None) -> torch.Tensor:
    """[out_size, in_size] float32 matrix M with M @ v = F.interpolate(v, out_size, mode="bicubic",
    antialias=True, align_corners=False) along one axis. `out_size` may be a traced (symbolic) size: it
    enters only as a tensor's length, so the export sees tensor arithmetic and no guards on it."""
    ones = torch.ones(out_size, dtype=torch.float32, device=device)
    scale = in_size / ones.sum()  # > 1: shrinking, the kernel widens by it
    widen = torch.clamp(scale, min=1.0)
    support = 2.0 * widen
    centre = (torch.cumsum(ones, 0) - 0.5) * scale  # [out]
    src = torch.arange(in_size, dtype=torch.float32, device=device)  # [in]
    # PyTorch takes the taps [floor(centre − support + ½), floor(centre + support + ½)) ∩ [0, in)
    low = torch.floor(centre - support + 0.5)[:, None]
    high = torch.floor(centre + support + 0.5)[:, None]
    taps = (src[None, :] >= low) & (src[None, :] < high)
    weights = torch.where(taps, _keys((src[None, :] - centre[:, None] + 0.5) / widen), torch.zeros((), device=device))
    return weights / weights.sum(dim=1, keepdim=True)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)


class Block(nn.Module):
    """Pre-norm ViT block with LayerScale on both residual branches."""

    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        e = cfg.embed_dim
        self.norm1 = LayerNorm(e, eps=cfg.layer_norm_eps)
        self.attn = VitAttention(e, cfg.num_heads)
        self.ls1 = LayerScale(e)
        self.norm2 = LayerNorm(e, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(e, cfg.mlp_dim)
        self.ls2 = LayerScale(e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, cfg.patch_size)


class Detector(nn.Module):
    """AMES's `SpatialAttention2d`: y = BN(conv1(x)); descriptor y/‖y‖; weight softplus(conv2(ReLU(y)))."""

    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.conv1 = nn.Conv2d(d, d, 1)
        self.bn = nn.BatchNorm2d(d, eps=cfg.bn_eps)
        self.conv2 = nn.Conv2d(d, 1, 1)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, N, E] → (descriptors [B, N, E], weights [B, N]); per token (1×1 convolutions)."""
        bn = self.bn
        mean, var = bn.running_mean, bn.running_var
        assert mean is not None and var is not None  # eval-mode statistics, from the checkpoint
        y = F.linear(tokens, self.conv1.weight.flatten(1), self.conv1.bias)
        y = (y - mean.to(y.dtype)) * torch.rsqrt(var.float() + bn.eps).to(y.dtype) * bn.weight.to(y.dtype) \
            + bn.bias.to(y.dtype)
        # FP32 islands: the norm of a 768-d row and the softplus weight the selection sorts by
        yf = y.float()
        desc = yf / yf.norm(dim=-1, keepdim=True).clamp_min(1e-15)
        conv2 = self.conv2
        weight = F.softplus(F.linear(F.relu(yf), conv2.weight.flatten(1).float(), conv2.bias.float()
                                     if conv2.bias is not None else None))
        return desc.to(tokens.dtype), weight[..., 0].to(tokens.dtype)


class Dinov2Extractor(nn.Module):
    """`model(images [B,3,H,W]) → (weights [B,N], tokens [B,N,768], global [B,768], cls [B,768])` for
    ImageNet-normalised RGB images whose sides are multiples of 14; N = (H/14)·(W/14) patch tokens in
    row-major order, each the detector's L2-normalised descriptor with its softplus weight;
    `global` = L2N(mean of weight·descriptor), `cls` = L2N(the final-norm CLS token)."""

    def __init__(self, cfg: Dinov2Config) -> None:
        super().__init__()
        self.config = cfg
        e, grid = cfg.embed_dim, cfg.grid
        self.cls_token = nn.Parameter(torch.empty(1, 1, e))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + grid * grid, e))
        self.register_tokens = nn.Parameter(torch.empty(1, cfg.registers, e))
        self.mask_token = nn.Parameter(torch.empty(1, e))  # training only; in the release's state_dict
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = LayerNorm(e, eps=cfg.layer_norm_eps)
        self.detector = Detector(cfg)

    def positions(self, h, w, dtype: torch.dtype) -> torch.Tensor:
        """The patch position embedding resized from the trained grid to h × w: [h·w, E] (FP32 island)."""
        g = self.config.grid
        table = self.pos_embed[0, 1:].float().reshape(g, g, -1)  # [g, g, E]
        rows = resize_matrix(h, g, table.device)  # [h, g]
        cols = resize_matrix(w, g, table.device)  # [w, g]
        resized = torch.einsum("hi,ije->hje", rows, table)  # [h, g, E]
        return torch.einsum("wj,hje->hwe", cols, resized).reshape(-1, table.shape[-1]).to(dtype)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if checking():
            self.check_inputs(images)
        x = self.features(images)
        desc, weight = self.detector(x[:, 1 + self.config.registers:])
        pooled = (weight.float()[..., None] * desc.float()).mean(dim=1)
        return weight, desc, l2_normalize(pooled).to(x.dtype), l2_normalize(x[:, 0])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's final-norm tokens [B, 1 + registers + N, E]: CLS, registers, patches (row-major)."""
        x = self.patch_embed.proj(images)  # [B, E, h, w]
        b, e, h, w = x.shape
        patches = x.flatten(2).transpose(1, 2) + self.positions(h, w, x.dtype)
        cls = self.cls_token.to(x.dtype).expand(b, -1, -1) + self.pos_embed[:, :1].to(x.dtype)
        regs = self.register_tokens.to(x.dtype).expand(b, -1, -1)  # no position: added after it
        x = torch.cat([cls, regs, patches], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def check_inputs(self, images: torch.Tensor) -> None:
        check_float("images", images, ("B", 3, "H", "W"))
        p = self.config.patch_size
        h, w = images.shape[-2:]
        if h % p or w % p or h < p or w < p:
            raise InputError(f"images: expected H and W multiples of {p} (at least {p}), got {h} × {w}")


# --- registry hooks (see registry.ModelInfo.implementation) -------------------------------------

def build(cfg: Dinov2Config) -> Dinov2Extractor:
    return Dinov2Extractor(cfg)


def init_weights(model: Dinov2Extractor) -> None:
    """DINOv2's training initialisation (trunc-normal 0.02 Linears and tokens, LayerScale 1e-5 … here 0.1 so
    that random blocks change the tokens) and a detector with unit BatchNorm statistics."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, LayerScale):
            nn.init.constant_(m.gamma, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for p in (model.cls_token, model.pos_embed, model.register_tokens, model.mask_token):
        nn.init.trunc_normal_(p, std=0.02)
    nn.init.normal_(model.detector.conv1.weight, std=model.config.embed_dim ** -0.5)


def config_from_state_dict(sd: dict) -> dict:
    """Nothing: the extractor is ViT-B/14 with 4 registers, and a ViT-S or ViT-L checkpoint is refused with the
    shapes it should have had (the tests' small configurations are built, not loaded)."""
    return {}


def identify(sd: dict) -> str | None:
    """'dinov2-extractor (ViT-B/14, 4 registers)' for a DINOv2 backbone, 'the AMES detector' for a detector."""
    if "register_tokens" in sd and "pos_embed" in sd and "patch_embed.proj.weight" in sd:
        e = sd["cls_token"].shape[-1]
        size = {384: "S", 768: "B", 1024: "L", 1536: "g"}.get(int(e), f"{e}-d")
        return f"dinov2-extractor backbone (ViT-{size}/14, {sd['register_tokens'].shape[1]} registers)"
    if {"conv1.weight", "bn.running_var", "conv2.weight"} <= set(sd):
        return f"the AMES detector ({sd['conv1.weight'].shape[0]}-d)"
    return None


def check_parts(sd: dict, path: object) -> None:
    """A backbone checkpoint must come with its detector (`detector=`): the extractor needs both."""
    if not any(k.startswith("detector.") for k in sd):
        raise CheckpointError(f"checkpoint {path}: the DINOv2 backbone needs its AMES detector too "
                              f"(load_model('dinov2-extractor', backbone, detector='dinov2_detector.pt'))")
