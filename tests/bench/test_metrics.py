"""Retrieval metrics: hand-computed cases, the literal revisitop loops, the real revisited ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from literal.revisitop import compute_map

from rerankrt.bench.metrics import (
    PROTOCOLS,
    compute_ap,
    gldv2_map_at_100,
    protocol_junk,
    recall_at_k,
    reorder_junk,
    revisited_evaluate,
)
from rerankrt.core.errors import InputError
from rerankrt.data import read_gnd


def test_ap_by_hand():
    assert compute_ap(np.array([0, 1]), 2) == 1.0
    # positives at ranks 1 and 3 (0-based 0, 2) of 2: (1+1)/2·½ + (½+⅔)/2·½ = 0.5 + 0.291666…
    assert compute_ap(np.array([0, 2]), 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    assert compute_ap(np.array([1]), 2) == pytest.approx((0 + 0.5) / 4)  # one of two found, at rank 2


def test_revisited_by_hand():
    gnd = [{"easy": [3], "hard": [5], "junk": [7]}]
    ranks = np.array([[7, 5, 1, 3, 0, 2, 4, 6]])  # junk first, then hard, then easy at 4th place
    out = revisited_evaluate(ranks, gnd, kappas=(1, 2))
    assert out["hard"]["map"] == 1.0  # junk removed, hard at the top
    assert out["hard"]["mp@1"] == 1.0
    assert out["easy"]["map"] == pytest.approx((0 + 0.5) / 2)  # easy at 0-based 1 after removing junk and hard
    assert out["medium"]["map"] == pytest.approx(1 / 2 + (1 / 2 + 2 / 3) / 4)  # positives at 0 and 2
    assert out["medium"]["mp@2"] == 0.5


@pytest.fixture(scope="module", params=["roxford5k", "rparis6k"])
def real(request, revisitop):
    data = read_gnd(revisitop / f"gnd_{request.param}.pkl")
    return data["gnd"], len(data["imlist"])


def perfect(gnd, n_db):
    rows = []
    for g in gnd:
        first = list(g["hard"]) + list(g["easy"])
        rows.append(first + [i for i in range(n_db) if i not in set(first)])
    return np.array(rows)


def test_perfect_ranking_on_the_real_ground_truth(real):
    gnd, n_db = real
    out = revisited_evaluate(perfect(gnd, n_db), gnd)
    assert out["medium"]["map"] == pytest.approx(1.0, abs=1e-12)
    assert out["hard"]["map"] == pytest.approx(1.0, abs=1e-12)
    assert out["medium"]["mp@10"] == 1.0


def test_reversed_ranking_matches_the_literal_toolkit(real):
    gnd, n_db = real
    reversed_ranks = perfect(gnd, n_db)[:, ::-1]
    out = revisited_evaluate(reversed_ranks, gnd)
    for protocol, (ok_keys, junk_keys) in PROTOCOLS.items():
        literal_gnd = [{"ok": np.concatenate([g[k] for k in ok_keys]),
                        "junk": np.concatenate([g[k] for k in junk_keys])} for g in gnd]
        expected_map, expected_pr = compute_map(reversed_ranks.T, literal_gnd)
        assert out[protocol]["map"] == pytest.approx(expected_map, abs=1e-12)
        assert [out[protocol][f"mp@{k}"] for k in (1, 5, 10)] == pytest.approx(expected_pr.tolist(), abs=1e-12)
    assert out["medium"]["map"] < 0.05 and out["hard"]["map"] < 0.05


def test_moving_junk_does_not_change_ap(real, rng):
    gnd, n_db = real
    ranks = np.stack([rng.permutation(n_db) for _ in gnd])
    moved = ranks.copy()
    for q, g in enumerate(gnd):  # junk to the very front, everything else in the same relative order
        order = reorder_junk(moved[q], g["junk"])
        junk_last = moved[q][order]
        n_junk = int(np.isin(junk_last, g["junk"]).sum())
        moved[q] = np.concatenate([junk_last[len(junk_last) - n_junk:], junk_last[:len(junk_last) - n_junk]])
    assert revisited_evaluate(moved, gnd)["medium"] == revisited_evaluate(ranks, gnd)["medium"]


def test_queries_without_positives_are_excluded():
    gnd = [{"easy": [0], "hard": [], "junk": []}, {"easy": [], "hard": [], "junk": []}]
    assert revisited_evaluate(np.array([[0, 1], [1, 0]]), gnd)["medium"]["map"] == 1.0


def test_junk_reordering_is_stable():
    idx = np.array([9, 4, 7, 1, 3, 8])
    order = reorder_junk(idx, [7, 3])
    assert idx[order].tolist() == [9, 4, 1, 8, 7, 3]
    g = {"easy": [1], "hard": [2], "junk": [3]}
    assert protocol_junk(g, "medium") == [3] and protocol_junk(g, "hard") == [3, 1]
    with pytest.raises(ValueError, match="protocol: the re-ranking runs are medium and hard, got 'easy'"):
        protocol_junk(g, "easy")


def test_gldv2_map_at_100_rectangular():
    gnd = [{"ok": [1, 2]}] + [{"ok": [5]}] * 750
    ranks = np.tile(np.arange(200), (751, 1))
    ranks[0, :3] = [1, 9, 2]  # precisions 1 and 2/3 at the positives, / min(2, 100)
    out = gldv2_map_at_100(ranks, gnd)
    assert out["public"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["private"] == pytest.approx(1 / 6)  # image 5 at rank 6


def test_recall_at_k():
    ranks = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])  # self left out
    labels = np.array([0, 0, 1, 2])
    assert recall_at_k(ranks, labels, labels, ks=(1, 2)) == {1: 0.5, 2: 0.5}


def test_bad_ranks():
    with pytest.raises(InputError, match=r"ranks: 2 queries, but the ground truth has 3"):
        revisited_evaluate(np.zeros((2, 4), np.int64), [{}] * 3)
    message = r"ranks: expected integer database indices \[n_queries, n_ranked\], got float64"
    with pytest.raises(InputError, match=message):
        revisited_evaluate(np.zeros((3, 4)), [{}] * 3)
