"""How far two rankings of one shortlist agree: Kendall's tau-b, Spearman's rho, the top-k overlap, and
the average precision of a ranking (numpy only).

The check of an FP16 or INT8 graph or engine against FP32 on a shortlist, used by the validation ladder,
the INT8 export (`export.quantize`) and `rerankrt eval --compare`.
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


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties given their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x))
    values, inverse = np.unique(x, return_inverse=True)
    if len(values) < len(x):
        ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two score vectors over the same items: the correlation of their ranks. NaN where
    there are fewer than two items or either vector ties every item (no order to compare)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = _ranks(a) - (len(a) - 1) / 2, _ranks(b) - (len(b) - 1) / 2
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def average_precision(ranked: np.ndarray, positives, junk=()) -> float:
    """The average precision of `ranked` (item ids, best first) for the ids in `positives`, the `junk` ids
    left out (the revisited protocol's rule); positives missing from the ranking count as never found. NaN
    without positives."""
    positives, junk = set(int(i) for i in positives), set(int(i) for i in junk)
    if not positives:
        return float("nan")
    hits, total = 0, 0.0
    kept = [int(i) for i in ranked if int(i) not in junk]
    for rank, item in enumerate(kept, 1):
        if item in positives:
            hits += 1
            total += hits / rank
    return total / len(positives)
