"""Score fusion of the re-rankers: `weight·global + (1 − weight)·sigmoid(temperature·logit)`.

AMES calls the pair λ, γ; LOCORE α, t (reference §2.6, §3.6). The re-rankers' logits are raw.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow warnings for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def fuse(global_sim: np.ndarray, logits: np.ndarray, weight: float, temperature: float) -> np.ndarray:
    """weight·global_sim + (1 − weight)·sigmoid(temperature·logits), elementwise, float64."""
    return weight * np.asarray(global_sim, dtype=np.float64) + (1.0 - weight) * sigmoid(temperature * logits)
