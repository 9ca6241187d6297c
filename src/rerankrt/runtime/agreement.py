"""How far two rankings of one shortlist agree: Kendall's tau-b and the top-k overlap (numpy only).

The check of an FP16 graph or engine against FP32 on a shortlist, used by the validation ladder and by
`rerankrt eval --compare`.
"""

from __future__ import annotations

import numpy as np


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors over the same items (O(n²); shortlists are ~100): +1 the same
    order, −1 reversed. NaN where either vector ties every pair (the order it gives is undefined)."""
    upper = np.triu_indices(len(a), 1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    untied_a, untied_b = np.count_nonzero(da), np.count_nonzero(db)
    if not (untied_a and untied_b):
        return float("nan")
    return float((da * db).sum() / np.sqrt(untied_a * untied_b))


def top_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """The share of the top-k items by score that both vectors agree on."""
    k = min(k, len(a))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k
