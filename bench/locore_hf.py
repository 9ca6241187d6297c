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

from rerankrt.errors import UnavailableError
from rerankrt.runtime.backends import FeedChecker, IOSpec


def transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


#: profiler name → the rerankrt model whose weights and configuration it runs
HF_BASELINES = {"locore-hf": "locore", "locore-small-hf": "locore-small"}
_PREFIX = "language_model.longformer."


class HfLocoreBackend:
    """The backend contract (`input_specs`, `check`, `infer`) over HF's Longformer on `device`."""

    def __init__(self, model: str = "locore", device: str = "cpu", dtype: str = "float32", **config) -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype: expected float32 or float16, got {dtype!r}")
        self.model_name, self.device, self.dtype, self.config = model, device, dtype, config
        self.name = f"torch-hf-{device}-{dtype}"
        self.hf = None

    def __enter__(self) -> HfLocoreBackend:
        import torch

        try:
            from transformers import LongformerConfig, LongformerModel
        except ImportError as e:
            raise UnavailableError(f"locore-hf needs Hugging Face transformers ({e}); pip install 'rerankrt[hf]'") \
                from None
        from rerankrt.export.specs import spec_for
        from rerankrt.models import load_model

        ours = load_model(self.model_name, **self.config)
        cfg, sd = ours.config, ours.state_dict()
        precision = "fp16" if self.dtype == "float16" else "fp32"
        self.check = FeedChecker(spec_for(self.model_name, cfg).io_meta([precision]), precision)
        hf_config = LongformerConfig(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.heads,
            intermediate_size=cfg.intermediate_size, hidden_act="gelu", attention_window=cfg.attention_window,
            max_position_embeddings=cfg.max_positions, type_vocab_size=1, layer_norm_eps=cfg.layer_norm_eps,
            pad_token_id=1, vocab_size=4)
        hf = LongformerModel(hf_config, add_pooling_layer=False).eval()
        inner = {k.removeprefix(_PREFIX): v for k, v in sd.items() if k.startswith(_PREFIX)}
        self.sep, self.pad = inner.pop("sep_embedding"), inner.pop("pad_embedding")
        missing, unexpected = hf.load_state_dict(inner, strict=False)
        if missing != ["embeddings.word_embeddings.weight"] or unexpected:  # LOCORE has no word embeddings
            raise RuntimeError(f"locore-hf: the weights do not map onto transformers {transformers_version()}'s "
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
        return self

    def __exit__(self, *exc) -> None:
        self.hf = None

    def input_specs(self) -> list[IOSpec]:
        return list(self.check.inputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        if self.hf is None:
            raise RuntimeError(f"{self.name}: use the backend inside a `with` block")
        self.check(feeds)
        self.check.finite(feeds)
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
