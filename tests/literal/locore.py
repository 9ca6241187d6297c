"""LOCORE through Hugging Face's `LongformerModel`, as the released code runs it (reference §3.3–3.5).

Independent of rerankrt.models.locore: the sequence is assembled token by token in Python from the
text of §3.3, padded to a multiple of the attention window with `pad_embedding` (LOCORE's override of
`_pad_to_window_size`), and run through HF's Longformer with `attention_mask` and
`global_attention_mask`. Only the weights are shared, by name.
"""

from __future__ import annotations

import torch
from transformers import LongformerConfig, LongformerModel

PREFIX = "language_model.longformer."


class HFLocore:
    """`HFLocore(state_dict, num_heads, attention_window)(…same inputs as Locore…) → (max-end [B,K], token
    logits [B,L,2])`."""

    def __init__(self, sd: dict, num_heads: int, attention_window: int) -> None:
        hidden = sd[PREFIX + "sep_embedding"].shape[0]
        layers = sum(1 for k in sd if k.startswith(PREFIX + "encoder.layer.") and k.endswith("self.query.weight"))
        config = LongformerConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=num_heads,
            intermediate_size=sd[PREFIX + "encoder.layer.0.intermediate.dense.weight"].shape[0],
            hidden_act="gelu",
            attention_window=attention_window,
            max_position_embeddings=sd[PREFIX + "embeddings.position_embeddings.weight"].shape[0],
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            pad_token_id=1,
            vocab_size=4,
        )
        self.window = attention_window
        self.hf = LongformerModel(config, add_pooling_layer=False).eval()
        inner = {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
        self.sep, self.pad = inner.pop("sep_embedding"), inner.pop("pad_embedding")
        missing, unexpected = self.hf.load_state_dict(inner, strict=False)
        assert missing == ["embeddings.word_embeddings.weight"] and not unexpected, (missing, unexpected)
        self.scale = sd["scale_encoder.weight"]
        self.cls_w, self.cls_b = sd["language_model.classifier.weight"], sd["language_model.classifier.bias"]
        self.local_to_lm, self.global_to_lm = (
            (sd[f"{name}.weight"], sd[f"{name}.bias"]) if f"{name}.weight" in sd else None
            for name in ("local_to_lm", "global_to_lm")
        )

    def sequence(self, q_global, q_local, q_mask, g_global, g_local, g_mask, q_scale=None, g_scale=None):
        """One batch row at a time, token by token: embeddings [B, L, E], attention_mask, global mask."""
        batch, k, n = g_local.shape[:3]
        q_scale = torch.zeros(q_mask.shape, dtype=torch.long) if q_scale is None else q_scale
        g_scale = torch.zeros(g_mask.shape, dtype=torch.long) if g_scale is None else g_scale
        rows, masks, globals_ = [], [], []
        for b in range(batch):
            images = [(q_global[b], q_local[b], q_mask[b], q_scale[b])]
            images += [(g_global[b, i], g_local[b, i], g_mask[b, i], g_scale[b, i]) for i in range(k)]
            tokens, attention, glob = [], [], []
            for image, (gl, loc, pad, scale) in enumerate(images):
                tokens.append(self._project(gl, self.global_to_lm))  # GLOBAL, no scale embedding
                attention.append(1)
                glob.append(1 if image == 0 else 0)
                for j in range(n):
                    tokens.append(self._project(loc[j], self.local_to_lm) + self.scale[scale[j]])
                    attention.append(0 if pad[j] else 1)
                    glob.append(1 if image == 0 else 0)  # query_global_attention=True
                tokens.append(self.sep)
                attention.append(1)
                glob.append(1)
            rows.append(torch.stack(tokens))
            masks.append(attention)
            globals_.append(glob)
        return rows, masks, globals_

    @staticmethod
    def _project(x, proj):
        return x if proj is None else x @ proj[0].T + proj[1]

    def prepare(self, *inputs, **scales) -> dict:
        """HF's inputs: the sequence padded with `pad_embedding` to a multiple of the window."""
        rows, masks, globals_ = self.sequence(*inputs, **scales)
        length = len(masks[0])
        padded = -(-length // self.window) * self.window
        return {
            "inputs_embeds": torch.stack([torch.cat([r, self.pad.expand(padded - length, -1)]) for r in rows]),
            "attention_mask": torch.tensor([m + [0] * (padded - length) for m in masks]),
            "global_attention_mask": torch.tensor([g + [0] * (padded - length) for g in globals_]),
        }

    def token_logits(self, feeds: dict, length: int) -> torch.Tensor:
        """The released forward on prepared inputs: Longformer, classifier, un-padded → [B, L, 2]."""
        with torch.no_grad():
            hidden = self.hf(**feeds).last_hidden_state[:, :length]
            return hidden @ self.cls_w.T + self.cls_b

    def __call__(self, *inputs, **scales):
        batch, k, n = inputs[4].shape[:3]
        logits = self.token_logits(self.prepare(*inputs, **scales), (k + 1) * (n + 2))
        raw = logits[..., 1].reshape(batch, k + 1, n + 2)[:, 1:, :-1]  # drop the query block and SEPs
        return raw[:, :, n], logits  # max-end: the last local token (index 48 of 49 at n = 48)
