"""The revisitop toolkit's compute_ap / compute_map, transcribed from the protocol text (reference §1.5) as
loops over one query at a time: junk images before a positive move it up one place each."""

from __future__ import annotations

import numpy as np


def compute_ap(ranks, nres):
    ap = 0.0
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else j / rank
        precision_1 = (j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) / nres / 2.0
    return ap


def compute_map(ranks_db_by_q, gnd, kappas=(1, 5, 10)):
    """`ranks_db_by_q` is [n_database, n_queries] (the toolkit's layout); gnd entries have 'ok' and 'junk'."""
    nq = len(gnd)
    total, nempty = 0.0, 0
    pr = np.zeros(len(kappas))
    for i in range(nq):
        qgnd = np.array(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            nempty += 1
            continue
        ok, bad = set(qgnd.tolist()), set(np.array(gnd[i]["junk"]).tolist())
        column = ranks_db_by_q[:, i].tolist()
        pos = [p for p, image in enumerate(column) if image in ok]
        junk = [p for p, image in enumerate(column) if image in bad]
        shifted = []
        before = 0
        for p in pos:  # junk positions are sorted: count those before each positive
            while before < len(junk) and junk[before] < p:
                before += 1
            shifted.append(p - before)
        total += compute_ap(shifted, len(qgnd))
        one_based = np.array(shifted) + 1
        for j, k in enumerate(kappas):
            kq = min(one_based.max(), k)
            pr[j] += (one_based <= kq).sum() / kq
    return total / (nq - nempty), pr / (nq - nempty)
