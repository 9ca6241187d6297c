"""LOCORE's sliding-window re-ranking over a long shortlist (reference/models.md §3.6).

Backend-independent: the caller passes a function that scores one window (the query against the
gallery images at the given shortlist positions, in that order: the order matters through LOCORE's
absolute position embeddings) and returns their raw logits. Each window re-sorts its slice of the
current order by its own fused scores; scores are never merged across windows, so strong candidates
"bubble" toward the top through the overlaps. Positions past the shortlist S keep the first-stage order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rerankrt.core.errors import InputError
from rerankrt.runtime.fusion import fuse

ORDERS = ("end-to-start", "start-to-end", "start-to-end-to-start", "end-to-start-to-end", "single")


def window_starts(shortlist: int, window: int, stride: int, order: str = "end-to-start") -> list[int]:
    """Start positions of the windows, in the order they run.

    `end-to-start` (the released setting: S 400, W 100, stride 50 → 300, 250, …, 0) and
    `start-to-end` step by `stride` and always end on the far edge (position 0, resp. S − W), also
    when S − W is not a multiple of the stride; the chained orders run one then the other without
    repeating the turning window; `single` is one window at 0. With S ≤ W there is one window.
    """
    for name, value in (("shortlist", shortlist), ("window", window), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if stride > window:
        raise ValueError(f"stride: expected at most the window ({window}), got {stride}: images would be skipped")
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {', '.join(ORDERS)}, got {order!r}")
    last = max(shortlist - window, 0)
    if order == "single" or last == 0:
        return [0]
    forward = list(range(0, last, stride)) + [last]
    backward = list(range(last, 0, -stride)) + [0]
    return {
        "end-to-start": backward,
        "start-to-end": forward,
        "start-to-end-to-start": forward + backward[1:],
        "end-to-start-to-end": backward + forward[1:],
    }[order]


@dataclass
class SlidingResult:
    order: np.ndarray  #: [N] shortlist positions, re-ranked: the first S re-sorted, then the untouched rest
    scores: np.ndarray  #: [N] aligned with `order`: the fused score of the last window that sorted it, NaN past S
    starts: list[int]  #: the window starts, in the order they ran


def sliding_rerank(
    score_window: Callable[[np.ndarray], np.ndarray],
    global_sim: np.ndarray,
    *,
    shortlist: int = 400,
    window: int = 100,
    stride: int = 50,
    order: str = "end-to-start",
    alpha: float = 0.5,
    temperature: float = 0.1,
) -> SlidingResult:
    """Re-rank the first `shortlist` of N first-stage candidates window by window.

    `global_sim` [N]: first-stage similarities in first-stage order (position p is the p-th candidate).
    `score_window(positions [w] int64) → raw logits [w]` scores the candidates at those positions, in
    that order. Defaults are LOCORE's released setting (§3.6). A shortlist longer than N uses N; in
    `single` mode one window of `min(window, N)` is re-ranked.
    """
    g = np.asarray(global_sim)
    if g.ndim != 1 or not np.issubdtype(g.dtype, np.floating):
        raise InputError(f"global_sim: expected a 1-D float array [N], got {g.dtype} {list(g.shape)}")
    if not np.isfinite(g).all():
        raise InputError("global_sim: contains NaN or infinite values")
    window_starts(shortlist, window, stride, order)  # checks the settings, also for an empty list
    n = len(g)
    s = min(window if order == "single" else shortlist, n)
    starts = window_starts(s, window, stride, order) if s else []
    positions = np.arange(n, dtype=np.int64)
    scores = np.full(n, np.nan)
    for st in starts:
        end = min(st + window, s)
        idx = positions[st:end].copy()
        raw = np.asarray(score_window(idx))
        if raw.shape != idx.shape:
            raise InputError(
                f"score_window: expected {len(idx)} logits for the window at {st}, got shape {list(raw.shape)}"
            )
        if not np.isfinite(raw).all():
            raise InputError(f"score_window: returned NaN or infinite logits for the window at {st}")
        fused = fuse(g[idx], raw, alpha, temperature)
        ranked = np.argsort(-fused, kind="stable")  # ties keep the current order
        positions[st:end] = idx[ranked]
        scores[st:end] = fused[ranked]
    return SlidingResult(positions, scores, starts)
