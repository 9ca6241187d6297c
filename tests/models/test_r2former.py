"""R2Former (profiler baseline): the released key table, parity with a literal argsort/einsum build,
the released container, FLOPs."""

from __future__ import annotations

import pytest
import torch
from literal.r2former import literal_r2former
from torch.utils.flop_counter import FlopCounterMode

from rerankrt.core.errors import InputError
from rerankrt.models import load_model, parameter_count
from rerankrt.models.cards.r2former import R2FORMER, r2former_flops
from rerankrt.models.checks import prechecked


def test_state_dict_matches_release():
    sd = load_model("r2former").state_dict()
    assert len(sd) == 108 and parameter_count("r2former") == 135_171  # reference §3: 108 tensors, 135,171
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["decoder_pos_embed"] == (1, 1001, 32) and shapes["ratio"] == (1,)
    assert shapes["blocks.5.attn.qkv.weight"] == (96, 32) and shapes["blocks_2.1.mlp.fc1.weight"] == (128, 32)
    assert shapes["pair_head.weight"] == (32, 7) and shapes["decoder_pred.weight"] == (2, 32)
    assert not any(k.startswith("blocks.6.") or k.startswith("blocks_2.2.") for k in sd)


def tokens(g, b, n):
    """[B, n, 131]: x, y in [0, 1], attention in [0, 1], a 128-d feature."""
    return torch.cat([torch.rand(b, n, 3, generator=g), torch.randn(b, n, 128, generator=g)], dim=-1)


def randomised():
    model = load_model("r2former")
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize(("b", "lq", "ldb"), [(2, 37, 23), (1, 6, 6), (3, 50, 64)])
def test_matches_literal(b, lq, ldb):
    model = randomised()
    g = torch.Generator().manual_seed(lq)
    q, db = tokens(g, b, lq), tokens(g, b, ldb)
    with torch.no_grad():
        ours, ref = model(q, db), literal_r2former(model.state_dict(), q, db)
        ref = ref[:, 1] - ref[:, 0]  # the logit of softmax(l)[:, 1]
    assert ours.shape == (b,) and (b == 1 or ref.std() > 0.01)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_coordinates_are_clamped_and_fp16_is_finite():
    model = randomised()
    g = torch.Generator().manual_seed(0)
    q, db = tokens(g, 2, 30), tokens(g, 2, 30)
    with torch.no_grad():
        ref = model(q, db)
        q[..., :3] = q[..., :3] * 3 - 1  # outside [0, 1]: clamped like the original
        clamped = q.clone()
        clamped[..., :3] = clamped[..., :3].clamp(0, 1)
        torch.testing.assert_close(model(q, db), model(clamped, db), atol=0, rtol=0)
        assert not torch.equal(model(q, db), ref)
        half = model.half()(q.half(), db.half())
    assert torch.isfinite(half).all()


def test_bad_input():
    model = load_model("r2former")
    g = torch.Generator().manual_seed(0)
    with pytest.raises(InputError, match=r"^q_tokens: expected shape \[B, L, 131\], got \[2, 10, 128\]$"):
        model(tokens(g, 2, 10)[..., :128], tokens(g, 2, 10))
    with pytest.raises(InputError, match=r"^db_tokens: expected shape \[2, L, 131\], got \[3, 10, 131\]$"):
        model(tokens(g, 2, 10), tokens(g, 3, 10))


def test_release_container(tmp_path):
    """CVPR23_DeitS_Rerank.pth: {'model_state_dict': DataParallel(GeoLocalizationNetRerank).state_dict()}."""
    src = randomised()
    full = {f"module.Reranker.{k}": v for k, v in src.state_dict().items()}
    full |= {"module.backbone.cls_token": torch.zeros(1, 1, 384), "module.local_head.weight": torch.zeros(128, 384)}
    path = tmp_path / "CVPR23_DeitS_Rerank.pth"
    torch.save({"model_state_dict": full, "epoch": 1}, path)
    loaded = load_model("r2former", path)
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize(("lq", "ldb"), [(9, 14), (20, 6)])
def test_flops(lq, ldb):
    model = load_model("r2former").double()
    g = torch.Generator().manual_seed(0)
    q, db = tokens(g, 2, lq).double(), tokens(g, 2, ldb).double()
    with torch.no_grad(), prechecked(), FlopCounterMode(display=False) as counter:
        model(q, db)
    assert counter.get_total_flops() == 2 * r2former_flops(model.config, lq, ldb)


def test_released_cost():
    assert r2former_flops(R2FORMER, 500, 500) == pytest.approx(1.29e9, rel=0.01)  # reference §3: 1.29 GFLOP
