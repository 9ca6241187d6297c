"""Re-rankers over any backend (numpy only): a query, its shortlist and the first-stage similarities in,
the new order and fused scores out.

`AmesReranker` scores the shortlist pair by pair in batches that fit the backend's `pairs` profile:
through the whole model (the query's descriptors repeated per pair), or through the scorer from stored
database entries (`search.store`), the query encoded once by the encoder. `LocoreReranker` runs
LOCORE's sliding windows (`runtime.sliding`), one backend call per window. The settings they run with,
and which one a model takes, are its loop's (`runtime.loops`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankrt.core.errors import InputError
from rerankrt.runtime.fusion import fuse
from rerankrt.runtime.sliding import SlidingResult, sliding_rerank


@dataclass
class Reranked:
    order: np.ndarray  #: [S] shortlist positions, best first
    scores: np.ndarray  #: [S] fused scores, aligned with `order`
    logits: np.ndarray  #: [S] raw re-ranker logits, aligned with `order`


def check_fusion(weight: float, temperature: float, names: tuple[str, str]) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"{names[0]}: expected a weight in [0, 1], got {weight}")
    if not temperature > 0.0:
        raise ValueError(f"{names[1]}: expected a positive temperature, got {temperature}")


def encode_query(encoder, desc, mask) -> np.ndarray:
    """The stored form [Q,E] of one image's descriptors [Q,D] through an AMES `encoder` backend."""
    out = next(spec.name for spec in encoder.output_specs())
    return encoder.infer({"desc": desc[None].astype(encoder.float_dtype()), "mask": mask[None]})[out][0]


class AmesReranker:
    """`AmesReranker(backend, lam, gamma).rerank(q_desc [Q,D], q_mask [Q], db [S,…], db_mask [S,T],
    global_sim [S])`. Released fusion defaults per variant: reference §2.6 (`runtime.loops`).

    With the whole model (loop "ames") `db` are the database images' descriptors [S,T,D]. With a scorer
    (loop "ames-store") `db` are their stored entries [S,T,E] (`AmesStore.entries`: bool codes or fp16
    tokens) and `encoder` encodes the query, once per `rerank`; or (`encoded`, loop "ames-store-encoded") the
    query comes in its stored form [Q,E], encoded once by the caller for several stores (a search's shards)."""

    def __init__(self, backend, lam: float, gamma: float, batch: int | None = None, encoder=None,
                 encoded: bool = False) -> None:
        check_fusion(lam, gamma, ("lambda", "gamma"))
        self.stored = backend.input_specs()[0].name != "q_desc"  # a scorer takes the query's stored form
        if self.stored != (encoder is not None or encoded) or (encoder is not None and encoded):
            raise ValueError(f"{backend.meta['model']}: " + (
                "the whole model takes no encoder and no encoded query" if not self.stored else
                "a scorer takes the encoder of the query side or the encoded query, not both" if encoded else
                "a scorer needs the encoder of the query side (or the encoded query)"))
        self.backend, self.lam, self.gamma, self.encoder = backend, lam, gamma, encoder
        limit = backend.profiles()["pairs"]["max"]
        self.batch = min(batch or limit, limit)

    def logits(self, q_desc, q_mask, db, db_mask) -> np.ndarray:
        """Raw logits [S] in shortlist order (`q_desc`: the query's stored form where it comes `encoded`)."""
        q_name, _, db_name, _ = (spec.name for spec in self.backend.input_specs())
        dtypes = {spec.name: spec.dtype for spec in self.backend.input_specs()}
        if self.stored:  # the query's stored form, once; the graph broadcasts it
            query = (q_desc if self.encoder is None else self.encode(q_desc, q_mask)).astype(dtypes[q_name])
        out = []
        for start in range(0, len(db), self.batch):
            n = min(self.batch, len(db) - start)
            if not self.stored:
                feeds = {q_name: np.broadcast_to(q_desc, (n, *q_desc.shape)).astype(dtypes[q_name]),
                         "q_mask": np.broadcast_to(q_mask, (n, *q_mask.shape)).copy()}
            else:
                feeds = {q_name: query, "q_mask": q_mask}
            feeds |= {db_name: db[start:start + n].astype(dtypes[db_name], copy=False),
                      "db_mask": db_mask[start:start + n]}
            out.append(self.backend.infer(feeds)["logits"].astype(np.float64))
        return np.concatenate(out) if out else np.zeros(0)

    def encode(self, desc, mask) -> np.ndarray:
        assert self.encoder is not None
        return encode_query(self.encoder, desc, mask)

    def rerank(self, q_desc, q_mask, db, db_mask, global_sim) -> Reranked:
        global_sim = np.asarray(global_sim, dtype=np.float64)
        if global_sim.shape != (len(db),):
            raise InputError(f"global_sim: expected shape [{len(db)}] (one per shortlist image), "
                             f"got {list(global_sim.shape)}")
        raw = self.logits(q_desc, q_mask, db, db_mask)
        fused = fuse(global_sim, raw, self.lam, self.gamma)
        order = np.argsort(-fused, kind="stable")
        return Reranked(order, fused[order], raw[order])


class LocoreReranker:
    """`LocoreReranker(backend, …).rerank(q_global [D], q_local [n,D], q_mask [n], g_global [N,D],
    g_local [N,n,D], g_mask [N,n], global_sim [N])` → the sliding-window result; defaults are the
    released setting (S 400, W 100, stride 50, end-to-start, α 0.5, t 0.1)."""

    def __init__(self, backend, shortlist: int = 400, window: int = 100, stride: int = 50,
                 order: str = "end-to-start", alpha: float = 0.5, temperature: float = 0.1) -> None:
        check_fusion(alpha, temperature, ("alpha", "temperature"))
        limit = backend.profiles()["images"]["max"]
        if window > limit:
            raise ValueError(f"window: {window} images exceed the backend's profile (images ≤ {limit})")
        self.backend = backend
        self.shortlist, self.window, self.stride, self.order = shortlist, window, stride, order
        self.alpha, self.temperature = alpha, temperature

    def rerank(self, q_global, q_local, q_mask, g_global, g_local, g_mask, global_sim) -> SlidingResult:
        dtype = self.backend.float_dtype()

        def score_window(positions: np.ndarray) -> np.ndarray:
            feeds = {"q_global": q_global[None].astype(dtype), "q_local": q_local[None].astype(dtype),
                     "q_mask": q_mask[None], "g_global": g_global[positions][None].astype(dtype),
                     "g_local": g_local[positions][None].astype(dtype), "g_mask": g_mask[positions][None]}
            return self.backend.infer(feeds)["scores"][0].astype(np.float64)

        return sliding_rerank(score_window, np.asarray(global_sim, dtype=np.float64), shortlist=self.shortlist,
                              window=self.window, stride=self.stride, order=self.order, alpha=self.alpha,
                              temperature=self.temperature)
