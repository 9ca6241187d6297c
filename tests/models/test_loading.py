"""load_model: random weights, official containers, strict loading and the errors for foreign files."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file
from weights import RAML_META

from rerankrt.core.errors import CheckpointError
from rerankrt.models import MODELS, load_model


def test_random_weights_are_deterministic_and_leave_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = load_model("ames")
    after = torch.rand(1)
    b = load_model("ames")
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert not a.training


@pytest.mark.parametrize(("name", "config"), [("ames", {}), ("ames", {"local_dim": 1024}),
                                              ("ames-dist", {}), ("ames-dist", {"local_dim": 1024})])
def test_ames_release_container_round_trip(tmp_path, name, config):
    src = load_model(name, **config)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01)
    path = tmp_path / "ames.pt"
    torch.save({"state": src.state_dict(), "epoch": 3}, path)
    loaded = load_model(name, path)  # local_dim read from the checkpoint
    assert loaded.config.local_dim == config.get("local_dim", 768)
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_raml_release_container_round_trip(tmp_path):
    src = load_model("raml")
    with torch.no_grad():
        src.pool.p.fill_(3.4)
    path = tmp_path / "raml.pth"
    torch.save({"meta": RAML_META, "state_dict": src.state_dict(), "epoch": 200}, path)
    loaded = load_model("raml", path)
    assert loaded.pool.p.item() == pytest.approx(3.4)


def test_safetensors_state_dict(tmp_path):
    src = load_model("ames-dist")
    path = tmp_path / "ames.safetensors"
    save_file(src.state_dict(), str(path))
    loaded = load_model("ames-dist", path)
    assert torch.equal(loaded.remap_local[0].W, src.remap_local[0].W)


def test_ames_file_given_as_raml(tmp_path):
    path = tmp_path / "ames.pt"
    torch.save({"state": load_model("ames").state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_model("raml", path)
    assert str(err.value) == (
        f"checkpoint {path}: model 'raml' expects its state_dict under 'state_dict', the file has keys "
        "['state']; it looks like a checkpoint of ames (DINOv2 descriptors, local_dim 768)")


def test_dist_file_given_as_fp_lists_keys(tmp_path):
    path = tmp_path / "cvnet_ames_dist.pt"
    torch.save({"state": load_model("ames-dist", local_dim=1024).state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_model("ames", path)
    msg = str(err.value)
    assert msg.splitlines()[0] == f"checkpoint {path} does not fit model 'ames':"
    assert "  missing keys (2): remap_local.0.weight, remap_local.0.bias" in msg
    assert "  unexpected keys (3): remap_local.0.W, remap_local.2.weight, remap_local.2.bias" in msg
    assert "  shape mismatches (1): remap_local.1.weight: expected [128], got [128, 128]" in msg
    assert msg.splitlines()[-1] == (
        "  the file looks like a checkpoint of ames-dist (CVNet descriptors, local_dim 1024)")


def test_cvnet_file_with_dinov2_dimension_asked(tmp_path):
    path = tmp_path / "cvnet_ames.pt"
    torch.save({"state": load_model("ames", local_dim=1024).state_dict()}, path)
    with pytest.raises(CheckpointError, match=re.escape(
            f"checkpoint {path} has local_dim=1024, but local_dim=768 was asked for model 'ames'")):
        load_model("ames", path, local_dim=768)


def test_wrong_shape_is_named(tmp_path):
    sd = load_model("ames").state_dict()
    sd["decoder.layers.2.norm1.weight"] = torch.ones(64)
    path = tmp_path / "bad.pt"
    torch.save({"state": sd}, path)
    with pytest.raises(CheckpointError, match=re.escape(
            "shape mismatches (1): decoder.layers.2.norm1.weight: expected [128], got [64]")):
        load_model("ames", path)


def test_raml_meta_is_validated(tmp_path):
    path = tmp_path / "raml.pth"
    torch.save({"meta": {**RAML_META, "architecture": "resnet101"}, "state_dict": load_model("raml").state_dict()},
               path)
    with pytest.raises(CheckpointError, match=re.escape(
            "raml checkpoint meta: expected architecture='resnet50', got architecture='resnet101'")):
        load_model("raml", path)


def test_truncated_file(tmp_path):
    path = tmp_path / "ames.pt"
    torch.save({"state": load_model("ames").state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(
            f"checkpoint {path}: not a readable torch or safetensors file (truncated or corrupt?)")):
        load_model("ames", path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path}: not a")):
        load_model("ames", path)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "ames.safetensors"
    save_file(load_model("ames").state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path}: not a readable safetensors file")):
        load_model("ames", path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {tmp_path / 'nope.pt'}: no such file")):
        load_model("ames", tmp_path / "nope.pt")


def test_unknown_model_and_config():
    with pytest.raises(ValueError, match=re.escape(f"unknown model 'amex'; registered models: {', '.join(MODELS)}")):
        load_model("amex")
    with pytest.raises(TypeError, match=re.escape("ames: unknown config ['heads']")):
        load_model("ames", heads=4)


class Payload:
    """A Python object that `weights_only=True` refuses to unpickle."""


def test_python_objects_need_trust(tmp_path):
    path = tmp_path / "ames.pt"
    torch.save({"state": load_model("ames").state_dict(), "args": Payload()}, path)
    with pytest.raises(CheckpointError, match="if you trust the file, load it with weights_only=False"):
        load_model("ames", path)
