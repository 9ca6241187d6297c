"""Literal R2Former re-ranker from pairwise-rerankers.md §3, written the way the original computes it:
the full (B, L, L, 7) correspondence tensor, full argsorts keeping 5, the sin-cos embedding with an
einsum, timm-style blocks from the state_dict. Independent of rerankrt.models.r2former."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """MAE's 2-D sin-cos embedding of pos [N, 2]: dim/2 for pos[:, 0], then dim/2 for pos[:, 1]."""
    def one_d(p, d):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = torch.einsum("m,d->md", p.double(), omega)
        return torch.cat([out.sin(), out.cos()], dim=1)
    return torch.cat([one_d(pos[:, 0], dim // 2), one_d(pos[:, 1], dim // 2)], dim=1).to(pos.dtype)


def block(sd: dict, p: str, x: torch.Tensor, heads: int = 4) -> torch.Tensor:
    b, n, c = x.shape
    h = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
    qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).reshape(b, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
    a = (attn @ v).transpose(1, 2).reshape(b, n, c)
    x = x + F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    h = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
    h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                 sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x + h


def literal_r2former(sd: dict, query: torch.Tensor, db: torch.Tensor, k: int = 5) -> torch.Tensor:
    b, lq, _ = query.shape
    ld = db.shape[1]
    d = sd["cls_token"].shape[-1]
    corr = F.normalize(query[..., 3:], dim=-1) @ F.normalize(db[..., 3:], dim=-1).transpose(1, 2)
    full = torch.cat([query[:, :, None, :3].expand(b, lq, ld, 3).clamp(0, 1),
                      db[:, None, :, :3].expand(b, lq, ld, 3).clamp(0, 1), corr[..., None]], dim=-1)
    by_db = torch.argsort(corr, dim=2, descending=True)[:, :, :k]  # each query token's best db tokens
    sel_q = torch.gather(full, 2, by_db[..., None].expand(b, lq, k, 7))
    by_q = torch.argsort(corr, dim=1, descending=True)[:, :k, :]  # each db token's best query tokens
    sel_d = torch.gather(full, 1, by_q[..., None].expand(b, k, ld, 7)).permute(0, 2, 1, 3)
    anchors = torch.cat([sel_q, sel_d], dim=1)  # [B, A, k, 7]
    a = anchors.shape[1]
    x = F.linear(anchors, sd["pair_head.weight"], sd["pair_head.bias"])
    x = x + sincos(anchors[..., 3:5].reshape(-1, 2), d).reshape(b, a, k, d)
    x = torch.cat([sd["cls_token_2"].expand(b * a, 1, d), x.reshape(b * a, k, d)], dim=1)
    for i in range(sum(1 for key in sd if key.startswith("blocks_2.") and key.endswith("norm1.weight"))):
        x = block(sd, f"blocks_2.{i}.", x)
    x = F.layer_norm(x, (d,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], eps=1e-6)[:, 0].reshape(b, a, d)
    own = torch.cat([anchors[:, :lq, 0, 0:2], anchors[:, lq:, 0, 3:5]], dim=1)
    x = F.linear(x, sd["pair_head_2.weight"], sd["pair_head_2.bias"]) + sincos(own.reshape(-1, 2), d).reshape(b, a, d)
    x = torch.cat([sd["cls_token"].expand(b, 1, d), x], dim=1)
    for i in range(sum(1 for key in sd if key.startswith("blocks.") and key.endswith("norm1.weight"))):
        x = block(sd, f"blocks.{i}.", x)
    x = F.layer_norm(x, (d,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], eps=1e-6)
    return F.linear(x[:, 0], sd["decoder_pred.weight"], sd["decoder_pred.bias"])
