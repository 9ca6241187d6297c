"""CVNet-Rerank's re-ranking head (pairwise-rerankers.md §2): a pair-wise baseline for the profiler,
state_dict-compatible with the head of the released CVNet checkpoints (`conv2ds.*`, `cv_learner.*` in
`['model_state']`; the `encoder_q.*` backbone is `cvnet_backbone`, timed on its own).

Inputs are the two images' ResNet stage-3 maps (1024 channels, stride 16, taken before the final ReLU).
Each is resized to 3 scales (sides ×0.5, ×0.707, ×1; bilinear, align_corners) and reduced to 256
channels by a per-scale 3×3 conv; the 9 query-scale × key-scale cosine correlations are resized back to
the full (Hq, Wq, Hk, Wk) grid by two 2-D resizes, stacked, clamped at 0, and go through the 4-block
center-pivot 4D-conv learner (each "4D conv" a 2-D conv over the query dims at every strided key
position plus one over the key dims at every strided query position, summed), GroupNorm and ReLU; the
mean over the 4 spatial dims and a 2-layer MLP give 2 logits (score = softmax[:, 1]); the model returns
the equivalent logit l₁ − l₀ per pair.

The strided positions are taken by slicing (the original gathers them with `index_select` on a flat
index: the same positions). Map sizes are static: one graph or engine per size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rerankrt.models.cards.cvnet import CvnetConfig
from rerankrt.models.checks import check_float, checking
from rerankrt.models.fp32 import GroupNorm


class CenterPivotConv4d(nn.Module):
    """HSNet's center-pivot 4D convolution of [B, C, Ha, Wa, Hb, Wb] with the same stride on all 4 dims."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.conv2 = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        b, c = x.shape[:2]
        keys = x[..., ::s, ::s] if s > 1 else x  # conv1 runs at every strided key position
        hb, wb = keys.shape[-2:]
        out1 = self.conv1(keys.permute(0, 4, 5, 1, 2, 3).reshape(-1, c, *x.shape[2:4]))
        out1 = out1.reshape(b, hb, wb, *out1.shape[1:]).permute(0, 3, 4, 5, 1, 2)
        queries = x[:, :, ::s, ::s] if s > 1 else x  # conv2 at every strided query position
        ha, wa = queries.shape[2:4]
        out2 = self.conv2(queries.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, *x.shape[4:6]))
        out2 = out2.reshape(b, ha, wa, *out2.shape[1:]).permute(0, 3, 1, 2, 4, 5)
        return out1 + out2


class CVLearner(nn.Module):
    def __init__(self, cfg: CvnetConfig) -> None:
        super().__init__()
        cin = len(cfg.scales) ** 2
        for i, (channels, kernels, strides) in enumerate(
                zip(cfg.learner_channels, cfg.learner_kernels, cfg.learner_strides, strict=True), 1):
            layers: list[nn.Module] = []
            for cout, k, s in zip(channels, kernels, strides, strict=True):
                layers += [CenterPivotConv4d(cin, cout, k, s), GroupNorm(cfg.groups, cout), nn.ReLU()]
                cin = cout
            self.add_module(f"block{i}", nn.Sequential(*layers))
        self.blocks = len(cfg.learner_channels)
        self.mlp = nn.Sequential(nn.Linear(cin, cin), nn.ReLU(), nn.Linear(cin, 2))

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        x = corr
        for i in range(1, self.blocks + 1):
            x = getattr(self, f"block{i}")(x)
        logits = self.mlp(x.mean(dim=(2, 3, 4, 5)))
        return logits[:, 1] - logits[:, 0]


def cosine_correlation(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B, C, hq, wq] × [B, C, hk, wk] → [B, hq, wq, hk, wk] in fp32 (in fp16 the 1e-8 underflows and
    squared norms of 256-d features can overflow)."""
    b = q.shape[0]
    qf, kf = q.float().flatten(2), k.float().flatten(2)
    norms = qf.norm(dim=1)[:, :, None] * kf.norm(dim=1)[:, None, :] + 1e-8
    return (qf.transpose(1, 2) @ kf / norms).reshape(b, *q.shape[2:], *k.shape[2:])


def interpolate4d(x: torch.Tensor, size: tuple[int, int, int, int]) -> torch.Tensor:
    """[B, ha, wa, hb, wb] → [B, *size]: bilinear (align_corners) over the query dims, then the key dims."""
    b, ha, wa, hb, wb = x.shape
    if (ha, wa) != size[:2]:
        x = F.interpolate(x.reshape(b, ha, wa, hb * wb).permute(0, 3, 1, 2), size[:2], mode="bilinear",
                          align_corners=True).permute(0, 2, 3, 1)
    x = x.reshape(b, size[0] * size[1], hb, wb)
    if (hb, wb) != size[2:]:
        x = F.interpolate(x, size[2:], mode="bilinear", align_corners=True)
    return x.reshape(b, *size)


class CvnetRerank(nn.Module):
    """`model(q_map [B,1024,Hq,Wq], db_map [B,1024,Hk,Wk]) → logits [B]`: the logit of a match, l₁ − l₀ of
    the MLP's two outputs (sigmoid(logits) = softmax(l)[:, 1], the published P(match))."""

    def __init__(self, cfg: CvnetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.conv2ds = nn.ModuleList(nn.Conv2d(cfg.feature_dim, cfg.conv_dim, 3, padding=1, bias=False)
                                     for _ in cfg.scales)
        self.cv_learner = CVLearner(cfg)

    def check_inputs(self, q_map: torch.Tensor, db_map: torch.Tensor) -> None:
        check_float("q_map", q_map, ("B", self.config.feature_dim, "H", "W"))
        check_float("db_map", db_map, (q_map.shape[0], self.config.feature_dim, "H", "W"))

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        out = []
        for conv, scale in zip(self.conv2ds, self.config.scales, strict=True):
            size = (round(h * math.sqrt(scale)), round(w * math.sqrt(scale)))
            scaled = x if size == (h, w) else F.interpolate(x, size, mode="bilinear", align_corners=True)
            out.append(conv(scaled))
        return out

    def forward(self, q_map: torch.Tensor, db_map: torch.Tensor) -> torch.Tensor:
        if checking():
            self.check_inputs(q_map, db_map)
        size = (*q_map.shape[-2:], *db_map.shape[-2:])
        keys = self.pyramid(db_map)
        corr = torch.stack([interpolate4d(cosine_correlation(q, k), size) for q in self.pyramid(q_map) for k in keys],
                           dim=1)
        return self.cv_learner(corr.clamp(min=0).to(q_map.dtype))


# --- registry hooks -----------------------------------------------------------------------------

def build(cfg: CvnetConfig) -> CvnetRerank:
    return CvnetRerank(cfg)


def init_weights(model: CvnetRerank) -> None:
    """PyTorch's default initialisation (kaiming-uniform convs and Linears), unit GroupNorms."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _head(sd: dict) -> dict:
    """The re-ranking head of a full CVNet checkpoint (the `encoder_q.*` backbone is served apart)."""
    return {k: v for k, v in sd.items() if not k.startswith("encoder_q.")}


def prepare_state_dict(sd: dict, cfg: CvnetConfig, path: object) -> dict:
    return _head(sd)


def config_from_state_dict(sd: dict) -> dict:
    return {"feature_dim": int(sd["conv2ds.0.weight"].shape[1]), "conv_dim": int(sd["conv2ds.0.weight"].shape[0])}


def identify(sd: dict) -> str | None:
    return "cvnet-rerank" if "conv2ds.0.weight" in sd and "cv_learner.mlp.0.weight" in sd else None

