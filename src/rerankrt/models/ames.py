"""AMES: pair-wise transformer re-ranker over local descriptors (reference/models.md §2).

State-dict compatible with the released checkpoints (`dinov2_ames.pt`, `cvnet_ames_dist.pt`, …).

Why not `nn.MultiheadAttention` with the published dense masks: the sequence is
`[mtc ; query locals (Q) ; database locals (T)]` and both masks are block-structured. Intra-image
attention only needs the (1+Q)² and (1+T)² blocks and inter-image attention the 2·Q·T cross blocks, so
each block is computed on its own instead of two dense (1+Q+T)² matrices that are mostly masked out.
Only the matching token's output reaches the classifier, so the last layer's inter-image attention
and feed-forward run on that token alone. Against one query (the scorer), the first layer's query rows
attend to the query alone and are the same in every pair, so they are computed once
(`BlockAttention.one_query`: 8 % of the scorer's work at Q 600 / T 50). The masks are never
materialised: padding enters as an additive fp32 bias on the keys, finite, and every row can see the
always-valid matching token, so no row is fully masked.

Defined behaviour for an image whose descriptors are all padding: its tokens are invisible, the
matching token sees only itself and the other image, and the model returns a finite logit (the same
logit for every pair in which both images are all padding). This is what the published code computes.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from rerankrt.core.errors import InputError
from rerankrt.models.attention import MASKED, attend
from rerankrt.models.cards.ames import AmesConfig
from rerankrt.models.checks import check_float, check_mask, check_nonempty, checking, fmt_shape, tracing
from rerankrt.models.fp32 import LayerNorm, l2_normalize
from rerankrt.models.loading import layer_count


class BinarizationLayer(nn.Module):
    """`sign(L2N(x) @ W)`: the 128-bit code of `ames-dist`; W is fine-tuned and read from the checkpoint."""

    def __init__(self, local_dim: int, bits: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(local_dim, bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(l2_normalize(x) @ self.W.to(x.dtype))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code as stored: bool, True = +1. The projection is an FP32 island, so that an FP16 graph
        flips a bit only where its fp16 input does; a projection of exactly 0 (sign 0, padding rows) is
        False, i.e. −1, which changes nothing for padding (masked) and is a measure-zero event otherwise."""
        return (l2_normalize(x.float()) @ self.W.float()) > 0


class BlockAttention(nn.Module):
    """Multi-head self-attention over `[mtc ; s ; t]` restricted to intra- or inter-image blocks.

    Parameters carry `nn.MultiheadAttention`'s names (`in_proj_weight`, `in_proj_bias`, `out_proj`).
    """

    def __init__(self, dim: int, num_heads: int, inter: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.inter = inter
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, e = x.shape
        return x.reshape(b, n, self.num_heads, e // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, q_len: int, bias: torch.Tensor, mtc_only: bool = False) -> torch.Tensor:
        """x [B, 1+Q+T, E], bias [B, 1+Q+T] → [B, 1+Q+T, E] (or [B, 1, E] for the matching token only)."""
        b, n, e = x.shape
        w_q, w_kv = self.in_proj_weight.split([e, 2 * e])
        b_q, b_kv = self.in_proj_bias.split([e, 2 * e])
        rows = x[:, :1] if mtc_only else x
        q = self._heads(F.linear(rows, w_q, b_q)) * (e // self.num_heads) ** -0.5
        k, v = (self._heads(t) for t in F.linear(x, w_kv, b_kv).chunk(2, dim=-1))
        bias = bias[:, None, None, :]  # broadcast over heads and query rows
        out = attend(q[:, :, :1], k, v, bias)  # the matching token sees both images
        if not mtc_only:
            s, t = slice(1, 1 + q_len), slice(1 + q_len, None)
            # keys [mtc ; query] and [mtc ; database]
            k_ms, v_ms, bias_ms = k[:, :, : 1 + q_len], v[:, :, : 1 + q_len], bias[..., : 1 + q_len]
            k_mt = torch.cat([k[:, :, :1], k[:, :, t]], dim=2)
            v_mt = torch.cat([v[:, :, :1], v[:, :, t]], dim=2)
            bias_mt = torch.cat([bias[..., :1], bias[..., t]], dim=-1)
            if self.inter:
                out_s, out_t = attend(q[:, :, s], k_mt, v_mt, bias_mt), attend(q[:, :, t], k_ms, v_ms, bias_ms)
            else:
                out_s, out_t = attend(q[:, :, s], k_ms, v_ms, bias_ms), attend(q[:, :, t], k_mt, v_mt, bias_mt)
            out = torch.cat([out, out_s, out_t], dim=2)
        return self.out_proj(out.transpose(1, 2).reshape(b, out.shape[2], e))

    def one_query(self, xs: torch.Tensor, xt: torch.Tensor, bias_s: torch.Tensor, bias_t: torch.Tensor) -> torch.Tensor:
        """The first layer's intra-image attention when every pair holds the same query: xs = `[mtc ; s]`
        [1, 1+Q, E] (the same for every pair), xt the database tokens [P, T, E], their biases [1, 1+Q] and
        [P, T] → [P, 1+Q+T, E], as `forward` on `[mtc ; s ; t]`.

        Why: the query rows attend to `[mtc ; s]` alone, so their projections, their 600 × 601 scores
        (a fifth of AMES's attention) and their output projection are the same in every pair and are
        computed once; the matching row sees the database image and the database rows their own, so
        those stay per pair. Only the first layer: its cross-attention makes every row pair-specific."""
        p, e = xt.shape[0], xs.shape[-1]
        w_q, w_kv = self.in_proj_weight.split([e, 2 * e])
        b_q, b_kv = self.in_proj_bias.split([e, 2 * e])
        scale = (e // self.num_heads) ** -0.5
        q_s, q_t = (self._heads(F.linear(x, w_q, b_q)) * scale for x in (xs, xt))
        k_s, v_s = (self._heads(t) for t in F.linear(xs, w_kv, b_kv).chunk(2, dim=-1))
        k_t, v_t = (self._heads(t) for t in F.linear(xt, w_kv, b_kv).chunk(2, dim=-1))
        k_ms, v_ms = k_s.expand(p, -1, -1, -1), v_s.expand(p, -1, -1, -1)
        bias_all = torch.cat([bias_s.expand(p, -1), bias_t], dim=1)[:, None, None, :]
        out_m = attend(q_s[:, :, :1].expand(p, -1, -1, -1), torch.cat([k_ms, k_t], dim=2),
                       torch.cat([v_ms, v_t], dim=2), bias_all)
        out_s = attend(q_s[:, :, 1:], k_s, v_s, bias_s[:, None, None, :])  # once: [1, H, Q, E/H]
        out_t = attend(q_t, torch.cat([k_ms[:, :, :1], k_t], dim=2), torch.cat([v_ms[:, :, :1], v_t], dim=2),
                       torch.cat([bias_all[..., :1], bias_all[..., xs.shape[1]:]], dim=-1))
        rows = self.out_proj(torch.cat([out_m, out_t], dim=2).transpose(1, 2).reshape(p, -1, e))
        shared = self.out_proj(out_s.transpose(1, 2).reshape(1, -1, e)).expand(p, -1, -1)
        return torch.cat([rows[:, :1], shared, rows[:, 1:]], dim=1)


class AmesLayer(nn.Module):
    """Post-LN block: intra-image attention, inter-image attention, ReLU feed-forward."""

    def __init__(self, cfg: AmesConfig) -> None:
        super().__init__()
        d = cfg.model_dim
        self.self_attn = BlockAttention(d, cfg.num_heads, inter=False)
        self.cross_attn = BlockAttention(d, cfg.num_heads, inter=True)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm1 = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm2 = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm3 = LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, q_len: int, bias: torch.Tensor, last: bool,
                attn: torch.Tensor | None = None) -> torch.Tensor:
        """`attn`: the intra-image attention's output where the caller computed it (`BlockAttention.one_query`)."""
        x = self.norm1(x + (self.self_attn(x, q_len, bias) if attn is None else attn))
        if last:  # only the matching token is read after the last layer
            x = x[:, :1] + self.cross_attn(x, q_len, bias, mtc_only=True)
        else:
            x = x + self.cross_attn(x, q_len, bias)
        x = self.norm2(x)
        return self.norm3(x + self.linear2(F.relu(self.linear1(x), inplace=True)))


class AmesDecoder(nn.Module):
    """Holds `layers` so that keys read `decoder.layers.{i}.…` as in the released checkpoints."""

    def __init__(self, cfg: AmesConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AmesLayer(cfg) for _ in range(cfg.num_layers))


class AmesWeights(nn.Module):
    """AMES's parameters with the released names (the whole model, its encoder and its scorer share them,
    so each loads the same checkpoints) and the matching of two remapped token sets."""

    #: eager CPU forwards run this many pairs at a time: a chunk's activations stay in cache, which
    #: measured 1.5–1.8× faster at Q 600 / T 50 on a 2-core CPU than one batch of 100 pairs.
    cpu_chunk_pairs = 8

    def __init__(self, cfg: AmesConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.model_dim
        self.mtc_token = nn.Parameter(torch.empty(d))
        if cfg.binarized:
            self.remap_local = nn.Sequential(
                BinarizationLayer(cfg.local_dim, d), nn.Linear(d, d), LayerNorm(d, eps=cfg.layer_norm_eps)
            )
        else:
            self.remap_local = nn.Sequential(nn.Linear(cfg.local_dim, d), LayerNorm(d, eps=cfg.layer_norm_eps))
        self.decoder = AmesDecoder(cfg)
        self.classifier = nn.Linear(d, 1)

    def _match(self, s: torch.Tensor, q_mask: torch.Tensor, t: torch.Tensor, db_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B] of the remapped query tokens s [B,Q,E] against the database tokens t [B,T,E]; s [1,Q,E]
        and q_mask [1,Q]: one query against every database image, its first-layer rows computed once."""
        b = t.shape[0]
        xs = torch.cat([self.mtc_token.to(s.dtype).expand(s.shape[0], 1, -1), s], dim=1)
        x = torch.cat([xs.expand(b, -1, -1), t], dim=1)
        bias_s = torch.where(torch.cat([torch.ones_like(q_mask[:, :1]), ~q_mask], dim=1), 0.0, MASKED)
        bias_t = torch.where(~db_mask, 0.0, MASKED)
        bias = torch.cat([bias_s.expand(b, -1), bias_t], dim=1)
        q_len = s.shape[1]
        last = len(self.decoder.layers) - 1
        for i, layer in enumerate(self.decoder.layers):
            one = i == 0 and s.shape[0] == 1
            attn = cast(AmesLayer, layer).self_attn.one_query(xs, t, bias_s, bias_t) if one else None
            x = layer(x, q_len, bias, last=i == last, attn=attn)
        return self.classifier(x[:, 0]).squeeze(-1)


class Ames(AmesWeights):
    """`model(q_desc [B,Q,D], q_mask [B,Q], db_desc [B,T,D], db_mask [B,T]) → logits [B]`.

    Masks are bool, True = padding (column 3 of the official HDF5 files). The logit is raw: fuse it
    with the global similarity as λ·g + (1−λ)·sigmoid(γ·logit).
    """

    def check_inputs(self, q_desc, q_mask, db_desc, db_mask) -> None:
        """Shape, dtype and finiteness of the four inputs; raises InputError naming the culprit."""
        dim = self.config.local_dim
        check_float("q_desc", q_desc, ("B", "Q", dim))
        check_float("db_desc", db_desc, ("B", "T", dim))
        if db_desc.shape[0] != q_desc.shape[0]:
            raise InputError(f"db_desc: expected {q_desc.shape[0]} pairs (q_desc's B), got {db_desc.shape[0]}")
        check_nonempty("q_desc", q_desc.shape[1], "query descriptor (Q ≥ 1)")
        check_nonempty("db_desc", db_desc.shape[1], "database descriptor (T ≥ 1)")
        check_mask("q_mask", q_mask, q_desc.shape[:2])
        check_mask("db_mask", db_mask, db_desc.shape[:2])

    def forward(
        self, q_desc: torch.Tensor, q_mask: torch.Tensor, db_desc: torch.Tensor, db_mask: torch.Tensor
    ) -> torch.Tensor:
        if checking():
            self.check_inputs(q_desc, q_mask, db_desc, db_mask)
        if not tracing():
            c = self.cpu_chunk_pairs
            if q_desc.device.type == "cpu" and q_desc.shape[0] > c:
                parts = zip(q_desc.split(c), q_mask.split(c), db_desc.split(c), db_mask.split(c), strict=True)
                return torch.cat([self._logits(*part) for part in parts])
        return self._logits(q_desc, q_mask, db_desc, db_mask)

    def _logits(
        self, q_desc: torch.Tensor, q_mask: torch.Tensor, db_desc: torch.Tensor, db_mask: torch.Tensor
    ) -> torch.Tensor:
        s = self.remap_local(l2_normalize(q_desc))
        t = self.remap_local(l2_normalize(db_desc))
        if not self.config.binarized:
            t = t.to(torch.float16).to(t.dtype)  # the database side is stored as fp16 (§2.3 step 3)
        return self._match(s, q_mask, t, db_mask)


class AmesEncoder(AmesWeights):
    """`encoder(desc [N,T,D], mask [N,T]) → stored [N,T,E]`: what a database store keeps of an image, and
    what the scorer takes of the query. fp: the remapped tokens LN(W·L2N(x) + b) (the store rounds them to
    fp16); dist: the 128-bit sign codes, bool (True = +1). The same weights (and state_dict) as `Ames`;
    padded rows are encoded too (the mask travels beside them)."""

    def forward(self, desc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if checking():
            check_float("desc", desc, ("N", "T", self.config.local_dim))
            check_mask("mask", mask, desc.shape[:2])
        if self.config.binarized:
            return cast(BinarizationLayer, self.remap_local[0]).codes(desc)
        return self.remap_local(l2_normalize(desc))


class AmesScorer(AmesWeights):
    """`scorer(q [Q,E], q_mask [Q], db [P,T,E], db_mask [P,T]) → logits [P]`: one query, encoded once
    (`AmesEncoder`), against P stored database images; the query is broadcast inside, its first-layer rows
    computed once. fp: q float tokens, db fp16 tokens; dist: q and db bool codes. Equal to `Ames` on the
    descriptors they were encoded from."""

    def tokens(self, stored: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The remapped tokens of stored entries: fp16 tokens as they are, codes through remap_local.1/.2."""
        if not self.config.binarized:
            return stored.to(dtype)
        signs = torch.where(stored, 1.0, -1.0).to(dtype)
        return self.remap_local[2](self.remap_local[1](signs))

    def forward(self, q: torch.Tensor, q_mask: torch.Tensor, db: torch.Tensor, db_mask: torch.Tensor) -> torch.Tensor:
        dtype = self.mtc_token.dtype
        if checking():
            self._check_stored(q, q_mask, db, db_mask)
        s = self.tokens(q, dtype)
        if not tracing():
            c = self.cpu_chunk_pairs
            if db.device.type == "cpu" and db.shape[0] > c:
                return torch.cat([self._score(s, q_mask, d, m, dtype) for d, m in
                                  zip(db.split(c), db_mask.split(c), strict=True)])
        return self._score(s, q_mask, db, db_mask, dtype)

    def _score(self, s: torch.Tensor, q_mask: torch.Tensor, db: torch.Tensor, db_mask: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor:
        return self._match(s[None], q_mask[None], self.tokens(db, dtype), db_mask)

    def _check_stored(self, q, q_mask, db, db_mask) -> None:
        e = self.config.model_dim
        if self.config.binarized:
            for name, x, shape in (("q", q, f"[Q, {e}]"), ("db", db, f"[P, T, {e}]")):
                if not isinstance(x, torch.Tensor) or x.dtype != torch.bool or x.dim() != shape.count(",") + 1 \
                        or x.shape[-1] != e:
                    got = f"{x.dtype} {fmt_shape(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
                    raise InputError(f"{name}: expected bool codes of shape {shape}, got {got}")
        else:
            check_float("q", q, ("Q", e))
            check_float("db", db, ("P", "T", e))
        check_nonempty("q", q.shape[0], "query descriptor (Q ≥ 1)")
        check_nonempty("db", db.shape[1], "database descriptor (T ≥ 1)")
        check_mask("q_mask", q_mask, q.shape[:1])
        check_mask("db_mask", db_mask, db.shape[:2])


# --- registry hooks (see registry.ModelInfo.implementation) -------------------------------------

BACKBONES = {768: "DINOv2", 1024: "CVNet"}


def build(cfg: AmesConfig) -> Ames:
    return Ames(cfg)


def build_encoder(cfg: AmesConfig) -> AmesEncoder:
    return AmesEncoder(cfg)


def build_scorer(cfg: AmesConfig) -> AmesScorer:
    return AmesScorer(cfg)


def init_weights(model: Ames) -> None:
    """The training-time initialisation (§2.1): trunc-normal(0.02) Linears and matching token;
    an orthogonal projection stands in for the ITQ initialisation of the binariser's W."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, BlockAttention):
            nn.init.trunc_normal_(m.in_proj_weight, std=0.02)
            nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, BinarizationLayer):
            nn.init.orthogonal_(m.W)
    nn.init.trunc_normal_(model.mtc_token, std=0.02)


def config_from_state_dict(sd: dict) -> dict:
    """The configuration fields a checkpoint fixes: descriptor dimension, width, depth, FFN size."""
    if "remap_local.0.W" in sd:
        local_dim = sd["remap_local.0.W"].shape[0]
    else:
        local_dim = sd["remap_local.0.weight"].shape[1]
    num_layers = layer_count(sd, "decoder.layers.")
    return {
        "local_dim": int(local_dim),
        "model_dim": int(sd["mtc_token"].shape[0]),
        "num_layers": num_layers,
        "dim_feedforward": int(sd["decoder.layers.0.linear1.weight"].shape[0]),
    }


def identify(sd: dict) -> str | None:
    """'ames-dist (CVNet descriptors, local_dim 1024)' when `sd` is an AMES state_dict, else None."""
    if "mtc_token" not in sd or not any(k.startswith("remap_local.0.") for k in sd):
        return None
    name = "ames-dist" if "remap_local.0.W" in sd else "ames"
    if "decoder.layers.0.linear1.weight" not in sd:
        return name
    dim = config_from_state_dict(sd)["local_dim"]
    return f"{name} ({BACKBONES.get(dim, 'unknown')} descriptors, local_dim {dim})"
