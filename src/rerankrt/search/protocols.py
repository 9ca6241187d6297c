"""What a search index is made of, declared once: a first stage (exact scan, exact graph, faiss, shards)
and a re-ranker's database store (AMES codes or tokens, LOCORE's descriptors, shards of either)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class FirstStage(Protocol):
    """Cosine top-k over a gallery's global vectors. `kind` names it ("exact", "faiss", "mixed" for shards
    of both); its search knobs (nprobe, efSearch) are checked by `check_knobs` once per query, before any
    work, and an exact stage refuses any."""

    kind: str

    def check_knobs(self, nprobe: int | None = None, ef_search: int | None = None) -> None: ...

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities [n, ≤k] float32, gallery rows [n, ≤k] int64) of unit `queries` [n, D], best first."""
        ...


class RerankStore(Protocol):
    """A re-ranker's entries of every gallery image, memory-mapped. A store refuses a backend that was not
    built with its weights: AMES's through its encoder and scorer, LOCORE's through its one list-wise
    graph (`check_reranker`); each refuses the other's check by name."""

    path: Path
    model: str
    images: int
    descriptors: int
    manifest: dict

    def entries(self, indices) -> tuple[np.ndarray, ...]: ...

    def check_encoder(self, meta: dict) -> None: ...

    def check_scorer(self, meta: dict) -> None: ...

    def check_reranker(self, meta: dict) -> None: ...
