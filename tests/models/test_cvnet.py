"""CVNet-Rerank's head (profiler baseline): the released key table, parity with a literal HSNet-style
build (index_select pruning, two-resize interpolate4d), the released container, FLOPs."""

from __future__ import annotations

import pytest
import torch
from literal.cvnet import literal_cvnet
from torch.utils.flop_counter import FlopCounterMode

from rerankrt.core.errors import InputError
from rerankrt.models import load_model, parameter_count
from rerankrt.models.cards.cvnet import CVNET, cvnet_flops
from rerankrt.models.checks import prechecked

SMALL = {"feature_dim": 32, "conv_dim": 16}  # the real learner over narrow maps


def test_state_dict_matches_release():
    sd = load_model("cvnet-rerank").state_dict()
    # reference §2: 382 tensors in the R50 file, 321 of them encoder_q.*; 35,190,499 parameters, of which the
    # pycls ResNet-50 (23,508,032), GeM's p and the 2048×2048 head fc (4,196,353) are the backbone.
    assert len(sd) == 382 - 321 and parameter_count("cvnet-rerank") == 35_190_499 - 23_508_032 - 4_196_353
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["conv2ds.2.weight"] == (256, 1024, 3, 3) and "conv2ds.0.bias" not in shapes
    assert shapes["cv_learner.block1.0.conv1.weight"] == (16, 9, 5, 5)
    assert shapes["cv_learner.block2.3.conv2.weight"] == (32, 16, 3, 3)
    assert shapes["cv_learner.block3.6.conv1.weight"] == (64, 32, 3, 3)
    assert shapes["cv_learner.block4.6.conv2.weight"] == (128, 64, 3, 3)
    assert shapes["cv_learner.block4.7.bias"] == (128,)
    assert shapes["cv_learner.mlp.0.weight"] == (128, 128) and shapes["cv_learner.mlp.2.weight"] == (2, 128)


@pytest.mark.parametrize(("q", "k"), [((9, 11), (7, 13)), ((8, 8), (8, 8)), ((5, 6), (12, 4))])
def test_matches_literal(q, k):
    model = load_model("cvnet-rerank", **SMALL)
    g = torch.Generator().manual_seed(q[0])
    qm, km = torch.randn(2, 32, *q, generator=g), torch.randn(2, 32, *k, generator=g)
    with torch.no_grad():
        ours, ref = model(qm, km), literal_cvnet(model.state_dict(), qm, km)
        ref = ref[:, 1] - ref[:, 0]  # the logit of softmax(l)[:, 1]
    assert ours.shape == (2,) and (ref[0] - ref[1]).abs() > 1e-3
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_fp16_keeps_the_correlation_finite():
    """Activations of 30: squared norms of the 256-d features overflow fp16 (> 65504) outside the island."""
    model = load_model("cvnet-rerank", **SMALL)
    g = torch.Generator().manual_seed(0)
    qm, km = 30 * torch.randn(1, 32, 6, 6, generator=g), 30 * torch.randn(1, 32, 6, 6, generator=g)
    with torch.no_grad():
        ref = model(qm, km)
        half = model.half()(qm.half(), km.half())
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), ref, atol=0.05, rtol=0.05)


def test_bad_input():
    model = load_model("cvnet-rerank", **SMALL)
    with pytest.raises(InputError, match=r"^q_map: expected shape \[B, 32, H, W\], got \[1, 16, 4, 4\]$"):
        model(torch.randn(1, 16, 4, 4), torch.randn(1, 32, 4, 4))
    with pytest.raises(InputError, match=r"^db_map: contains 1 NaN or infinite values$"):
        bad = torch.randn(1, 32, 4, 4)
        bad[0, 0, 0, 0] = float("nan")
        model(torch.randn(1, 32, 4, 4), bad)


def test_release_container(tmp_path):
    """The official file: {'model_state': …} with the encoder_q.* backbone beside the head."""
    src = load_model("cvnet-rerank", **SMALL)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01)
    full = {**src.state_dict(), "encoder_q.stem.conv.weight": torch.zeros(64, 3, 3, 3),
            "encoder_q.head.pool.p": torch.ones(1)}
    path = tmp_path / "CVPR2022_CVNet_R50.pyth"
    torch.save({"model_state": full, "epoch": 1}, path)
    loaded = load_model("cvnet-rerank", path)
    assert loaded.config.feature_dim == 32
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize(("q", "k"), [((6, 7), (5, 9)), ((4, 4), (8, 6))])
def test_flops(q, k):
    model = load_model("cvnet-rerank", **SMALL).double()
    g = torch.Generator().manual_seed(0)
    qm, km = torch.randn(1, 32, *q, generator=g).double(), torch.randn(1, 32, *k, generator=g).double()
    with torch.no_grad(), prechecked(), FlopCounterMode(display=False) as counter:
        model(qm, km)
    assert counter.get_total_flops() == cvnet_flops(model.config, q, k)


def test_released_cost():
    # reference §2: 20.8 GFLOP per pair at 32×32 maps, 84.4 at 48×64 (the learner 2.1 and 18.9)
    assert cvnet_flops(CVNET, (32, 32), (32, 32)) == pytest.approx(20.8e9, rel=0.005)
    assert cvnet_flops(CVNET, (48, 64), (48, 64)) == pytest.approx(84.4e9, rel=0.005)
