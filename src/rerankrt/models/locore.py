"""LOCORE: list-wise long-context re-ranker (reference/models.md §3), state_dict-compatible with the
released `model.safetensors`.

The released model runs Hugging Face's Longformer, whose attention (as_strided chunks, nonzero, .item(),
scatter) neither exports to ONNX/TensorRT nor avoids wasted work. LOCORE's layout is static for a
given number of gallery images K and descriptors n: the sequence is K+1 blocks of n+2 tokens
`[GLOBAL, L1 … Ln, SEP]`, and the global tokens are at fixed places (the query's GLOBAL and locals,
every SEP). So attention is written here as

- **band attention in static tiles**: the sequence is cut into tiles of `tile` tokens; each tile's
  queries see the keys from `w/2` before the tile to `w/2` after it (slices of the key tensor, no
  gathers), masked by a constant band pattern and the key padding/global bias;
- **global keys by slicing**: the first n+1 tokens and the SEP column of the [K+1, n+2] block view;
- **global rows** (the same tokens) through the `*_global` projections over every token, written back
  by concatenation.

Scores grow linearly in K (tile × (tile + w) per tile plus G = n+K+2 global keys per row), never L×L.
Only the K scored tokens reach the classifier, so the last layer computes their rows alone (no global
rows, no feed-forward elsewhere) unless the token logits are asked for.
Softmax is an FP32 island, masks are fp32-finite and combined with `where`, every row sees the query's
GLOBAL token, so no row is fully masked. Padded rows produce a zero attention output, as in HF.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rerankrt.core.errors import CheckpointError, InputError
from rerankrt.models.attention import MASKED, attend
from rerankrt.models.cards.locore import LocoreConfig
from rerankrt.models.checks import check_float, check_mask, check_nonempty, checking
from rerankrt.models.fp32 import LayerNorm
from rerankrt.models.loading import layer_count as count_layers


class Embeddings(nn.Module):
    """RoBERTa embeddings without the word table: LN(token + position + token type 0)."""

    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(1, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        # HF derives position ids padding_idx + 1 … = 2 … L+1 from inputs_embeds.
        pos = self.position_embeddings.weight[2 : n + 2].to(tokens.dtype)
        return self.LayerNorm(tokens + pos + self.token_type_embeddings.weight.to(tokens.dtype))


class Layout:
    """Where the tokens of one forward sit: K+1 blocks of `b = n+2` tokens, L = (K+1)·b.

    Global tokens: the first n+1 (query GLOBAL and locals) and every block's SEP (column n+1).
    """

    def __init__(self, images: int, block: int) -> None:
        self.images, self.block, self.length = images, block, images * block
        self.num_global = block - 1 + images

    def global_rows(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The G global tokens of `x` along `dim` (the sequence axis), query tokens first."""
        blocks = x.unflatten(dim, (self.images, self.block))
        return torch.cat([x.narrow(dim, 0, self.block - 1), blocks.select(dim + 1, self.block - 1)], dim=dim)

    def is_global(self, device: torch.device) -> torch.Tensor:
        """[L] bool: which tokens attend globally (shape-derived, so it traces with a dynamic K)."""
        col = torch.arange(self.block, device=device)
        first = torch.arange(self.images, device=device) == 0
        return ((col == self.block - 1)[None, :] | (first[:, None] & (col < self.block - 1)[None, :])).flatten()

    def scored(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The K scored tokens along `dim`: each gallery image's last local token (`max-end`)."""
        blocks = x.unflatten(dim, (self.images, self.block))
        return blocks.narrow(dim, 1, self.images - 1).select(dim + 1, self.block - 2)

    def scatter_global(self, local_out: torch.Tensor, global_out: torch.Tensor) -> torch.Tensor:
        """`local_out` [B, L, E] with the global rows replaced by `global_out` [B, G, E]."""
        blocks = local_out.unflatten(1, (self.images, self.block))
        n1 = self.block - 1
        locals_ = torch.cat([global_out[:, None, :n1], blocks[:, 1:, :n1]], dim=1)
        return torch.cat([locals_, global_out[:, n1:, None]], dim=2).flatten(1, 2)


class SelfAttention(nn.Module):
    """Longformer self-attention (§3.4) as static tiled band attention plus global attention."""

    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        e = cfg.hidden_size
        self.heads = cfg.heads
        self.one_sided = cfg.attention_window // 2
        self.tile = tile_size(cfg.attention_window)
        self.query, self.key, self.value = nn.Linear(e, e), nn.Linear(e, e), nn.Linear(e, e)
        self.query_global, self.key_global, self.value_global = nn.Linear(e, e), nn.Linear(e, e), nn.Linear(e, e)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[..., N, E] → [..., h, N, d]."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, band_key_ok: torch.Tensor, layout: Layout, scores_only: bool
    ) -> torch.Tensor:
        """x [B, L, E]; valid [B, L] non-padding; band_key_ok [B, L] non-padding and not global.

        → [B, L, E], or with `scores_only` [B, K, E] for the scored tokens alone (no global rows).
        """
        b, length, e = x.shape
        scale = (e // self.heads) ** -0.5
        q, k, v = self.query(x) * scale, self.key(x), self.value(x)

        # Local rows, tile by tile: one softmax over [G global keys ; the tile's band of c + 2r keys].
        # Tiles go to the batch axis ([B·T, h, c, d]) so that SDPA runs its fused CPU kernel.
        c, r = self.tile, self.one_sided
        tiles = (length + c - 1) // c  # not -(-a // b): ONNX Div truncates negative integers
        pad = tiles * c - length
        qt = F.pad(q, (0, 0, 0, pad)).unflatten(1, (tiles, c))  # [B, T, c, E]
        keys, values = (
            torch.cat([layout.global_rows(t, 1)[:, None].expand(-1, tiles, -1, -1),
                       self._windows(F.pad(t, (0, 0, r, pad + r)), tiles)], dim=2)  # [B, T, G + c + 2r, E]
            for t in (k, v)
        )
        key_ok = self._windows(F.pad(band_key_ok, (r, pad + r)), tiles)  # [B, T, c + 2r]
        band_bias = torch.where(band_pattern(c, r, x.device) & key_ok[:, :, None, :], 0.0, MASKED)
        glob_bias = torch.where(layout.global_rows(valid, 1), 0.0, MASKED)[:, None, None, :]
        bias = torch.cat([glob_bias.expand(-1, tiles, c, -1), band_bias], dim=-1)  # [B, T, c, G + c + 2r]
        qt, keys, values = (self._heads(t).flatten(0, 1) for t in (qt, keys, values))  # [B·T, h, ·, d]
        local = attend(qt, keys, values, bias.flatten(0, 1)[:, None])
        local = local.unflatten(0, (b, tiles)).transpose(2, 3).flatten(3).flatten(1, 2)[:, :length]  # [B, L, E]
        if scores_only:
            return torch.where(layout.scored(valid, 1)[..., None], layout.scored(local, 1), 0.0)

        # Global rows: their own projections, over every non-padding token.
        q_g = self._heads(self.query_global(layout.global_rows(x, 1))) * scale
        k_all, v_all = self._heads(self.key_global(x)), self._heads(self.value_global(x))
        glob = attend(q_g, k_all, v_all, torch.where(valid, 0.0, MASKED)[:, None, None, :])

        out = layout.scatter_global(local, glob.transpose(1, 2).flatten(2))
        return torch.where(valid[..., None], out, 0.0)  # HF zeroes the probabilities of padded rows

    def _windows(self, x: torch.Tensor, tiles: int) -> torch.Tensor:
        """Each tile's keys by slicing: x [B, r + T·c + r, …] → [B, T, c + 2r, …]."""
        c, r = self.tile, self.one_sided
        parts = [x.narrow(1, i * c, tiles * c).unflatten(1, (tiles, c)) for i in range(2 * r // c + 1)]
        return torch.cat(parts, dim=2)


def tile_size(attention_window: int) -> int:
    """Query tile of the band attention: w/2 (each tile's keys then span 3 tiles, 1.5× the band)."""
    return attention_window // 2


def band_pattern(tile: int, one_sided: int, device: torch.device) -> torch.Tensor:
    """[tile, tile + 2r] bool: query a of a tile sees window key j iff |(j − r) − a| ≤ r."""
    a = torch.arange(tile, device=device)[:, None]
    j = torch.arange(tile + 2 * one_sided, device=device)[None, :]
    return (j - one_sided - a).abs() <= one_sided


class AttentionOutput(nn.Module):
    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class Attention(nn.Module):
    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = AttentionOutput(cfg)


class Intermediate(nn.Module):
    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)


class Output(nn.Module):
    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class Layer(nn.Module):
    """Post-LN BERT layer: X = LN(X + Wo·attn); X = LN(X + W2·gelu(W1·X))."""

    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = Output(cfg)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, band_key_ok: torch.Tensor, layout: Layout, scores_only: bool = False
    ) -> torch.Tensor:
        """[B, L, E] → [B, L, E]; with `scores_only` → [B, K, E], the scored tokens only (a last layer)."""
        att = self.attention
        attended = att.self(x, valid, band_key_ok, layout, scores_only)
        x = att.output.LayerNorm((layout.scored(x, 1) if scores_only else x) + att.output.dense(attended))
        return self.output.LayerNorm(x + self.output.dense(F.gelu(self.intermediate.dense(x))))


class Encoder(nn.Module):
    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))


class Longformer(nn.Module):
    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.sep_embedding = nn.Parameter(torch.empty(cfg.hidden_size))
        #: HF pads the sequence to a multiple of the window with this token; the tiles here pad with
        #: masked keys instead (exact). Kept for checkpoint compatibility.
        self.pad_embedding = nn.Parameter(torch.empty(cfg.hidden_size))
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)


class LanguageModel(nn.Module):
    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        self.longformer = Longformer(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, 2)


class Locore(nn.Module):
    """`model(q_global [B,D], q_local [B,n,D], q_mask [B,n], g_global [B,K,D], g_local [B,K,n,D],
    g_mask [B,K,n]) → [B,K]`: the raw class-1 logit of each gallery image's last local token (the
    released `max-end` score). Masks are bool, True = padding.

    `q_scale [B,n]` / `g_scale [B,K,n]` (int64 scale indices, DINOv2: all 0) default to 0.
    `token_logits=True` returns the logits of every token `[B, L, 2]`, L = (K+1)(n+2), from which the
    other published aggregations (max-start, max-sum, max-prod) are computed.
    """

    def __init__(self, cfg: LocoreConfig) -> None:
        super().__init__()
        if cfg.attention_window <= 0 or cfg.attention_window % 2:
            raise ValueError(f"attention_window: expected a positive even number, got {cfg.attention_window}")
        if cfg.hidden_size % cfg.heads:
            raise ValueError(f"num_heads: {cfg.heads} does not divide hidden_size {cfg.hidden_size}")
        self.config = cfg
        e = cfg.hidden_size
        self.scale_encoder = nn.Embedding(cfg.num_scales, e)
        self.local_to_lm = nn.Linear(cfg.local_dim, e) if cfg.local_dim != e else nn.Identity()
        self.global_to_lm = nn.Linear(cfg.global_dim, e) if cfg.global_dim != e else nn.Identity()
        self.language_model = LanguageModel(cfg)

    def check_inputs(self, q_global, q_local, q_mask, g_global, g_local, g_mask, q_scale, g_scale) -> None:
        cfg = self.config
        check_float("q_global", q_global, ("B", cfg.global_dim))
        check_float("q_local", q_local, ("B", "n", cfg.local_dim))
        check_nonempty("q_local", q_local.shape[1], "local descriptor (n ≥ 1)")
        b, n = q_local.shape[:2]
        check_float("g_global", g_global, ("B", "K", cfg.global_dim))
        check_nonempty("g_global", g_global.shape[1], "gallery image (K ≥ 1)")
        k = g_global.shape[1]
        check_float("g_local", g_local, ("B", "K", n, cfg.local_dim))
        for name, x in (("q_global", q_global), ("g_global", g_global), ("g_local", g_local)):
            if x.shape[0] != b:
                raise InputError(f"{name}: expected batch {b} (q_local's B), got {x.shape[0]}")
        if g_local.shape[1] != k:
            raise InputError(f"g_local: expected {k} gallery images (g_global's K), got {g_local.shape[1]}")
        check_mask("q_mask", q_mask, q_local.shape[:2])
        check_mask("g_mask", g_mask, g_local.shape[:3])
        for name, s, shape in (("q_scale", q_scale, q_mask.shape), ("g_scale", g_scale, g_mask.shape)):
            if s is None:
                continue
            if s.dtype != torch.int64 or s.shape != shape:
                raise InputError(f"{name}: expected int64 scale indices of shape {list(shape)}, "
                                 f"got {s.dtype} {list(s.shape)}")
            if ((s < 0) | (s >= cfg.num_scales)).any():
                raise InputError(f"{name}: scale indices must lie in [0, {cfg.num_scales}), "
                                 f"got {int(s.min())} … {int(s.max())}")
        length = (k + 1) * (n + 2)
        if length + 2 > cfg.max_positions:
            raise InputError(
                f"g_global: K={k} gallery images of {n} descriptors make {length} tokens; the position table "
                f"holds {cfg.max_positions - 2} (at most K={(cfg.max_positions - 2) // (n + 2) - 1})"
            )

    def forward(
        self,
        q_global: torch.Tensor,
        q_local: torch.Tensor,
        q_mask: torch.Tensor,
        g_global: torch.Tensor,
        g_local: torch.Tensor,
        g_mask: torch.Tensor,
        q_scale: torch.Tensor | None = None,
        g_scale: torch.Tensor | None = None,
        token_logits: bool = False,
    ) -> torch.Tensor:
        if checking():
            self.check_inputs(q_global, q_local, q_mask, g_global, g_local, g_mask, q_scale, g_scale)
        lm = self.language_model
        b, k, n = g_local.shape[:3]
        layout = Layout(k + 1, n + 2)
        scales = self.scale_encoder.weight.to(q_local.dtype)
        # Lk = desc_k + scale_encoder[scale_k]; scale index 0 unless given.
        q_loc = self.local_to_lm(q_local) + (scales[0] if q_scale is None else scales[q_scale])
        g_loc = self.local_to_lm(g_local) + (scales[0] if g_scale is None else scales[g_scale])
        locals_ = torch.cat([q_loc[:, None], g_loc], dim=1)  # [B, K+1, n, E]
        globals_ = self.global_to_lm(torch.cat([q_global[:, None], g_global], dim=1))  # [B, K+1, E]
        sep = lm.longformer.sep_embedding.to(locals_.dtype).expand(b, k + 1, 1, -1)
        tokens = torch.cat([globals_[:, :, None], locals_, sep], dim=2).flatten(1, 2)  # [B, L, E]

        pad = torch.cat([q_mask[:, None], g_mask], dim=1)  # [B, K+1, n]
        edge = torch.zeros_like(pad[..., :1])
        valid = ~torch.cat([edge, pad, edge], dim=2).flatten(1)  # [B, L]
        band_key_ok = valid & ~layout.is_global(valid.device)

        x = lm.longformer.embeddings(tokens)
        *layers, last = lm.longformer.encoder.layer
        for layer in layers:
            x = layer(x, valid, band_key_ok, layout)
        if token_logits:
            return lm.classifier(last(x, valid, band_key_ok, layout))
        # Only the scored tokens reach the classifier: the last layer computes their rows alone.
        return lm.classifier(last(x, valid, band_key_ok, layout, scores_only=True))[..., 1]


# --- registry hooks (see registry.ModelInfo.implementation) -------------------------------------

_PREFIX = "language_model.longformer."


def build(cfg: LocoreConfig) -> Locore:
    return Locore(cfg)


def init_weights(model: Locore) -> None:
    """BERT's initialisation: normal(0.02) weights and embeddings, zero biases, unit LayerNorms."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    lf = model.language_model.longformer
    nn.init.normal_(lf.sep_embedding, std=0.02)
    nn.init.normal_(lf.pad_embedding, std=0.02)


def layer_count(sd: dict) -> int:
    return count_layers(sd, _PREFIX + "encoder.layer.")


def config_from_state_dict(sd: dict) -> dict:
    """Depth, width, FFN size, position table, scales and descriptor dimensions."""
    hidden = int(sd[_PREFIX + "sep_embedding"].shape[0])
    return {
        "num_layers": layer_count(sd),
        "hidden_size": hidden,
        "intermediate_size": int(sd[_PREFIX + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "max_positions": int(sd[_PREFIX + "embeddings.position_embeddings.weight"].shape[0]),
        "num_scales": int(sd["scale_encoder.weight"].shape[0]),
        "local_dim": int(sd["local_to_lm.weight"].shape[1]) if "local_to_lm.weight" in sd else hidden,
        "global_dim": int(sd["global_to_lm.weight"].shape[1]) if "global_to_lm.weight" in sd else hidden,
    }


def prepare_state_dict(sd: dict, cfg: LocoreConfig, path: object) -> dict:
    """Keep the first `cfg.keep_layers` layers, as the released evaluation builds LOCORE-small
    (`num_layers_kept=6`) from the base checkpoint."""
    if cfg.keep_layers is None or "scale_encoder.weight" not in sd:
        return sd
    layers = layer_count(sd)
    if layers < cfg.keep_layers:
        raise CheckpointError(
            f"checkpoint {path} has {layers} layers; keep_layers={cfg.keep_layers} needs at least as many"
        )
    drop = tuple(f"{_PREFIX}encoder.layer.{i}." for i in range(cfg.keep_layers, layers))
    return {k: v for k, v in sd.items() if not k.startswith(drop)} if drop else sd


def identify(sd: dict) -> str | None:
    """'locore (12 layers, hidden 768)' when `sd` is a LOCORE state_dict, else None."""
    if "scale_encoder.weight" not in sd or _PREFIX + "sep_embedding" not in sd:
        return None
    layers = layer_count(sd)
    name = "locore-small" if layers == 6 else "locore"
    return f"{name} ({layers} layers, hidden {sd[_PREFIX + 'sep_embedding'].shape[0]})"
