"""RRT (profiler baseline): the released key table, parity with a literal nn.MultiheadAttention build, FLOPs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import unit_descriptors
from literal.rrt import literal_rrt
from torch.utils.flop_counter import FlopCounterMode
from weights import perturb

from rerankrt.core.errors import InputError
from rerankrt.models import load_model, parameter_count
from rerankrt.models.cards.rrt import rrt_flops
from rerankrt.models.checks import prechecked


def test_state_dict_matches_release():
    sd = load_model("rrt").state_dict()
    assert len(sd) == 78 and parameter_count("rrt") == 2_243_201  # reference: 78 tensors, 2,243,201
    assert tuple(sd["encoder.layers.5.self_attn.in_proj_weight"].shape) == (384, 128)
    assert tuple(sd["remap.weight"].shape) == (128, 2048)
    assert tuple(sd["scale_encoder.weight"].shape) == (7, 128) and tuple(sd["seg_encoder.weight"].shape) == (6, 128)
    assert tuple(sd["classifier.weight"].shape) == (1, 128)


def pair(rng, b=3, l1=9, l2=14):
    g1, g2 = (torch.from_numpy(rng.standard_normal((b, 2048)).astype(np.float32)) for _ in range(2))
    d1, m1 = unit_descriptors(rng, (b, l1, 128), rng.integers(1, l1 + 1, b))
    d2, m2 = unit_descriptors(rng, (b, l2, 128), rng.integers(1, l2 + 1, b))
    s1, s2 = rng.integers(0, 7, (b, l1)), rng.integers(0, 7, (b, l2))
    return [g1, *map(torch.from_numpy, (d1, m1)), g2, *map(torch.from_numpy, (d2, m2))], [torch.from_numpy(s1),
                                                                                          torch.from_numpy(s2)]


def randomised():
    return perturb(load_model("rrt"), gain=1.5, spread=0.2, seed=3)


def test_matches_literal(rng):
    model = randomised()
    x, scales = pair(rng)
    with torch.no_grad():
        ours = model(*x, *scales)
        ref = literal_rrt(model.state_dict(), *x, *scales)
    assert ref.std() > 0.01  # the pairs differ by far more than the tolerance
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_padding_content_is_ignored_and_fp16_finite(rng):
    model = randomised()
    x, scales = pair(rng)
    with torch.no_grad():
        ref = model(*x, *scales)
        x[1][x[2]] = 4.0
        torch.testing.assert_close(model(*x, *scales), ref, atol=1e-5, rtol=0)
        half = model.half()(*[t.half() if t.is_floating_point() else t for t in x], *scales)
    assert torch.isfinite(half).all()


def test_bad_input(rng):
    model = load_model("rrt")
    x, _ = pair(rng)
    x[1] = x[1][..., :64]
    with pytest.raises(InputError, match=r"^src_local: expected shape \[B, L, 128\], got \[3, 9, 64\]$"):
        model(*x)


@pytest.mark.parametrize(("l1", "l2"), [(5, 7), (12, 3)])
def test_flops(rng, l1, l2):
    model = load_model("rrt").double()
    x, scales = pair(rng, b=2, l1=l1, l2=l2)
    x = [t.double() if t.is_floating_point() else t for t in x]
    with torch.no_grad(), prechecked(), FlopCounterMode(display=False) as counter:
        model(*x, *scales)
    assert counter.get_total_flops() == 2 * rrt_flops(model.config, l1, l2)


def test_released_cost():
    from rerankrt.models.cards.rrt import RRT

    assert rrt_flops(RRT, 500, 500) == pytest.approx(7.05e9, rel=0.01)  # reference §1: 7.05 GFLOP per pair
