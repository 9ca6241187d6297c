"""LOCORE: released key/shape table, parity with Hugging Face's Longformer, fp16, loading, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import unit_descriptors
from safetensors.torch import save_file
from weights import perturb

from rerankrt.core.errors import CheckpointError, InputError
from rerankrt.models import load_model, parameter_count

HF = pytest.importorskip("literal.locore", reason="the HF parity reference needs `transformers` (dev extra)")

#: a small configuration of the real architecture: the band (±4 tokens) matters at L = 49 … 84.
TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "attention_window": 8,
        "max_positions": 130, "local_dim": 32, "global_dim": 32}


def locore_keys(layers: int) -> dict[str, tuple]:
    """§3.2's table (base, DINOv2: no local_to_lm / global_to_lm)."""
    p = "language_model.longformer."
    keys: dict[str, tuple] = {
        "scale_encoder.weight": (3, 768), p + "sep_embedding": (768,), p + "pad_embedding": (768,),
        p + "embeddings.position_embeddings.weight": (5122, 768),
        p + "embeddings.token_type_embeddings.weight": (1, 768),
        p + "embeddings.LayerNorm.weight": (768,), p + "embeddings.LayerNorm.bias": (768,),
    }
    for i in range(layers):
        lp = f"{p}encoder.layer.{i}."
        for name in ("query", "key", "value", "query_global", "key_global", "value_global"):
            keys |= {f"{lp}attention.self.{name}.weight": (768, 768), f"{lp}attention.self.{name}.bias": (768,)}
        keys |= {lp + "attention.output.dense.weight": (768, 768), lp + "attention.output.dense.bias": (768,),
                 lp + "attention.output.LayerNorm.weight": (768,), lp + "attention.output.LayerNorm.bias": (768,),
                 lp + "intermediate.dense.weight": (3072, 768), lp + "intermediate.dense.bias": (3072,),
                 lp + "output.dense.weight": (768, 3072), lp + "output.dense.bias": (768,),
                 lp + "output.LayerNorm.weight": (768,), lp + "output.LayerNorm.bias": (768,)}
    return keys | {"language_model.classifier.weight": (2, 768), "language_model.classifier.bias": (2,)}


@pytest.mark.parametrize(("name", "layers", "params"), [("locore", 12, 110_257_154), ("locore-small", 6, 57_099_266)])
def test_state_dict_matches_release(name, layers, params):
    with torch.device("meta"):
        from rerankrt.models.locore import build
        from rerankrt.models.registry import get_info

        model = build(get_info(name).config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == locore_keys(layers)
    assert parameter_count(name) == params  # reference §3.2: ≈ 110.26 M and 57.10 M


def randomised(**config) -> torch.nn.Module:
    """TINY LOCORE with weights large enough that attention is far from uniform (tests/weights.py)."""
    return perturb(load_model("locore", **(TINY | config)), gain=1.5, spread=0.2)


def inputs(rng, b: int, k: int, n: int, dim: int = 32, global_dim: int = 32, pad: bool = True):
    q_loc, q_mask = unit_descriptors(rng, (b, n, dim), rng.integers(1, n + 1, b) if pad else np.full(b, n))
    g_loc, g_mask = unit_descriptors(rng, (b, k, n, dim), rng.integers(1, n + 1, (b, k)) if pad else np.full((b, k), n))
    q_glob = unit_descriptors(rng, (b, 1, global_dim), np.ones(b))[0][:, 0]
    g_glob = unit_descriptors(rng, (b, k, 1, global_dim), np.ones((b, k)))[0][:, :, 0]
    return [torch.from_numpy(a) for a in (q_glob, q_loc, q_mask, g_glob, g_loc, g_mask)]


def reference(model, **overrides):
    cfg = model.config
    return HF.HFLocore(model.state_dict(), num_heads=cfg.heads, attention_window=cfg.attention_window, **overrides)


@pytest.mark.parametrize(("b", "k", "n", "window"), [
    (1, 6, 5, 8),    # L = 49: six times the window, not a multiple of the tile
    (2, 11, 5, 8),   # L = 84
    (2, 3, 4, 4),    # the smallest band (±2)
    (1, 4, 6, 64),   # the window covers the whole sequence
])
def test_matches_hf_longformer(rng, b, k, n, window):
    model = randomised(attention_window=window)
    x = inputs(rng, b, k, n)
    with torch.no_grad():
        ours, ours_tokens = model(*x), model(*x, token_logits=True)
    hf_end, hf_tokens = reference(model)(*x)
    assert ours.shape == (b, k) and ours_tokens.shape == (b, (k + 1) * (n + 2), 2)
    assert hf_tokens[..., 1].std() > 0.3  # logits vary by token, so the comparison can tell models apart
    torch.testing.assert_close(ours_tokens, hf_tokens, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours, hf_end, atol=1e-4, rtol=0)


def test_projections_and_scales_match_hf(rng):
    """CVNet-style inputs (descriptor dimension ≠ hidden size) and non-zero scale indices."""
    model = randomised(local_dim=48, global_dim=40)
    assert set(model.state_dict()) >= {"local_to_lm.weight", "global_to_lm.weight"}
    x = inputs(rng, 2, 5, 5, dim=48, global_dim=40)
    scales = {"q_scale": torch.from_numpy(rng.integers(0, 3, (2, 5))),
              "g_scale": torch.from_numpy(rng.integers(0, 3, (2, 5, 5)))}
    with torch.no_grad():
        ours = model(*x, token_logits=True, **scales)
    torch.testing.assert_close(ours, reference(model)(*x, **scales)[1], atol=1e-4, rtol=0)


def test_no_projection_when_dimensions_match():
    assert not any(k.startswith(("local_to_lm", "global_to_lm")) for k in randomised().state_dict())


def test_padding_content_is_ignored(rng):
    model = randomised()
    x = inputs(rng, 2, 4, 5)
    with torch.no_grad():
        ref = model(*x)
        x[1][x[2]] = 3.0
        x[4][x[5]] = -2.0
        torch.testing.assert_close(model(*x), ref, atol=1e-5, rtol=0)


def test_float16_stays_finite(rng):
    model = randomised()
    x = inputs(rng, 2, 6, 5)
    with torch.no_grad():
        ref = model(*x, token_logits=True)
        half = model.half()(*[t.half() if t.is_floating_point() else t for t in x], token_logits=True)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), ref, atol=0.05 * float(ref.abs().max()), rtol=0)


def test_safetensors_round_trip(tmp_path, rng):
    model = randomised()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_model("locore", path, attention_window=8, num_heads=4)
    assert loaded.config.hidden_size == 32 and loaded.config.max_positions == 130
    x = inputs(rng, 1, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*x), model(*x), atol=0, rtol=0)


def test_small_keeps_the_first_six_layers(tmp_path):
    base = randomised(num_layers=8)
    path = tmp_path / "model.safetensors"
    save_file(base.state_dict(), str(path))
    small = load_model("locore-small", path, attention_window=8, num_heads=4)
    assert len(small.language_model.longformer.encoder.layer) == 6
    kept = small.state_dict()
    assert set(kept) == {k for k in base.state_dict() if ".encoder.layer.6." not in k and ".encoder.layer.7." not in k}
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in kept.items())


def test_wrong_key_and_shape_are_named(tmp_path):
    sd = randomised().state_dict()
    sd["language_model.classifier.weightt"] = sd.pop("language_model.classifier.weight")
    sd["language_model.longformer.encoder.layer.1.output.dense.bias"] = torch.zeros(31)
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as e:
        load_model("locore", path, attention_window=8, num_heads=4)
    message = str(e.value)
    assert "missing keys (1): language_model.classifier.weight" in message
    assert "unexpected keys (1): language_model.classifier.weightt" in message
    assert "language_model.longformer.encoder.layer.1.output.dense.bias: expected [32], got [31]" in message


def test_ames_checkpoint_is_recognised(tmp_path):
    path = tmp_path / "ames.pt"
    torch.save({"state": load_model("ames").state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"expects a plain state_dict .* looks like a checkpoint of ames"):
        load_model("locore", path)


def test_depth_comes_from_the_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(randomised().state_dict(), str(path))  # 2 layers
    with pytest.raises(CheckpointError, match=r"has num_layers=2, but num_layers=4 was asked for model 'locore'"):
        load_model("locore", path, attention_window=8, num_heads=4, num_layers=4)
    with pytest.raises(CheckpointError, match=r"has 2 layers; keep_layers=6 needs at least as many"):
        load_model("locore-small", path, attention_window=8, num_heads=4)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda x: [x[0][:, :30], *x[1:]], "q_global: expected shape [B, 32], got [2, 30]"),
    (lambda x: [*x[:4], x[4][:, :, :4], x[5]], "g_local: expected shape [B, K, 5, 32], got [2, 3, 4, 32]"),
    (lambda x: [*x[:2], x[2].long(), *x[3:]], "q_mask: expected dtype torch.bool (True = padding), got torch.int64"),
    (lambda x: [*x[:5], x[5][:, :2]], "g_mask: expected shape [2, 3, 5], got [2, 2, 5]"),
    (lambda x: [*x[:3], x[3][:, :2], *x[4:]], "g_local: expected 2 gallery images (g_global's K), got 3"),
    (lambda x: [*x[:3], x[3][:, :0], x[4][:, :0], x[5][:, :0]],
     "g_global: needs at least one gallery image (K ≥ 1), got 0"),
    (lambda x: [x[0][:1], *x[1:]], "q_global: expected batch 2 (q_local's B), got 1"),
])
def test_bad_input(rng, mutate, message):
    model = randomised()
    with pytest.raises(InputError) as e:
        model(*mutate(inputs(rng, 2, 3, 5)))
    assert str(e.value) == message


def test_nan_and_scale_and_length_errors(rng):
    model = randomised()
    x = inputs(rng, 1, 3, 5)
    x[4][0, 1, 2, 3] = float("nan")
    with pytest.raises(InputError, match=r"^g_local: contains 1 NaN or infinite values$"):
        model(*x)
    x = inputs(rng, 1, 3, 5)
    with pytest.raises(InputError, match=r"^q_scale: scale indices must lie in \[0, 3\), got 0 … 3$"):
        model(*x, q_scale=torch.tensor([[0, 3, 0, 0, 0]]))
    with pytest.raises(InputError, match=r"^g_global: K=18 gallery images of 5 descriptors make 133 tokens; "
                                         r"the position table holds 128 \(at most K=17\)$"):
        model(*inputs(rng, 1, 18, 5))


def test_invalid_window_is_refused():
    with pytest.raises(ValueError, match="attention_window: expected a positive even number, got 7"):
        load_model("locore", **(TINY | {"attention_window": 7}))
