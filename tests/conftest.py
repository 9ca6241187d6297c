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
