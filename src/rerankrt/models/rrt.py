"""RRT, the Reranking Transformer (pairwise-rerankers.md §1): a pair-wise baseline for the profiler,
state_dict-compatible with the released `rrt_gld_ckpts/*.pt` (`{'state': …}`).

The pair is one sequence `[CLS, src_global, src_locals, SEP, tgt_global, tgt_locals]` (4 + L1 + L2
tokens): globals go through the shared `remap` Linear(2048 → 128), globals and locals are L2-normalised
(the 128-d remapped global, as we read "global and local are each L2-normalised"), locals get their
scale embedding, every token its segment embedding (0/1 source/target locals, 2 CLS, 3 SEP, 4/5 source/
target global). Six post-LN encoder layers (MHA 4 heads, ReLU FFN 1024); the classifier reads CLS and
returns one raw logit per pair. No positional embedding (the released model does not use one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rerankrt.core.errors import InputError
from rerankrt.models.attention import MASKED, SelfAttention
from rerankrt.models.cards.rrt import RrtConfig
from rerankrt.models.checks import check_float, check_mask, checking
from rerankrt.models.fp32 import LayerNorm, l2_normalize
from rerankrt.models.loading import layer_count

SEG_SRC, SEG_TGT, SEG_CLS, SEG_SEP, SEG_SRC_GLOBAL, SEG_TGT_GLOBAL = range(6)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: RrtConfig) -> None:
        super().__init__()
        d = cfg.model_dim
        self.self_attn = SelfAttention(d, cfg.num_heads)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm1 = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm2 = LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, bias))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class Encoder(nn.Module):
    def __init__(self, cfg: RrtConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))


class Rrt(nn.Module):
    """`model(src_global [B,2048], src_local [B,L1,128], src_mask [B,L1], tgt_global, tgt_local, tgt_mask,
    src_scale=None, tgt_scale=None) → logits [B]`; masks True = padding, scales int64 in [0, 7)."""

    def __init__(self, cfg: RrtConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.model_dim
        self.encoder = Encoder(cfg)
        self.remap = nn.Linear(cfg.global_dim, d)
        self.scale_encoder = nn.Embedding(cfg.num_scales, d)
        self.seg_encoder = nn.Embedding(6, d)
        self.classifier = nn.Linear(d, 1)

    def check_inputs(self, src_global, src_local, src_mask, tgt_global, tgt_local, tgt_mask) -> None:
        cfg = self.config
        for side, g, loc, mask in (("src", src_global, src_local, src_mask), ("tgt", tgt_global, tgt_local, tgt_mask)):
            check_float(f"{side}_global", g, ("B", cfg.global_dim))
            check_float(f"{side}_local", loc, ("B", "L", cfg.model_dim))
            check_mask(f"{side}_mask", mask, loc.shape[:2])
            if g.shape[0] != src_global.shape[0] or loc.shape[0] != src_global.shape[0]:
                raise InputError(f"{side}: expected batch {src_global.shape[0]} (src_global's B) throughout")

    def forward(
        self,
        src_global: torch.Tensor,
        src_local: torch.Tensor,
        src_mask: torch.Tensor,
        tgt_global: torch.Tensor,
        tgt_local: torch.Tensor,
        tgt_mask: torch.Tensor,
        src_scale: torch.Tensor | None = None,
        tgt_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if checking():
            self.check_inputs(src_global, src_local, src_mask, tgt_global, tgt_local, tgt_mask)
        seg = self.seg_encoder.weight.to(src_local.dtype)
        scales = self.scale_encoder.weight.to(src_local.dtype)

        def side(g, loc, scale, seg_global, seg_local):
            g = l2_normalize(self.remap(g)) + seg[seg_global]
            loc = l2_normalize(loc) + (scales[0] if scale is None else scales[scale]) + seg[seg_local]
            return torch.cat([g[:, None], loc], dim=1)

        b = src_global.shape[0]
        cls, sep = seg[SEG_CLS].expand(b, 1, -1), seg[SEG_SEP].expand(b, 1, -1)
        x = torch.cat([cls, side(src_global, src_local, src_scale, SEG_SRC_GLOBAL, SEG_SRC), sep,
                       side(tgt_global, tgt_local, tgt_scale, SEG_TGT_GLOBAL, SEG_TGT)], dim=1)
        keep = torch.zeros_like(src_mask[:, :1].expand(b, 2))
        padding = torch.cat([keep, src_mask, keep, tgt_mask], dim=1)
        bias = torch.where(padding, MASKED, 0.0)
        for layer in self.encoder.layers:
            x = layer(x, bias)
        return self.classifier(x[:, 0]).squeeze(-1)


# --- registry hooks -----------------------------------------------------------------------------

def build(cfg: RrtConfig) -> Rrt:
    return Rrt(cfg)


def init_weights(model: Rrt) -> None:
    """xavier-uniform projections and zero biases (DETR's encoder initialisation), normal(0.02) embeddings,
    unit LayerNorms."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, SelfAttention):
            nn.init.xavier_uniform_(m.in_proj_weight)
            nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def config_from_state_dict(sd: dict) -> dict:
    return {
        "global_dim": int(sd["remap.weight"].shape[1]),
        "model_dim": int(sd["remap.weight"].shape[0]),
        "num_layers": layer_count(sd, "encoder.layers."),
        "dim_feedforward": int(sd["encoder.layers.0.linear1.weight"].shape[0]),
        "num_scales": int(sd["scale_encoder.weight"].shape[0]),
    }


def identify(sd: dict) -> str | None:
    if "seg_encoder.weight" not in sd or "remap.weight" not in sd:
        return None
    return f"rrt ({config_from_state_dict(sd)['num_layers']} layers)"
