"""A first stage from extracted global vectors: every query's exact nearest gallery images by cosine
similarity, in the `nn_*.pkl` layout the re-rankers read.

The released datasets come with SuperGlobal's shortlist (`nn_superglobal.pkl`); a folder of new images
described by `rerankrt extract` has none, and this is the simplest one: the DINOv2 (or RAML) globals
are L2-normalised, so a dot product is the cosine. The gallery is scanned in chunks of at most
`ELEMENTS` similarities, so memory stays bounded whatever the number of queries and gallery images.
"""

from __future__ import annotations

import numpy as np

from rerankrt.errors import InputError

#: similarities computed per step (queries × gallery chunk): 64 MB of float32
ELEMENTS = 2**24


def global_shortlist(query: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), both [n_queries, min(k, n_gallery)], best first; equal similarities in
    gallery order."""
    if k <= 0:
        raise InputError(f"--k: expected a positive shortlist length, got {k}")
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise InputError(f"global vectors: expected [queries, D] and [gallery, D] of one D, got "
                         f"{list(query.shape)} and {list(gallery.shape)}")
    k = min(k, len(gallery))
    q = np.asarray(query, np.float32)
    sims = np.zeros((len(q), 0), np.float32)
    idx = np.zeros((len(q), 0), np.int64)
    chunk = max(ELEMENTS // max(len(q), 1), 1)
    for start in range(0, len(gallery), chunk):
        block = np.asarray(gallery[start:start + chunk], np.float32)
        sims = np.concatenate([sims, q @ block.T], axis=1)
        idx = np.concatenate([idx, np.broadcast_to(np.arange(start, start + len(block)), (len(q), len(block)))],
                             axis=1)
        order = np.lexsort((idx, -sims), axis=1)[:, :k]  # by similarity, then gallery index
        sims, idx = np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)
    return sims, idx
