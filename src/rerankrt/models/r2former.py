"""R2Former's re-ranking transformer (pairwise-rerankers.md §3): a pair-wise baseline for the profiler,
state_dict-compatible with the re-ranker inside `CVPR23_DeitS_Rerank.pth` (`module.Reranker.*`).

Each image is 500 tokens [x, y, attention, 128-d local feature]. The 128-d parts are L2-normalised and
correlated (500 × 500). Every query token takes its 5 best database tokens and every database token its
5 best query tokens: 1000 anchors × 5 correspondences of 7 features [query x, y, attention; database x,
y, attention; correlation], coordinates clamped to [0, 1]. `pair_head` embeds each correspondence, plus
the sin-cos embedding of its columns 3:5 (the database token's x, y); a CLS token and 2 blocks summarise
each anchor's 5; `pair_head_2` plus the sin-cos embedding of the anchor's own x, y (a query anchor's
columns 0:2, a database anchor's 3:5), a second CLS and 6 blocks give the pair's 2 logits. The released
test re-sorts by softmax(logits)[:, 1] alone; the model returns the equivalent logit l₁ − l₀ per pair.

Departures that change no output: TopK-5 instead of a full argsort (the 5 best are the same; the order
of the 5 and of the anchors cannot matter, nothing positional sees it), the 7 features gathered for the
picked pairs only instead of materialising the (B, 500, 500, 7) tensor, and a device-agnostic sin-cos
embedding (the original calls `.cuda()`) written as a broadcast product (no Einsum for TensorRT).
The sin-cos embedding is MAE's 2-D one (half the width per coordinate, sin then cos, ω = 10000^(−i/(D/4)))
applied to the coordinates as given: the original's scaling of them is not in our reference, and the
latency does not depend on it.
"""

from __future__ import annotations

import torch
from torch import nn

from rerankrt.models.attention import Mlp, VitAttention
from rerankrt.models.cards.r2former import R2FormerConfig
from rerankrt.models.checks import check_float, checking
from rerankrt.models.fp32 import LayerNorm, l2_normalize
from rerankrt.models.loading import layer_count


class Block(nn.Module):
    """timm's pre-LN Block (LayerScale and q/k-norm are identities and have no parameters)."""

    def __init__(self, cfg: R2FormerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = VitAttention(d, cfg.num_heads)
        self.norm2 = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(d, d * cfg.mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_2d(xy: torch.Tensor, dim: int) -> torch.Tensor:
    """MAE's 2-D sin-cos embedding of coordinates xy [..., 2] → [..., dim]: dim/2 per coordinate."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=xy.device, dtype=torch.float32) / quarter)
    angles = xy.float()[..., None] * omega  # [..., 2, dim/4]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)  # [..., 2, dim/2]
    return emb.flatten(-2).to(xy.dtype)


class R2Former(nn.Module):
    """`model(q_tokens [B,L,3+D], db_tokens [B,L,3+D]) → logits [B]`: the logit of a match, l₁ − l₀ of the
    classifier's two outputs, so that sigmoid(logits) = softmax(l)[:, 1], the released test's score."""

    def __init__(self, cfg: R2FormerConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_token_2 = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, d), requires_grad=False)
        self.ratio = nn.Parameter(torch.ones(1))  # the training-time global/local mix; unused at test time
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.blocks_2 = nn.ModuleList(Block(cfg) for _ in range(cfg.correspondence_depth))
        self.decoder_norm = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.pair_head = nn.Linear(7, d)
        self.pair_head_2 = nn.Linear(d, d)
        self.decoder_pred = nn.Linear(d, 2)

    def check_inputs(self, q_tokens: torch.Tensor, db_tokens: torch.Tensor) -> None:
        dim = self.config.token_dim
        check_float("q_tokens", q_tokens, ("B", "L", dim))
        check_float("db_tokens", db_tokens, (q_tokens.shape[0], "L", dim))

    def correspondences(self, q: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
        """[B, Lq + Ldb, k, 7]: each query token's k best database tokens, then each database token's k
        best query tokens."""
        k = self.config.num_corr
        # fp32: the top-5 picks of an fp16 correlation differ from fp32 at near-ties
        corr = l2_normalize(q[..., 3:].float()) @ l2_normalize(db[..., 3:].float()).transpose(1, 2)  # [B, Lq, Ldb]
        q_xya, db_xya = q[..., :3].clamp(0, 1), db[..., :3].clamp(0, 1)
        best_db, db_idx = corr.topk(k, dim=2)  # [B, Lq, k]
        best_q, q_idx = corr.transpose(1, 2).topk(k, dim=2)  # [B, Ldb, k]

        def pick(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # tokens [B, L, 3], idx [B, M, k]
            return torch.gather(tokens[:, None].expand(-1, idx.shape[1], -1, -1), 2,
                                idx[..., None].expand(-1, -1, -1, 3))

        dtype = q.dtype
        query_anchored = torch.cat([q_xya[:, :, None].expand(-1, -1, k, -1), pick(db_xya, db_idx),
                                    best_db[..., None].to(dtype)], dim=-1)
        db_anchored = torch.cat([pick(q_xya, q_idx), db_xya[:, :, None].expand(-1, -1, k, -1),
                                 best_q[..., None].to(dtype)], dim=-1)
        return torch.cat([query_anchored, db_anchored], dim=1)

    def forward(self, q_tokens: torch.Tensor, db_tokens: torch.Tensor) -> torch.Tensor:
        if checking():
            self.check_inputs(q_tokens, db_tokens)
        d = self.config.embed_dim
        corr = self.correspondences(q_tokens, db_tokens)  # [B, A, k, 7]
        b, anchors, k, _ = corr.shape
        x = self.pair_head(corr) + sincos_2d(corr[..., 3:5], d)
        x = torch.cat([self.cls_token_2.to(x.dtype).expand(b * anchors, 1, d), x.reshape(b * anchors, k, d)], dim=1)
        for block in self.blocks_2:
            x = block(x)
        x = self.decoder_norm(x)[:, 0].reshape(b, anchors, d)
        lq = q_tokens.shape[1]
        own_xy = torch.cat([corr[:, :lq, 0, 0:2], corr[:, lq:, 0, 3:5]], dim=1)
        x = self.pair_head_2(x) + sincos_2d(own_xy, d)
        x = torch.cat([self.cls_token.to(x.dtype).expand(b, 1, d), x], dim=1)
        for block in self.blocks:
            x = block(x)
        logits = self.decoder_pred(self.decoder_norm(x)[:, 0])
        return logits[:, 1] - logits[:, 0]


# --- registry hooks -----------------------------------------------------------------------------

def build(cfg: R2FormerConfig) -> R2Former:
    return R2Former(cfg)


def init_weights(model: R2Former) -> None:
    """timm's ViT initialisation: trunc-normal(0.02) Linears with zero biases and class tokens, unit
    LayerNorms, ratio 0.5."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for p in (model.cls_token, model.cls_token_2):
        nn.init.normal_(p, std=0.02)
    with torch.no_grad():
        model.ratio.fill_(0.5)


def _reranker_part(sd: dict) -> dict:
    """The released file holds the whole place-recognition network under DataParallel's `module.`
    (backbone, local head, re-ranker): keep `module.Reranker.*`, as the original's strict=False load does."""
    prefix = "module.Reranker."
    if any(key.startswith(prefix) for key in sd):
        return {key.removeprefix(prefix): value for key, value in sd.items() if key.startswith(prefix)}
    return sd


def prepare_state_dict(sd: dict, cfg: R2FormerConfig, path: object) -> dict:
    return _reranker_part(sd)


def config_from_state_dict(sd: dict) -> dict:
    return {
        "embed_dim": int(sd["cls_token"].shape[-1]),
        "depth": layer_count(sd, "blocks."),
        "correspondence_depth": layer_count(sd, "blocks_2."),
        "mlp_ratio": int(sd["blocks.0.mlp.fc1.weight"].shape[0]) // int(sd["cls_token"].shape[-1]),
        "num_patches": int(sd["decoder_pos_embed"].shape[1]) - 1,
    }


def identify(sd: dict) -> str | None:
    sd = _reranker_part(sd)
    if "cls_token_2" not in sd or "pair_head.weight" not in sd:
        return None
    cfg = config_from_state_dict(sd)
    return f"r2former ({cfg['depth']} + {cfg['correspondence_depth']} blocks)"
