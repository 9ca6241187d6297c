"""A first stage from extracted global vectors: every query's exact nearest gallery images by cosine
similarity, in the `nn_*.pkl` layout the re-rankers read.

The released datasets come with SuperGlobal's shortlist (`nn_superglobal.pkl`); a folder of new images
described by `rerankrt extract` has none, and this is the simplest one: the DINOv2 (or RAML) globals
are L2-normalised, so a dot product is the cosine. The gallery is scanned in chunks of at most
`ELEMENTS` similarities and `ROWS` images, so memory stays bounded whatever the number of queries and
gallery images.

Equal gallery images must get equal similarities, so that they stay in gallery order: a float32 GEMM
rounds a row's product differently by its position in the block (SIMD tails, blocking), 1 ulp apart, and
their order depended on the CPU. So the scan is float32 and only picks the candidates, every image within
`MARGIN` of the k-th similarity (far more than float32 rounding of a product of unit vectors); their
similarities are then taken again in float64, one row at a time, and rounded to float32, and those order
them. That costs a k-row product on top of the scan.
"""

from __future__ import annotations

import numpy as np

from rerankrt.core.errors import InputError

#: similarities held per step (queries × gallery images): 64 MB of float32
ELEMENTS = 2**24
#: how far below the k-th float32 similarity a candidate may be (float32 rounding is ~1e-7 here)
MARGIN = 1e-5


def global_shortlist(query: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), both [n_queries, min(k, n_gallery)], best first; equal similarities in
    gallery order."""
    if k <= 0:
        raise InputError(f"expected a positive shortlist length, got {k}", param="k")
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise InputError(f"global vectors: expected [queries, D] and [gallery, D] of one D, got "
                         f"{list(query.shape)} and {list(gallery.shape)}")
    n, k = len(gallery), min(k, len(gallery))
    q = np.asarray(query, np.float32)
    sims, idx = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
    group = max(ELEMENTS // n, 1)  # queries per pass
    rows = max(ELEMENTS // len(q[:group]), 1)  # gallery images per product
    for g in range(0, len(q), group):
        queries = q[g:g + group]
        scan = np.empty((len(queries), n), np.float32)
        for start in range(0, n, rows):
            scan[:, start:start + rows] = queries @ np.asarray(gallery[start:start + rows], np.float32).T
        kth = np.partition(scan, n - k, axis=1)[:, n - k]
        for r, row in enumerate(scan):
            candidates = np.flatnonzero(row >= kth[r] - MARGIN)
            exact = (np.asarray(gallery[candidates], np.float64) @ queries[r].astype(np.float64)).astype(np.float32)
            order = np.lexsort((candidates, -exact))[:k]  # by similarity, then gallery index
            sims[g + r], idx[g + r] = exact[order], candidates[order]
    return sims, idx
