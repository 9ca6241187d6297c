"""`locore-hf`: the official LOCORE path as a profiler baseline, Hugging Face's `LongformerModel` with the
same weights as rerankrt's LOCORE, so that the table shows what rerankrt's static tiled attention saves.

The released code assembles the sequence (per image: GLOBAL, the locals with their scale embedding, SEP),
pads it with `pad_embedding` to a multiple of the attention window, marks the query block and every SEP
for global attention, runs the Longformer and reads the class-1 logit of each gallery image's last local
token. This backend does the same with vectorised tensor ops and is timed end to end from the six
descriptor tensors, like rerankrt's backends. It needs `transformers` (`pip install 'rerankrt[hf]'`).
"""

from __future__ import annotations

import numpy as np

from rerankrt.core.optional import require
from rerankrt.models import MODELS
from rerankrt.models.torch_backend import TorchBackend

#: profiler name → the registered model whose published code path it times (its card's `published_path`)
HF_BASELINES = {info.published_path: name for name, info in MODELS.items() if info.published_path}
_PREFIX = "language_model.longformer."


class HfLocoreBackend(TorchBackend):
    """The backend contract over HF's Longformer on `device`, with the weights and configuration of
    rerankrt's LOCORE model `model` (feeds, checks and description are the torch backend's)."""

    def __init__(self, model: str = "locore", device: str = "cpu", dtype: str = "float32", **config) -> None:
        super().__init__(model, device=device, dtype=dtype, **config)
        self.name = f"torch-hf-{device}-{dtype}"
        self.hf = None

    def open(self) -> None:
        import torch

        from rerankrt.models import load_model

        transformers = require("transformers", "hf", "locore-hf (Hugging Face's Longformer)")
        ours = load_model(self.model_name, self.checkpoint, **self.overrides)  # the weights to run
        cfg, sd = ours.config, ours.state_dict()
        self.set_meta(self._meta(cfg), self.precision)
        hf_config = transformers.LongformerConfig(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.heads,
            intermediate_size=cfg.intermediate_size, hidden_act="gelu", attention_window=cfg.attention_window,
            max_position_embeddings=cfg.max_positions, type_vocab_size=1, layer_norm_eps=cfg.layer_norm_eps,
            pad_token_id=1, vocab_size=4)
        hf = transformers.LongformerModel(hf_config, add_pooling_layer=False).eval()
        inner = {k.removeprefix(_PREFIX): v for k, v in sd.items() if k.startswith(_PREFIX)}
        self.sep, self.pad = inner.pop("sep_embedding"), inner.pop("pad_embedding")
        missing, unexpected = hf.load_state_dict(inner, strict=False)
        if missing != ["embeddings.word_embeddings.weight"] or unexpected:  # LOCORE has no word embeddings
            raise RuntimeError(f"locore-hf: the weights do not map onto transformers {transformers.__version__}'s "
                               f"Longformer: missing {missing}, unexpected {unexpected}")
        dtype = getattr(torch, self.dtype)
        self.hf = hf.to(self.device, dtype)
        params = {k: v.to(self.device, dtype) for k, v in sd.items()}
        self.sep, self.pad = self.sep.to(self.device, dtype), self.pad.to(self.device, dtype)
        self.scale0 = params["scale_encoder.weight"][0]
        self.classifier = params["language_model.classifier.weight"][1], params["language_model.classifier.bias"][1]
        self.local_to_lm, self.global_to_lm = (
            (params[f"{n}.weight"], params[f"{n}.bias"]) if f"{n}.weight" in params else None
            for n in ("local_to_lm", "global_to_lm"))
        self.window = cfg.attention_window

    def close(self) -> None:
        super().close()
        self.hf = None

    def weight_bytes(self) -> int | None:
        if self.hf is None:
            return None
        return sum(t.numel() * t.element_size() for t in (*self.hf.parameters(), *self.hf.buffers()))

    def infer_impl(self, feeds: dict) -> dict[str, np.ndarray]:
        import torch

        t = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        with torch.inference_mode():
            return {"scores": self.scores(**t).float().cpu().numpy()}

    def scores(self, q_global, q_local, q_mask, g_global, g_local, g_mask):
        import torch

        def project(x, proj):
            return x if proj is None else x @ proj[0].T + proj[1]

        b, k, n = g_local.shape[:3]
        globals_ = project(torch.cat([q_global[:, None], g_global], dim=1), self.global_to_lm)  # [B, K+1, E]
        locals_ = project(torch.cat([q_local[:, None], g_local], dim=1), self.local_to_lm) + self.scale0
        e = globals_.shape[-1]
        blocks = torch.cat([globals_[:, :, None], locals_, self.sep.expand(b, k + 1, 1, e)], dim=2)
        length = (k + 1) * (n + 2)
        padded = -(-length // self.window) * self.window
        embeds = torch.cat([blocks.reshape(b, length, e), self.pad.expand(b, padded - length, e)], dim=1)
        pad = torch.cat([q_mask[:, None], g_mask], dim=1)  # [B, K+1, n], True = padding
        ones = torch.ones(b, k + 1, 1, dtype=torch.long, device=embeds.device)
        attention = torch.cat([ones, (~pad).long(), ones], dim=2).reshape(b, length)
        glob = torch.zeros(b, k + 1, n + 2, dtype=torch.long, device=embeds.device)
        glob[:, 0] = 1  # the query block
        glob[:, :, -1] = 1  # every SEP
        tail = torch.zeros(b, padded - length, dtype=torch.long, device=embeds.device)
        hidden = self.hf(inputs_embeds=embeds, attention_mask=torch.cat([attention, tail], dim=1),
                         global_attention_mask=torch.cat([glob.reshape(b, length), tail], dim=1)).last_hidden_state
        ends = hidden[:, :length].reshape(b, k + 1, n + 2, e)[:, 1:, n]  # each gallery image's last local
        return ends @ self.classifier[0] + self.classifier[1]
