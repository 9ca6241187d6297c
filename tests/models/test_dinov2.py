"""The DINOv2 extractor: the released key table, parity with Hugging Face's Dinov2WithRegistersModel where
the position grid shrinks, stays and grows (H ≠ W), the exportable resize against PyTorch's antialiased
bicubic, the detector and the selection against a literal reading of §5, checkpoints and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from literal.dinov2 import published_detector, to_hf
from weights import perturb

from rerankrt.core.errors import CheckpointError, InputError
from rerankrt.models import load_model, parameter_count
from rerankrt.models.dinov2 import resize_matrix

#: the architecture at a size CI runs in seconds; the trained 37 × 37 grid and 4 registers kept
TINY = {"embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_dim": 128}


def tiny(seed: int = 7):
    model = perturb(load_model("dinov2-extractor", **TINY), gain=1.5, spread=0.2, seed=seed)
    with torch.no_grad():  # running statistics a trained BatchNorm would have
        model.detector.bn.running_mean.normal_(0, 0.1)
        model.detector.bn.running_var.uniform_(0.5, 2.0)
    return model


def test_released_key_table():
    """§2: 176 backbone tensors, 86,583,552 parameters; the detector's 7 under `detector.`."""
    with torch.device("meta"):
        from rerankrt.models.cards.dinov2 import DINOV2
        from rerankrt.models.dinov2 import build

        sd = build(DINOV2).state_dict()
    backbone = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("detector.")}
    assert len(backbone) == 176
    assert backbone["pos_embed"] == (1, 1370, 768) and backbone["register_tokens"] == (1, 4, 768)
    assert backbone["patch_embed.proj.weight"] == (768, 3, 14, 14) and backbone["mask_token"] == (1, 768)
    assert backbone["blocks.11.attn.qkv.weight"] == (2304, 768) and backbone["blocks.0.mlp.fc1.weight"] == (3072, 768)
    assert backbone["blocks.3.ls2.gamma"] == (768,) and backbone["norm.bias"] == (768,)
    assert {k: tuple(v.shape) for k, v in sd.items() if k.startswith("detector.")} == {
        "detector.conv1.weight": (768, 768, 1, 1), "detector.conv1.bias": (768,), "detector.bn.weight": (768,),
        "detector.bn.bias": (768,), "detector.bn.running_mean": (768,), "detector.bn.running_var": (768,),
        "detector.bn.num_batches_tracked": (), "detector.conv2.weight": (1, 768, 1, 1), "detector.conv2.bias": (1,)}
    assert parameter_count("dinov2-extractor") == 86_583_552 + 768 * 768 + 768 + 2 * 768 + 768 + 1


@pytest.mark.parametrize(("height", "width"), [(16, 16), (1, 1), (37, 37), (47, 33), (55, 55), (73, 16), (2, 90)])
def test_exportable_resize_is_pytorchs_antialiased_bicubic(height, width):
    """A_h · P · A_wᵀ equals F.interpolate(bicubic, antialias=True) where the grid shrinks, stays, grows."""
    grid = torch.randn(1, 5, 37, 37, generator=torch.Generator().manual_seed(height * 100 + width))
    ref = F.interpolate(grid, size=(height, width), mode="bicubic", antialias=True, align_corners=False)[0]
    ours = torch.einsum("hi,cij,wj->chw", resize_matrix(height, 37), grid[0], resize_matrix(width, 37))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    if (height, width) == (37, 37):
        torch.testing.assert_close(resize_matrix(37, 37), torch.eye(37), rtol=0, atol=1e-6)  # the table as is


@pytest.mark.parametrize(("height", "width"), [(16 * 14, 16 * 14), (37 * 14, 37 * 14), (47 * 14, 33 * 14)])
def test_matches_hugging_face_dinov2_with_registers(height, width):
    transformers = pytest.importorskip("transformers", reason="the parity reference needs transformers (dev extra)")
    model = tiny()
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=518, patch_size=14,
        num_register_tokens=4, layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)
    hf = transformers.Dinov2WithRegistersModel(config).eval()
    missing, unexpected = hf.load_state_dict(to_hf(model.state_dict(), 2, set(hf.state_dict())), strict=False)
    assert not missing and not unexpected
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height + width))
    with torch.no_grad():
        ours = model.features(images)
        theirs = hf(pixel_values=images).last_hidden_state
    assert ours.shape == theirs.shape == (2, 5 + (height // 14) * (width // 14), 64)
    assert float(ours[0, 5:].std(dim=0).mean()) > 0.1  # tokens that differ: the comparison can fail
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_detector_selection_and_globals_match_the_published_code():
    """§5 literally (the [a, N/a] reshape, SpatialAttention2d as nn modules, torch.topk) against the
    graph's per-token outputs selected on the host by `data.extraction.select`. The order is checked
    on the published weights: the graph's equal them to rounding only, and two weights a rounding apart
    swap places between machines that block their GEMMs differently (CI saw ranks 33/34 swap)."""
    from rerankrt.data.extraction import Prepared, select

    model = tiny(seed=3)
    images = torch.randn(1, 3, 20 * 14, 27 * 14, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        weights, tokens, global_, cls = model(images)
        features = model.features(images)
    detector = {k.removeprefix("detector."): v for k, v in model.state_dict().items() if k.startswith("detector.")}
    desc, weight, pooled, all_weights = published_detector(detector, features[0, 5:], topk=100)
    torch.testing.assert_close(weights[0], all_weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(global_[0], pooled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cls[0], F.normalize(features[0, 0], dim=-1), rtol=1e-5, atol=1e-6)
    prepared = Prepared(np.zeros((3, 20 * 14, 27 * 14), np.float32), (280, 378), (0, 0, 280, 378))
    rows = select(all_weights.numpy(), tokens[0].numpy(), (20, 27), 700, prepared)
    assert rows.shape == (700, 5 + 64) and float(all_weights.std()) > 0.01
    np.testing.assert_allclose(rows[:100, 5:], desc.numpy(), rtol=1e-5, atol=1e-6)  # the same 100, in order
    graph_rows = select(weights[0].numpy(), tokens[0].numpy(), (20, 27), 700, prepared)
    np.testing.assert_allclose(graph_rows[:540, 4], np.sort(all_weights.numpy())[::-1], rtol=1e-5, atol=1e-6)
    assert (rows[:540, 3] == 0).all() and (rows[540:, 3] == 1).all() and not rows[540:, [0, 1, 2, 4, 5]].any()
    token = int(torch.argmax(all_weights))  # the first row's location: its patch centre over the sides
    assert rows[0, :3].tolist() == pytest.approx([(14 * (token // 27) + 7) / 280, (14 * (token % 27) + 7) / 378, 0])


def test_checkpoints_backbone_and_detector(tmp_path):
    model = tiny()
    sd = model.state_dict()
    backbone = {k: v for k, v in sd.items() if not k.startswith("detector.")}
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save({"state": {k.removeprefix("detector."): v for k, v in sd.items() if k.startswith("detector.")}},
               tmp_path / "detector.pt")
    loaded = load_model("dinov2-extractor", tmp_path / "backbone.pth", detector=tmp_path / "detector.pt", **TINY)
    images = torch.randn(1, 3, 224, 308)
    with torch.no_grad():
        for a, b in zip(loaded(images), model(images), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same weights, the same computation
    with pytest.raises(CheckpointError, match=r"the DINOv2 backbone needs its AMES detector too"):
        load_model("dinov2-extractor", tmp_path / "backbone.pth", **TINY)
    with pytest.raises(CheckpointError, match=r"detector=.*: model 'dinov2-extractor' loads its parts beside a "
                                              r"checkpoint"):
        load_model("dinov2-extractor", detector=tmp_path / "detector.pt")
    with pytest.raises(CheckpointError) as e:  # a narrower ViT: the released shapes are named
        load_model("dinov2-extractor", tmp_path / "backbone.pth", detector=tmp_path / "detector.pt")
    assert "cls_token: expected [1, 1, 768], got [1, 1, 64]" in str(e.value)
    assert "looks like a checkpoint of dinov2-extractor backbone (ViT-64-d/14, 4 registers)" in str(e.value)
    with pytest.raises(CheckpointError, match=r"detector .*backbone.pth: model 'dinov2-extractor' expects the "
                                              r"detector's state_dict under 'state'"):
        load_model("dinov2-extractor", tmp_path / "backbone.pth", detector=tmp_path / "backbone.pth", **TINY)


def test_bad_images():
    model = tiny()
    with pytest.raises(InputError, match=r"images: expected H and W multiples of 14 \(at least 14\), got 100 × 112"):
        model(torch.zeros(1, 3, 100, 112))
    with pytest.raises(InputError, match=r"images: expected shape \[B, 3, H, W\], got \[1, 1, 14, 14\]"):
        model(torch.zeros(1, 1, 14, 14))
