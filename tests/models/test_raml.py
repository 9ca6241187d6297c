"""RAML: torchvision-compatible keys, parity with the literal reference, fp16 GeM, bad input."""

from __future__ import annotations

import pytest
import torch
from literal.raml import published

from rerankrt.core.errors import InputError
from rerankrt.models import load_model


def resnet50_keys() -> dict[str, tuple]:
    """torchvision's resnet50 keys without fc, renumbered under backbone.0 … backbone.7 (§4.1)."""
    def bn(p: str, c: int) -> dict:
        return {p + "weight": (c,), p + "bias": (c,), p + "running_mean": (c,), p + "running_var": (c,),
                p + "num_batches_tracked": ()}

    keys = {"backbone.0.weight": (64, 3, 7, 7), **bn("backbone.1.", 64)}
    in_ch = 64
    for stage, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512))):
        for i in range(blocks):
            p = f"backbone.{4 + stage}.{i}."
            keys |= {p + "conv1.weight": (width, in_ch, 1, 1), **bn(p + "bn1.", width),
                     p + "conv2.weight": (width, width, 3, 3), **bn(p + "bn2.", width),
                     p + "conv3.weight": (4 * width, width, 1, 1), **bn(p + "bn3.", 4 * width)}
            if i == 0:
                keys |= {p + "downsample.0.weight": (4 * width, in_ch, 1, 1), **bn(p + "downsample.1.", 4 * width)}
            in_ch = 4 * width
    return keys


def test_state_dict_matches_release():
    model = load_model("raml")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = resnet50_keys() | {"pool.p": (1,), "whiten.weight": (512, 2048), "whiten.bias": (512,)}
    assert shapes == expected
    # torchvision's resnet50 has 25,557,032 parameters; minus fc (2,049,000), plus GeM p and whitening.
    assert sum(p.numel() for p in model.parameters()) == 25_557_032 - 2_049_000 + 1 + 512 * 2048 + 512


@pytest.fixture(scope="module")
def raml():
    """Random weights with trained-like BatchNorm statistics and a non-default GeM exponent."""
    model = load_model("raml")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
        model.pool.p.fill_(2.7)
    return model


@pytest.mark.parametrize("size", [(224, 224), (96, 160), (64, 64)])
def test_matches_literal_reference(raml, size):
    images = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    with torch.no_grad():
        ours = raml(images)
        ref = published(raml.state_dict(), images)
    assert ours.shape == (3, 512)
    assert ref.shape == (512, 3)
    torch.testing.assert_close(ours, ref.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert (ours[0] - ours[1]).abs().max() > 100 * 1e-5  # the tolerance can tell images apart


def test_gem_is_fp32_island_in_half(raml):
    """Activations of ~50 cubed overflow fp16 (65,504); the fp32 GeM keeps the half forward finite."""
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = raml(images)
        feats = raml.backbone(images)
        feats = feats * 50.0 / feats.max()
        pooled = raml.pool(feats)
        half = raml.half()
        try:
            assert (feats.half() ** 3).isinf().any()  # a plain fp16 GeM would overflow here
            pooled_half = half.pool(feats.half())
            out = half(images.half())
        finally:
            raml.float()
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=0)
    torch.testing.assert_close(pooled_half, pooled, atol=0, rtol=1e-3)


@pytest.mark.parametrize(("images", "message"), [
    (torch.zeros(1, 4, 64, 64), "images: expected shape [B, 3, H, W], got [1, 4, 64, 64]"),
    (torch.zeros(3, 64, 64), "images: expected shape [B, 3, H, W], got [3, 64, 64]"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
     "images: expected a floating dtype (float32, float16 or bfloat16), got torch.uint8"),
    (torch.zeros(1, 3, 16, 64), "images: expected H, W ≥ 32 (the backbone's stride), got (16, 64)"),
    (torch.full((1, 3, 64, 64), float("nan")), "images: contains 12288 NaN or infinite values"),
])
def test_bad_input(raml, images, message):
    with pytest.raises(InputError) as err:
        raml(images)
    assert str(err.value) == message
