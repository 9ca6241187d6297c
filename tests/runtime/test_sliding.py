"""LOCORE's sliding-window re-ranking against a literal reading of reference §3.6, for every order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankrt.core.errors import InputError
from rerankrt.runtime import ORDERS, fuse, sliding_rerank, window_starts


def literal_starts(s: int, w: int, stride: int, order: str) -> list[int]:
    """§3.6: end-to-start S−W, S−W−stride, …, 0; start-to-end 0, stride, …, S−W; chains without the
    turning window repeated. The far edge is always visited."""
    if order == "single" or s <= w:
        return [0]
    e2s = sorted(set(range(s - w, -1, -stride)) | {0}, reverse=True)
    s2e = sorted(set(range(0, s - w + 1, stride)) | {s - w})
    chains = {"end-to-start": e2s, "start-to-end": s2e,
              "start-to-end-to-start": s2e + e2s[1:], "end-to-start-to-end": e2s + s2e[1:]}
    return chains[order]


def literal_sliding(score, g, s, w, stride, order, alpha, t):
    """§3.6's algorithm step by step with Python lists."""
    s = min(w if order == "single" else s, len(g))
    order_list = list(range(s))  # 1. positions in the shortlist
    for start in literal_starts(s, w, stride, order):
        idx = order_list[start:start + w]
        raw = score(np.array(idx, dtype=np.int64))
        c = [alpha * g[i] + (1 - alpha) / (1 + np.exp(-t * r)) for i, r in zip(idx, raw, strict=True)]
        order_list[start:start + w] = [i for _, i in sorted(zip(c, idx, strict=True), key=lambda p: -p[0])]
    return order_list + list(range(s, len(g)))  # 4. then the untouched global order


def window_scorer(rng, n):
    """Raw logits that depend on the image and on its place in the window (as LOCORE's positions do)."""
    base = rng.normal(0, 20, n)
    return lambda idx: base[idx] + 3.0 * np.arange(len(idx))


def test_released_setting_starts():
    assert window_starts(400, 100, 50) == [300, 250, 200, 150, 100, 50, 0]
    assert window_starts(400, 100, 50, "start-to-end") == [0, 50, 100, 150, 200, 250, 300]
    assert window_starts(400, 100, 50, "start-to-end-to-start") == [0, 50, 100, 150, 200, 250, 300, 250, 200,
                                                                     150, 100, 50, 0]
    assert window_starts(400, 100, 50, "single") == [0]


def test_hand_worked_bubbling():
    """N 5, S 4, W 2, stride 1, α 0: windows at 2, 1, 0 carry image 3 from position 3 to the top;
    image 4, past S, stays last."""
    result = sliding_rerank(lambda idx: idx.astype(float), np.linspace(0.9, 0.5, 5), shortlist=4, window=2,
                            stride=1, alpha=0.0, temperature=1.0)
    assert result.starts == [2, 1, 0]
    assert result.order.tolist() == [3, 0, 1, 2, 4]
    np.testing.assert_allclose(result.scores[:4], [1 / (1 + np.exp(-3)), 0.5, 1 / (1 + np.exp(-1)),
                                                   1 / (1 + np.exp(-2))])
    assert np.isnan(result.scores[4])


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("n", "s", "w", "stride"), [
    (500, 400, 100, 50),   # released
    (420, 400, 100, 30),   # S − W not a multiple of the stride
    (300, 230, 100, 50),
    (90, 400, 100, 50),    # shortlist longer than the list, and shorter than a window
    (150, 60, 100, 50),    # S < W
    (200, 200, 100, 100),  # stride = W: no overlap
])
def test_matches_literal(rng, order, n, s, w, stride):
    g = np.sort(rng.uniform(0.2, 0.9, n))[::-1].copy()
    score = window_scorer(rng, n)
    result = sliding_rerank(score, g, shortlist=s, window=w, stride=stride, order=order, alpha=0.5, temperature=0.1)
    expected = literal_sliding(score, g, s, w, stride, order, 0.5, 0.1)
    assert result.order.tolist() == expected
    assert result.starts == literal_starts(min(w if order == "single" else s, n), w, stride, order)
    assert sorted(result.order.tolist()) == list(range(n))
    reranked = min(w if order == "single" else s, n)
    assert result.order[reranked:].tolist() == list(range(reranked, n))  # the rest keeps the first-stage order
    assert np.isnan(result.scores[reranked:]).all() and np.isfinite(result.scores[:reranked]).all()


def test_windows_see_the_current_order(rng):
    """A later window scores its images in the order the earlier windows left them."""
    seen = []
    sliding_rerank(lambda idx: seen.append(idx.copy()) or -idx.astype(float), np.zeros(6), shortlist=6, window=4,
                   stride=2, alpha=0.0, temperature=1.0)
    assert [s.tolist() for s in seen] == [[2, 3, 4, 5], [0, 1, 2, 3]]  # window 1 sorts by −idx: 2 stays first


def test_fuse():
    np.testing.assert_allclose(fuse(np.array([0.4]), np.array([0.0]), 0.5, 0.1), [0.45])
    assert np.isfinite(fuse(np.zeros(2), np.array([-1e6, 1e6]), 0.5, 1.0)).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shortlist": 0}, "shortlist: expected a positive integer, got 0"),
    ({"window": -1}, "window: expected a positive integer, got -1"),
    ({"stride": 0}, "stride: expected a positive integer, got 0"),
    ({"stride": 101}, "stride: expected at most the window (100), got 101: images would be skipped"),
    ({"order": "backwards"}, "order: expected one of end-to-start, start-to-end, start-to-end-to-start, "
                             "end-to-start-to-end, single, got 'backwards'"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError) as e:
        sliding_rerank(lambda idx: np.zeros(len(idx)), np.zeros(10), **kwargs)
    assert str(e.value) == message


def test_bad_scorer_and_similarities():
    with pytest.raises(InputError, match=r"^score_window: expected 10 logits for the window at 0, got shape \[9\]$"):
        sliding_rerank(lambda idx: np.zeros(len(idx) - 1), np.zeros(10))
    with pytest.raises(InputError, match=r"^score_window: returned NaN or infinite logits for the window at 0$"):
        sliding_rerank(lambda idx: np.full(len(idx), np.nan), np.zeros(10))
    with pytest.raises(InputError, match=r"^global_sim: expected a 1-D float array \[N\], got int64 \[2, 5\]$"):
        sliding_rerank(lambda idx: np.zeros(len(idx)), np.zeros((2, 5), dtype=np.int64))


def test_empty_list():
    result = sliding_rerank(lambda idx: np.zeros(len(idx)), np.zeros(0))
    assert result.order.tolist() == [] and result.starts == []


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 60), s=st.integers(1, 70), w=st.integers(1, 30), data=st.data(),
       order=st.sampled_from(ORDERS), alpha=st.floats(0.0, 1.0), t=st.floats(0.01, 0.1))
def test_any_setting_matches_the_literal_reading(n, s, w, data, order, alpha, t):
    """For every valid setting: the literal §3.6 order, a permutation of the list, windows inside the
    shortlist that together cover all of it, and the rest untouched. (Temperatures up to the released 0.1:
    beyond, the logistic of these logits rounds to 1.0 in float64, and two formulas of it break the
    resulting ties differently.)"""
    stride = data.draw(st.integers(1, w), label="stride")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    g = np.sort(rng.uniform(0.0, 1.0, n))[::-1].copy()
    score = window_scorer(rng, n)
    result = sliding_rerank(score, g, shortlist=s, window=w, stride=stride, order=order, alpha=alpha, temperature=t)
    assert result.order.tolist() == literal_sliding(score, g, s, w, stride, order, alpha, t)
    assert sorted(result.order.tolist()) == list(range(n))
    reranked = min(w if order == "single" else s, n)
    assert result.order[reranked:].tolist() == list(range(reranked, n))
    covered = np.zeros(reranked, bool)
    for start in result.starts:
        assert 0 <= start and (start + w <= reranked or start == 0)
        covered[start:start + w] = True
    assert covered.all()
