"""CVNet's backbone to stage 3 (profiler baseline): the pycls key table of a released checkpoint's
encoder_q.stem/s1–s3, the pre-ReLU stride-16 maps, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rerankrt.core.errors import InputError
from rerankrt.models import load_model
from rerankrt.models.cards.cvnet import cvnet_backbone_flops
from rerankrt.models.cards.raml import resnet50_flops
from rerankrt.models.checks import prechecked


def test_keys_are_pycls_stages_one_to_three():
    sd = load_model("cvnet-backbone").state_dict()
    # reference §2: 321 encoder_q tensors in R50 = stem 6 + 16 blocks × 18 + 4 projections × 6 + head 3;
    # stages 1–3 keep the stem and 13 blocks with 3 projections.
    assert len(sd) == 6 + 13 * 18 + 3 * 6
    assert tuple(sd["stem.conv.weight"].shape) == (64, 3, 7, 7)
    assert tuple(sd["s3.b1.proj.weight"].shape) == (1024, 512, 1, 1) and "s3.b2.proj.weight" not in sd
    assert tuple(sd["s3.b6.f.c_bn.running_var"].shape) == (1024,) and "s3.b7.f.a.weight" not in sd
    assert tuple(sd["s2.b4.f.b.weight"].shape) == (128, 128, 3, 3)
    assert not any(k.startswith("s4.") for k in sd)


def test_release_container_keeps_encoder_q_to_stage_three(tmp_path):
    src = load_model("cvnet-backbone")
    with torch.no_grad():
        src.stem.conv.weight.add_(0.5)
    full = {f"encoder_q.{k}": v for k, v in src.state_dict().items()}
    full |= {"encoder_q.s4.b1.proj.weight": torch.zeros(2048, 1024, 1, 1), "encoder_q.head.pool.p": torch.ones(1),
             "conv2ds.0.weight": torch.zeros(256, 1024, 3, 3)}
    path = tmp_path / "CVPR2022_CVNet_R50.pyth"
    torch.save({"model_state": full}, path)
    loaded = load_model("cvnet-backbone", path)
    assert torch.equal(loaded.stem.conv.weight, src.stem.conv.weight)


def test_stride_16_maps_taken_before_the_last_relu():
    model = load_model("cvnet-backbone")
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 96, 130))
    assert maps.shape == (1, 1024, 6, 9) and (maps < 0).any()  # ceil(96/16), ceil(130/16); pre-activation
    with pytest.raises(InputError, match=r"^images: expected shape \[B, 3, H, W\], got \[1, 1, 32, 32\]$"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("size", [(64, 80), (97, 33)])
def test_flops(size):
    model = load_model("cvnet-backbone").double()
    with torch.no_grad(), prechecked(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, *size, dtype=torch.float64))
    assert counter.get_total_flops() == cvnet_backbone_flops(model.config, *size)
    assert cvnet_backbone_flops(model.config, *size) < resnet50_flops(*size)
