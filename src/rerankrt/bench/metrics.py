"""Retrieval metrics, exactly as the benchmarks' own toolkits compute them (reference §1.5, §4.3).

- Revisited Oxford/Paris (revisitop): trapezoidal AP with junk images removed from the ranking (each
  positive moves up by the number of junk images ranked before it), mP@k, three protocols (Easy,
  Medium, Hard); queries without positives are excluded from the means.
- GLDv2 retrieval: mAP@100 with "rectangular" AP (precision summed at each positive, divided by
  min(#positives, 100)); public = all queries but the last 750, private = the last 750.
- SOP / CUB-200 / In-Shop: Recall@k (is a same-label image among the first k).
All results are fractions (not percentages). numpy only.
"""

from __future__ import annotations

import numpy as np

from rerankrt.core.errors import InputError

#: revisitop's protocols: which ground-truth lists are positives, which are junk.
PROTOCOLS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}
GLDV2_PRIVATE = 750


def compute_ap(positions: np.ndarray, n_positives: int) -> float:
    """Trapezoidal AP of positives at 0-based `positions` (junk already removed), out of `n_positives`."""
    ap = 0.0
    step = 1.0 / n_positives
    for j, rank in enumerate(positions):
        precision_before = j / rank if rank else 1.0
        precision_at = (j + 1) / (rank + 1)
        ap += (precision_before + precision_at) * step / 2.0
    return ap


def _check_ranks(ranks: np.ndarray, n_queries: int | None = None) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or not np.issubdtype(ranks.dtype, np.integer):
        raise InputError(f"ranks: expected integer database indices [n_queries, n_ranked], got "
                         f"{ranks.dtype} {list(ranks.shape)}")
    if n_queries is not None and ranks.shape[0] != n_queries:
        raise InputError(f"ranks: {ranks.shape[0]} queries, but the ground truth has {n_queries}")
    return ranks


def revisited_evaluate(ranks, gnd: list[dict], kappas=(1, 5, 10)) -> dict[str, dict[str, float]]:
    """{"easy"|"medium"|"hard": {"map", "mp@k" …}} for `ranks` [n_queries, n_ranked] (row q: database
    indices in ranked order) and `gnd` (the list of `gnd_*.pkl`)."""
    ranks = _check_ranks(ranks, len(gnd))
    out = {}
    for protocol, (ok_keys, junk_keys) in PROTOCOLS.items():
        aps, precisions = [], []
        for q, g in enumerate(gnd):
            ok = np.concatenate([np.asarray(g.get(k, []), dtype=np.int64) for k in ok_keys])
            if ok.size == 0:
                continue
            junk = np.concatenate([np.asarray(g.get(k, []), dtype=np.int64) for k in junk_keys])
            row = ranks[q]
            pos = np.flatnonzero(np.isin(row, ok))
            junk_pos = np.flatnonzero(np.isin(row, junk))
            pos = pos - np.searchsorted(junk_pos, pos)  # junk ranked before a positive does not count
            aps.append(compute_ap(pos, len(ok)))
            one_based = pos + 1
            precisions.append([((one_based <= min(one_based.max(), k)).sum() / min(one_based.max(), k))
                               if one_based.size else 0.0 for k in kappas])
        result = {"map": float(np.mean(aps)) if aps else float("nan")}
        for j, k in enumerate(kappas):
            result[f"mp@{k}"] = float(np.mean([p[j] for p in precisions])) if precisions else float("nan")
        out[protocol] = result
    return out


def reorder_junk(idx: np.ndarray, junk) -> np.ndarray:
    """The DELG convention (§1.5): junk images move, stably, to the end of a query's shortlist.
    Returns the permutation of positions (apply it to the indices and the similarities alike)."""
    is_junk = np.isin(idx, np.asarray(list(junk), dtype=np.int64))
    return np.concatenate([np.flatnonzero(~is_junk), np.flatnonzero(is_junk)])


def protocol_junk(g: dict, protocol: str) -> list[int]:
    """What a protocol's run pushes out of the shortlist: Medium junk; Hard junk + easy."""
    if protocol not in ("medium", "hard"):
        raise ValueError(f"protocol: the re-ranking runs are medium and hard, got {protocol!r}")
    return [int(i) for k in PROTOCOLS[protocol][1] for i in g.get(k, [])]


def gldv2_map_at_100(ranks, gnd: list[dict], k: int = 100) -> dict[str, float]:
    """{"public", "private"} mAP@k of GLDv2-test (gnd entries with 'ok'); queries without positives
    count as 0, as in the official metric."""
    ranks = _check_ranks(ranks, len(gnd))[:, :k]
    aps = []
    for q, g in enumerate(gnd):
        ok = np.asarray(g.get("ok", []), dtype=np.int64)
        if ok.size == 0:
            aps.append(0.0)
            continue
        hits = np.isin(ranks[q], ok)
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / min(len(ok), k)))
    aps_arr = np.asarray(aps)
    split = max(len(aps_arr) - GLDV2_PRIVATE, 0)
    return {"public": float(aps_arr[:split].mean()) if split else float("nan"),
            "private": float(aps_arr[split:].mean()) if len(aps_arr) > split else float("nan")}


def recall_at_k(ranks, query_labels, db_labels, ks=(1, 10)) -> dict[int, float]:
    """Recall@k: the fraction of queries with a same-label database image among their first k. For SOP
    and CUB, where queries are the database, leave each query's own index out of `ranks`."""
    ranks = _check_ranks(ranks, len(query_labels))
    db_labels = np.asarray(db_labels)
    hits = db_labels[ranks] == np.asarray(query_labels)[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}
