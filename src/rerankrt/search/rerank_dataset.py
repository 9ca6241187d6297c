"""`rerankrt rerank`: re-rank every query of a dataset in the official layout (reference §1.3–1.4) and
write the new rankings in the `nn_*.pkl` layout.

The folder holds `{desc}_query_local.hdf5` and `{desc}_gallery_local.hdf5` (local descriptors),
`{desc}_query_global.pt` and `{desc}_gallery_global.pt` (raw float32 globals, LOCORE's GLOBAL tokens) and
the first-stage shortlist `nn_superglobal.pkl` ([2, n_queries, K]: similarities, indices). The output
has the same layout: for each query the first S neighbours in their re-ranked order with their fused
scores, then the rest of the first-stage list with its global similarities, untouched.

With a database store (`search.store`) and an AMES scorer, the database side comes from the store and
the gallery HDF5 need not exist; the query side still comes from the query HDF5, encoded once per query.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt.core.errors import InputError
from rerankrt.data.dataset_layout import DatasetLayout
from rerankrt.data.descriptors import LocalDescriptorFile, read_global, read_nn, write_nn
from rerankrt.runtime.loops import loop_of, reranker_for
from rerankrt.search.protocols import RerankStore


def _input_dim(backend, name: str) -> int:
    return int(next(s.shape for s in backend.input_specs() if s.name == name)[-1])


def rerank_dataset(
    backend,
    data: str | os.PathLike,
    out: str | os.PathLike,
    shortlist: int | None = None,
    desc: str = "dinov2",
    nn_file: str = "nn_superglobal.pkl",
    lam: float | None = None,
    gamma: float | None = None,
    log: Callable[[str], None] = lambda message: None,
    store: RerankStore | None = None,
    encoder=None,
    settings: dict | None = None,
) -> Path:
    """Re-rank every query's first-stage shortlist with the model of an entered `backend` (AMES or LOCORE,
    any variant; an AMES scorer with its `store` and query `encoder`) and write the result; defaults are
    the released settings, `settings` overrides any of its loop's by name (`runtime.loops`)."""
    layout = DatasetLayout(Path(data), desc, nn_file)
    with DatasetFiles(layout, backend, store, encoder) as files:
        sims, idx = read_nn(layout.root / nn_file, num_db=files.num_images)
        new_sims, new_idx = files.rerank(sims, idx, shortlist, lam, gamma, log, settings)
    write_nn(out, new_sims, new_idx)
    return Path(out)


class DatasetFiles:
    """The open descriptor files of a dataset (or its database store), checked against the backend."""

    def __init__(self, layout: DatasetLayout, backend, store: RerankStore | None = None, encoder=None) -> None:
        self.loop = loop_of(backend.meta)
        if self.loop.stored != (store is not None and encoder is not None):
            raise ValueError(f"{backend.meta['model']}: " + ("a scorer re-ranks from a store, with the encoder of "
                                                             "the query side" if self.loop.stored else
                                                             "re-ranks from descriptor files, not a store"))
        if store is not None:
            store.check_scorer(backend.meta)
            store.check_encoder(encoder.meta)  # the query is encoded with the store's weights too
        self.layout, self.backend, self.store, self.encoder = layout, backend, store, encoder
        self.dim = encoder.config["local_dim"] if store is not None else \
            _input_dim(backend, self.loop.query_input())

    def __enter__(self) -> DatasetFiles:
        self.queries = LocalDescriptorFile(self.layout.local("query"), dim=self.dim)
        self.gallery: LocalDescriptorFile | None = None
        if self.store is not None:
            return self
        try:
            self.gallery = LocalDescriptorFile(self.layout.local("gallery"), dim=self.dim)
            if self.loop.reads_globals:  # LOCORE's GLOBAL tokens, memory-mapped once, a row per image
                self.globals = {}
                for split, local in (("query", self.queries), ("gallery", self.gallery)):
                    self.globals[split] = read_global(self.layout.global_(split), self.dim)
                    local.check_globals(self.globals[split], self.layout.global_(split))
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.queries.close()
        if self.gallery is not None:
            self.gallery.close()

    @property
    def num_images(self) -> int:
        """The database images: the gallery file's, or the store's."""
        if self.store is not None:
            return int(self.store.images)
        assert self.gallery is not None
        return self.gallery.num_images

    def rerank(self, sims: np.ndarray, idx: np.ndarray, shortlist: int | None, lam: float | None,
               gamma: float | None, log: Callable[[str], None],
               settings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each query's first `shortlist` (released: AMES 100, LOCORE 400) re-ranked, the rest as given.
        `lam`, `gamma` are the fusion weight and temperature (LOCORE's α, t), `settings` any of the loop's
        run settings; None: the released ones."""
        if len(sims) != self.queries.num_images:
            raise InputError(f"{self.layout.nn}: {len(sims)} queries, but {self.layout.local('query')} holds "
                             f"{self.queries.num_images}")
        reranker, s = reranker_for(self.backend, lam, gamma, shortlist, self.encoder, settings)
        if not 1 <= s <= idx.shape[1]:
            raise InputError(f"expected 1 … {idx.shape[1]} (the neighbours in {self.layout.nn}), got {s}",
                             param="shortlist")
        if s > self.num_images:
            raise InputError(f"{s} is longer than the database ({self.num_images} images)", param="shortlist")
        resolved = self.loop.settings(self.backend.meta, settings)
        new_sims, new_idx = sims.copy(), idx.copy()
        for q in range(len(sims)):
            top = idx[q, :s]
            order, scores = self.loop.rerank_query(self, reranker, q, top, sims[q, :s], resolved)
            new_idx[q, :s], new_sims[q, :s] = top[order], scores
            if (q + 1) % 10 == 0 or q + 1 == len(sims):
                log(f"re-ranked {q + 1}/{len(sims)} queries")
        return new_sims, new_idx
