"""Shared fixtures: synthetic descriptors in the official layout and the shared data folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the literal references in tests/literal

SHARED = Path(os.environ.get("RERANKRT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def unit_descriptors(rng: np.random.Generator, shape: tuple, n_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm descriptors [..., N, D] whose rows past `n_valid` (per leading index) are zero padding.

    Returns (desc float32, mask bool True = padding), the layout of the official HDF5 files.
    """
    desc = rng.standard_normal(shape).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=-1, keepdims=True)
    n = shape[-2]
    mask = np.arange(n) >= np.asarray(n_valid)[..., None]
    desc[mask] = 0.0
    return desc, mask


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def revisitop() -> Path:
    path = SHARED / "data" / "revisitop"
    if not path.is_dir():
        pytest.skip(f"the shared revisited ground truth is not at {path} (set RERANKRT_SHARED)")
    return path


@pytest.fixture(scope="session")
def released_ames(tmp_path_factory) -> Path:
    """AMES at its released configuration with random weights, exported once for the session (FP32 and
    FP16, validated as `rerankrt export` does): the graphs the export, Triton and fault tests read or copy
    (read only: copy before changing anything)."""
    pytest.importorskip("torch")
    from rerankrt.export.onnx_export import export_model

    out = tmp_path_factory.mktemp("released-ames")
    export_model("ames", out_dir=out)
    return out


#: the DINOv2 extractor at a CI size: 64-d tokens, 2 blocks
TINY_EXTRACTOR = {"embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_dim": 128}


@pytest.fixture(scope="session")
def tiny_extractor(tmp_path_factory) -> Path:
    """The extractor at `TINY_EXTRACTOR` with its random weights, exported once for the session (FP32) with a
    profile of 14…406 px a side (the trace's 29 patches): what extraction and search run through ONNX
    Runtime (read only)."""
    pytest.importorskip("torch")
    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import Profile

    out = tmp_path_factory.mktemp("tiny-extractor")
    side = Profile(14, 112, 406)
    export_model("dinov2-extractor", out_dir=out, precision="fp32", profiles={"height": side, "width": side},
                 **TINY_EXTRACTOR)
    return out


@pytest.fixture(scope="session")
def perturbed_ames(tmp_path_factory) -> Path:
    """AMES with perturbed weights (tests/weights.py) saved as `ames.pt` and exported from it (FP32), once
    for the session: the released random initialisation gives every pair nearly the same logit, so the
    first stage alone would decide a re-ranked order (read only: copy before changing anything)."""
    torch = pytest.importorskip("torch")
    from weights import perturb

    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import load_model

    out = tmp_path_factory.mktemp("perturbed-ames")
    torch.save({"state": perturb(load_model("ames"), gain=2.0, spread=0.1).state_dict()}, out / "ames.pt")
    export_model("ames", out / "ames.pt", out_dir=out, precision="fp32")
    return out
