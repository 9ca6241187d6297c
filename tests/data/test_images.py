"""RAML's published preprocessing and the query encoder over ONNX Runtime and torch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rerankrt.core.errors import InputError
from rerankrt.data.images import RamlEncoder, preprocess
from rerankrt.models.cards.raml import RAML

pytest.importorskip("PIL", reason="Pillow (images extra) is not installed")
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CONFIG = dataclasses.asdict(RAML)  # what a backend's `config` holds


def test_constant_image_is_normalised_exactly():
    x = preprocess(np.full((300, 400, 3), 128, np.uint8), CONFIG)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], (128 / 255 - MEAN) / STD, rtol=1e-6)
    assert np.ptp(x, axis=(1, 2)).max() < 1e-6


def test_shorter_side_to_256_then_centre_crop():
    """300×600 (h×w), black left half, white right half → 256×512 → crop columns 144…367: the edge lands at
    column 112 of the crop."""
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 300:] = 255
    x = preprocess(image, CONFIG)
    black, white = (0 - MEAN[0]) / STD[0], (1 - MEAN[0]) / STD[0]
    np.testing.assert_allclose(x[0, :, :100], black, atol=1e-5)
    np.testing.assert_allclose(x[0, :, 124:], white, atol=1e-5)
    assert x[0, 0, 108] < x[0, 0, 112] < x[0, 0, 116]
    assert preprocess(image, CONFIG, size=448).shape == (3, 448, 448)


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((10, 10, 3), np.float32), r"image: expected an RGB uint8 array \[H, W, 3\], got float32 \[10, 10, 3\]"),
    (np.zeros((10, 10), np.uint8), r"image: expected an RGB uint8 array \[H, W, 3\], got uint8 \[10, 10\]"),
])
def test_bad_arrays(array, message):
    with pytest.raises(InputError, match=message):
        preprocess(array, CONFIG)


def test_encoder_ort_equals_torch(tmp_path, rng):
    pytest.importorskip("torch")
    from rerankrt.export.onnx_export import export_model
    from rerankrt.models.torch_backend import TorchBackend
    from rerankrt.runtime.ort_backend import OrtBackend

    export_model("raml", out_dir=tmp_path, precision="fp32")
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((240, 320), (300, 200), (224, 224))]
    with OrtBackend(tmp_path / "raml.onnx") as ort_backend, TorchBackend("raml") as torch_backend:
        ours, ref = RamlEncoder(ort_backend).encode(images), RamlEncoder(torch_backend).encode(images)
    assert ours.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
