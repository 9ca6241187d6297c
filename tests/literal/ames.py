"""Literal AMES written from reference/models.md §2.3, independent of rerankrt.models.ames.

`per_pair`: one pair at a time, masks built by slice writes as the published code does, attention
written out head by head. `published_style`: batched `nn.MultiheadAttention` with the two dense
(1+Q+T)² boolean masks and a key-padding mask, which is how the published code computes.
Both read the weights from a state_dict with the released key names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HEADS = 2


def _remap(sd: dict, x: torch.Tensor, binarized: bool) -> torch.Tensor:
    if binarized:
        code = torch.sign(F.normalize(x, dim=-1) @ sd["remap_local.0.W"])
        y = code @ sd["remap_local.1.weight"].T + sd["remap_local.1.bias"]
        return F.layer_norm(y, (y.shape[-1],), sd["remap_local.2.weight"], sd["remap_local.2.bias"])
    y = x @ sd["remap_local.0.weight"].T + sd["remap_local.0.bias"]
    return F.layer_norm(y, (y.shape[-1],), sd["remap_local.1.weight"], sd["remap_local.1.bias"])


def _masks(q: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(intra, inter) masks, True = blocked, written by slices into zero [L, L] tensors."""
    n = 1 + q + t
    intra = torch.zeros(n, n, dtype=torch.bool)
    intra[1 : q + 1, q + 1 :] = True
    intra[q + 1 :, 1 : q + 1] = True
    inter = torch.zeros(n, n, dtype=torch.bool)
    inter[1 : q + 1, 1 : q + 1] = True
    inter[q + 1 :, q + 1 :] = True
    return intra, inter


def _mha(sd: dict, prefix: str, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """x [L, E], blocked [L, L] (True = not allowed) → [L, E], head by head."""
    e = x.shape[-1]
    qkv = x @ sd[prefix + "in_proj_weight"].T + sd[prefix + "in_proj_bias"]
    q, k, v = qkv[:, :e], qkv[:, e : 2 * e], qkv[:, 2 * e :]
    d = e // HEADS
    heads = []
    for h in range(HEADS):
        cols = slice(h * d, (h + 1) * d)
        scores = (q[:, cols] @ k[:, cols].T) / d**0.5
        scores = scores.masked_fill(blocked, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v[:, cols])
    return torch.cat(heads, dim=-1) @ sd[prefix + "out_proj.weight"].T + sd[prefix + "out_proj.bias"]


def _ln(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[prefix + "weight"], sd[prefix + "bias"], eps=1e-5)


def per_pair(sd: dict, q_desc, q_mask, db_desc, db_mask, binarized: bool) -> torch.Tensor:
    num_layers = sum(1 for k in sd if k.endswith(".norm1.weight"))
    logits = []
    for b in range(q_desc.shape[0]):
        s = _remap(sd, F.normalize(q_desc[b], dim=-1), binarized)
        t = _remap(sd, F.normalize(db_desc[b], dim=-1), binarized)
        if not binarized:
            t = t.half().float()
        x = torch.cat([sd["mtc_token"][None], s, t])
        pad = torch.cat([torch.zeros(1, dtype=torch.bool), q_mask[b], db_mask[b]])
        intra, inter = _masks(s.shape[0], t.shape[0])
        for i in range(num_layers):
            p = f"decoder.layers.{i}."
            x = _ln(sd, p + "norm1.", x + _mha(sd, p + "self_attn.", x, intra | pad[None, :]))
            x = _ln(sd, p + "norm2.", x + _mha(sd, p + "cross_attn.", x, inter | pad[None, :]))
            ffn = F.relu(x @ sd[p + "linear1.weight"].T + sd[p + "linear1.bias"])
            x = _ln(sd, p + "norm3.", x + ffn @ sd[p + "linear2.weight"].T + sd[p + "linear2.bias"])
        logits.append(x[0] @ sd["classifier.weight"][0] + sd["classifier.bias"][0])
    return torch.stack(logits)


class PublishedStyle(torch.nn.Module):
    """Batched dense computation with `nn.MultiheadAttention`, as the published code runs it."""

    def __init__(self, sd: dict, binarized: bool) -> None:
        super().__init__()
        self.sd, self.binarized = sd, binarized
        self.num_layers = sum(1 for k in sd if k.endswith(".norm1.weight"))
        self.attn = torch.nn.ModuleDict()
        for i in range(self.num_layers):
            for kind in ("self_attn", "cross_attn"):
                mha = torch.nn.MultiheadAttention(128, HEADS, batch_first=True)
                p = f"decoder.layers.{i}.{kind}."
                mha.load_state_dict({k[len(p):]: v for k, v in sd.items() if k.startswith(p)})
                self.attn[f"{i}_{kind}"] = mha
        self.eval()

    @torch.no_grad()
    def forward(self, q_desc, q_mask, db_desc, db_mask) -> torch.Tensor:
        sd = self.sd
        s = _remap(sd, F.normalize(q_desc, dim=-1), self.binarized)
        t = _remap(sd, F.normalize(db_desc, dim=-1), self.binarized)
        if not self.binarized:
            t = t.half().float()
        b = s.shape[0]
        x = torch.cat([sd["mtc_token"].expand(b, 1, -1), s, t], dim=1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool), q_mask, db_mask], dim=1)
        intra, inter = _masks(s.shape[1], t.shape[1])
        for i in range(self.num_layers):
            p = f"decoder.layers.{i}."
            sa = self.attn[f"{i}_self_attn"](x, x, x, attn_mask=intra, key_padding_mask=pad, need_weights=False)
            x = _ln(sd, p + "norm1.", x + sa[0])
            ca = self.attn[f"{i}_cross_attn"](x, x, x, attn_mask=inter, key_padding_mask=pad, need_weights=False)
            x = _ln(sd, p + "norm2.", x + ca[0])
            ffn = F.relu(x @ sd[p + "linear1.weight"].T + sd[p + "linear1.bias"])
            x = _ln(sd, p + "norm3.", x + ffn @ sd[p + "linear2.weight"].T + sd[p + "linear2.bias"])
        return x[:, 0] @ sd["classifier.weight"][0] + sd["classifier.bias"][0]
