"""An index's first stage: the gallery's nearest images of a query's global vector, exact or through faiss.

    exact     `globals.f32` [N, D] float32, scanned whole per query (`first_stage.global_shortlist`):
              3,072 B per image at 768-d, and a cost linear in N (10.5 ms per query at 100,000 images, 2 cores)
    FACTORY   a faiss `index_factory` string (`IVF1024,PQ64`, `OPQ64,IVF1024,PQ64`, `HNSW32`, …) over inner
              products of the L2-normalised globals: `first_stage.faiss` only, no raw vectors (IVF-PQ at 64
              bytes a code: ~72 B per image with its id); trained on a sample of the gallery
    auto      exact up to `EXACT_UP_TO` images without a byte budget; else the candidate measured fastest
              within the budget that reaches the target recall (`first_stage_choice`; faiss needed then)

An approximate first stage loses some of the exact shortlist, by an amount that depends on the gallery (on
synthetic 768-d data of high intrinsic dimension, IVF256,PQ64 kept 41 % of the exact top 100, HNSW32 85 %):
so `build` measures it, recall@S against the exact scan (`RecallProbe`) of queries that are not the images
they find: `RECALL_QUERIES` gallery rows (`sample_rows(N, n, seed)`), each removed from its own ground
truth and from what the stage returns, or the user's own queries; at the search knobs it records
(`nprobe`, `efSearch`, a refine's `k_factor_rf`) as the defaults a search runs with. `auto` with a byte
budget measures candidates before it chooses (`first_stage_choice`). faiss is imported only for a faiss
first stage (`rerankrt[search]`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt.core.errors import InputError, ModelFileError
from rerankrt.core.optional import require
from rerankrt.search.exact import global_shortlist
from rerankrt.search.protocols import FirstStage

EXACT = "exact"
AUTO = "auto"
#: `auto` scans exactly up to this many images (a scan is ~0.2 µs per image per query at 768-d on 2 cores)
EXACT_UP_TO = 100_000
GLOBALS = "globals.f32"
FAISS_FILE = "first_stage.faiss"
#: gallery vectors a faiss first stage is trained on by default (300 MB at 768-d float32)
TRAIN_SAMPLE = 100_000
#: gallery vectors used as queries to measure an approximate first stage's recall
RECALL_QUERIES = 1000
SEED = 0
#: search knobs a faiss first stage is built with unless given (faiss's own defaults are nprobe 1, efSearch 16)
DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 128
#: vectors added to a faiss index per step (bounded memory)
CHUNK = 65536
#: rounds an OPQ rotation is trained in (faiss's default 50)
OPQ_ITERATIONS = 20
#: how far from 1 a global vector's L2 norm may be before the gallery is normalised (and it is said)
NORM_TOLERANCE = 1e-3


def faiss_module():
    return require("faiss", "search", "an approximate first stage")


def _faiss_message(e: Exception) -> str:
    """faiss's exception text without its C++ location: "Error in f() at file.cpp:12: why" → "why"."""
    text = " ".join(str(e).split())
    match = re.match(r"Error in .*? at \S+:\d+: (.*)$", text)
    return match.group(1) if match else text


def ivf_lists(images: int) -> int:
    """About 4·√N inverted lists, a power of two."""
    return 2 ** max(1, round(math.log2(4 * math.sqrt(images))))


def ivf_pq(images: int) -> str:
    """The rule `auto` was before it measured (the scale bench's baseline): IVF with `ivf_lists` lists,
    64-byte PQ codes."""
    return f"IVF{ivf_lists(images)},PQ64"


def sample_rows(images: int, n: int, seed: int = SEED) -> np.ndarray:
    """`n` distinct gallery rows in increasing order, the same for the same arguments."""
    return np.sort(np.random.default_rng(seed).choice(images, size=min(n, images), replace=False))


def positive_knob(name: str, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise InputError(f"expected a positive number, got {value}", param=name)
    return value


def normalised(block: np.ndarray, what: str = "global vectors", offset: int = 0) -> tuple[np.ndarray, bool]:
    """`block` [n, D] with unit rows, and whether any row had to be scaled; a zero row (image `offset` + its
    row) is an InputError."""
    norms = np.linalg.norm(block, axis=1)
    if (np.abs(norms - 1) <= NORM_TOLERANCE).all():
        return block, False
    if (norms == 0).any():
        raise InputError(f"{what}: image {offset + int(np.flatnonzero(norms == 0)[0])} has a zero vector (no "
                         f"cosine similarity)")
    return (block / norms[:, None]).astype(np.float32), True


def exact_knobs(nprobe: int | None, ef_search: int | None) -> None:
    """An exact first stage takes no search knobs: refuse any given."""
    for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
        if positive_knob(name, value) is not None:
            raise InputError(f"the index's first stage is exact (it has no {name} to set)", param=name)


class ExactFirstStage:
    """The exact scan over memory-mapped globals; equal similarities in gallery order."""

    kind = EXACT

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def check_knobs(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        exact_knobs(nprobe, ef_search)

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        self.check_knobs(nprobe, ef_search)
        return global_shortlist(queries, self.vectors, k)


class GraphFirstStage:
    """The exact scan through an entered `first-stage` backend (`models/cards/first_stage.py`): the gallery
    `vectors` [N, D] go to the device once where the backend keeps inputs resident (TensorRT: one device
    buffer, bound on every call, nothing copied per query), else they are fed as they are (ONNX Runtime
    reads a float32 memory map in place; an FP16 graph gets one FP16 copy). Equal similarities in gallery
    order (ONNX TopK's rule); an FP16 graph's similarities are those of the FP16 vectors."""

    kind = EXACT

    def __init__(self, backend, vectors: np.ndarray) -> None:
        profile = backend.profiles()["images"]
        if not profile["min"] <= len(vectors) <= profile["max"]:
            raise InputError(f"first-stage graph: the index holds {len(vectors)} images, the graph's profile takes "
                             f"{profile['min']}…{profile['max']} (build it with `profile` images:…)")
        self.backend, self.k, self.batch = backend, int(backend.config["k"]), backend.profiles()["batch"]["max"]
        dtype = backend.float_dtype()
        resident = getattr(backend, "resident", None)
        self.database = resident("database", vectors) if resident is not None else \
            np.asarray(vectors, dtype) if vectors.dtype == dtype else vectors.astype(dtype)

    def check_knobs(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        exact_knobs(nprobe, ef_search)

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if k <= 0:
            raise InputError(f"expected a positive shortlist length, got {k}", param="k")
        if k > self.k:
            raise InputError(f"first-stage graph: returns at most {self.k} neighbours, {k} were asked for "
                             f"(export it with a larger k)")
        self.check_knobs(nprobe, ef_search)
        q = np.asarray(queries, self.backend.float_dtype())
        parts = [self.backend.infer({"query": q[s:s + self.batch], "database": self.database}, trusted=("database",))
                 for s in range(0, len(q), self.batch)]
        return (np.concatenate([p["scores"][:, :k] for p in parts]),
                np.concatenate([p["indices"][:, :k] for p in parts]).astype(np.int64))


class FaissFirstStage:
    """A faiss index read from `path`, checked against the index's dimension and metric, its recorded knobs
    set; `search` takes nprobe and efSearch (default: the ones recorded at build)."""

    def __init__(self, path: Path, dim: int, images: int, params: dict) -> None:
        faiss = faiss_module()
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file (an unfinished build?)")
        try:
            self.index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise ModelFileError(f"{path}: not a readable faiss index (truncated?): {_faiss_message(e)}") from None
        if self.index.d != dim or self.index.metric_type != faiss.METRIC_INNER_PRODUCT:
            metric = "inner product" if self.index.metric_type == faiss.METRIC_INNER_PRODUCT else "not inner product"
            raise ModelFileError(f"{path}: a faiss index of dimension {self.index.d} ({metric}); the index's first "
                                 f"stage is {dim}-d inner product")
        if self.index.ntotal != images:
            raise ModelFileError(f"{path}: holds {self.index.ntotal} vectors, the index {images} images")
        self.params = dict(params)
        self.kind = "faiss"
        self._space = faiss.ParameterSpace()
        set_params(self.index, self.params)

    def check_knobs(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        for name, param, value in (("nprobe", "nprobe", nprobe), ("efSearch", "ef_search", ef_search)):
            if positive_knob(param, value) is not None and name not in self.params:
                raise InputError(f"the index's first stage has no {name} to set (it takes "
                                 f"{', '.join(self.params) or 'no knobs'})", param=param)

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, indices) [B, ≤k], best first; fewer than k where the probed lists hold fewer."""
        if k <= 0:
            raise InputError(f"expected a positive shortlist length, got {k}", param="k")
        self.check_knobs(nprobe, ef_search)
        for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
            if name in self.params:
                self._space.set_index_parameter(self.index, name, value or self.params[name])
        return faiss_search(self.index, queries, k)


def faiss_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) [B, ≤k] of a faiss `index`, best first, cut to the results every query has
    (the probed lists may hold fewer than k)."""
    sims, idx = index.search(np.ascontiguousarray(queries, np.float32), min(k, index.ntotal))
    found = int((idx >= 0).sum(axis=1).min()) if len(idx) else 0
    return sims[:, :found], idx[:, :found].astype(np.int64)


def default_params(index) -> dict:
    """The knobs of a faiss index that `search` can set, at rerankrt's defaults: nprobe (IVF) capped at its
    lists, efSearch (HNSW, also behind a transform such as PCA or OPQ)."""
    faiss = faiss_module()
    params = {}
    try:
        params["nprobe"] = min(DEFAULT_NPROBE, faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        pass
    if hasattr(innermost(index), "hnsw"):
        params["efSearch"] = DEFAULT_EF_SEARCH
    return params


def set_params(index, params: dict) -> None:
    """Set faiss search knobs by their ParameterSpace names (nprobe, efSearch, k_factor_rf)."""
    space = faiss_module().ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def without_polysemous(index):
    """`index` (a factory's, untrained) set to train what a search uses, and in bounded time: no "polysemous"
    PQ codes in its base and refine codes alike (faiss's IVF-PQ trains them by default for a Hamming
    pre-filter that a search enables with polysemous_ht; rerankrt's never does, and that training costs ~15×
    the PQ's own: 30 s vs 2 s here), and an OPQ rotation trained in `OPQ_ITERATIONS` rounds (faiss's 50 took
    80 s for OPQ64_256 on 50,000 vectors here)."""
    faiss = faiss_module()
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):
        for i in range(outer.chain.size()):
            transform = faiss.downcast_VectorTransform(outer.chain.at(i))
            if isinstance(transform, faiss.OPQMatrix):
                transform.niter = OPQ_ITERATIONS
    inner = innermost(index)
    parts = [inner.base_index, inner.refine_index] if isinstance(inner, faiss.IndexRefine) else [inner]
    for part in map(faiss.downcast_index, parts):
        if hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False
    return index


def innermost(index):
    """The index behind a chain of transforms (PCA, OPQ, …), as its own faiss class."""
    faiss = faiss_module()
    inner = faiss.downcast_index(index)
    while isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    return inner


class FaissBuild:
    """A faiss first stage about to be built: `FaissBuild(factory, images, dim, …)` checks the factory string
    and the settings before anything is written (the gallery may be large); `write(vectors, path)` trains it
    on `train_sample` rows (default min(N, TRAIN_SAMPLE)) of the unit `vectors` [N, D], adds them in chunks
    and writes it; `entry` is its part of the manifest. `tuned`: knobs measured for it (`first_stage_choice`),
    over rerankrt's defaults."""

    def __init__(self, factory: str, images: int, dim: int, train_sample: int | None = None,
                 nprobe: int | None = None, ef_search: int | None = None, tuned: dict | None = None) -> None:
        faiss = faiss_module()
        try:
            self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise InputError(f"faiss rejects {factory!r}: {_faiss_message(e)}", param="first_stage") from None
        try:
            lists = faiss.extract_index_ivf(self.index).nlist
        except RuntimeError:
            lists = None
        sample = train_sample if train_sample is not None else min(images, TRAIN_SAMPLE)
        if sample <= 0 or sample > images:
            raise InputError(f"expected 1 to the gallery's {images} images, got {sample}", param="train_sample")
        if lists is not None and sample < lists:
            raise InputError(f"{sample} vectors cannot train {factory}'s {lists} inverted lists "
                             f"(give at least {lists}, ideally {39 * lists})", param="train_sample")
        without_polysemous(self.index)
        params = default_params(self.index) | (tuned or {})
        for name, param, value in (("nprobe", "nprobe", nprobe), ("efSearch", "ef_search", ef_search)):
            if positive_knob(param, value) is not None:
                if name not in params:
                    raise InputError(f"{factory} has no {name} to set", param=param)
                params[name] = min(value, lists) if name == "nprobe" and lists else value
        self.factory, self.sample = factory, sample
        self.entry = {"kind": "faiss", "factory": factory, "file": FAISS_FILE, "train_sample": sample,
                      "params": params}

    def write(self, vectors: np.ndarray, path: Path, log: Callable[[str], None] = lambda message: None) -> None:
        faiss = faiss_module()
        images = len(vectors)
        if not self.index.is_trained:
            log(f"training {self.factory} on {self.sample} of {images} gallery vectors")
            try:
                self.index.train(np.ascontiguousarray(vectors[sample_rows(images, self.sample)], np.float32))
            except RuntimeError as e:
                raise InputError(f"faiss cannot train {self.factory} on {self.sample} vectors: "
                                 f"{_faiss_message(e)}", param="first_stage") from None
        for start in range(0, images, CHUNK):
            self.index.add(np.ascontiguousarray(vectors[start:start + CHUNK], np.float32))
        faiss.write_index(self.index, str(path))


def open_first_stage(folder: Path, entry: dict, images: int, vectors: np.ndarray | None) -> FirstStage:
    """The first stage of an index's manifest `entry`: exact over `vectors` (its globals), or faiss."""
    if entry["kind"] == EXACT:
        assert vectors is not None
        return ExactFirstStage(vectors)
    return FaissFirstStage(folder / entry["file"], int(entry["dim"]), images, entry.get("params", {}))


class RecallProbe:
    """recall@`at` against the exact scan of the unit gallery `vectors`, of held-out queries: `queries` (the
    user's own, not gallery images), else `count` gallery rows (`sample_rows`) each removed from its own
    ground truth and from what the stage returns (an image never finds itself). The exact shortlists are
    computed once; `measure(search)` takes `search(queries, k) -> indices` and returns the manifest's
    record: the mean share of each exact top `at` found in the stage's top `at`."""

    def __init__(self, vectors: np.ndarray, at: int, queries: np.ndarray | None = None, count: int = RECALL_QUERIES,
                 seed: int = SEED, source: str | None = None) -> None:
        images = len(vectors)
        self.rows = None if queries is not None else sample_rows(images, count, seed)
        self.queries = np.asarray(queries if queries is not None else vectors[self.rows], np.float32)
        self.at = min(at, images - (self.rows is not None))
        self.truth = [t for s in range(0, len(self.queries), 256)
                      for t in self._drop_self(global_shortlist(self.queries[s:s + 256], vectors, self.at + 1)[1], s)]
        self.record = {"at": self.at, "queries": len(self.queries),
                       "held_out": source or "gallery images, each removed from its own ground truth"}
        if self.rows is not None:
            self.record["seed"] = seed

    def _drop_self(self, found: np.ndarray, start: int) -> list[np.ndarray]:
        if self.rows is None:
            return [f[:self.at] for f in found]
        rows = self.rows[start:start + len(found)]
        return [f[f != r][:self.at] for f, r in zip(found, rows, strict=True)]

    def measure(self, search: Callable[[np.ndarray, int], np.ndarray]) -> dict:
        hits = 0
        for start in range(0, len(self.queries), 256):
            found = self._drop_self(search(self.queries[start:start + 256], self.at + 1), start)
            truth = self.truth[start:start + len(found)]
            hits += sum(len(np.intersect1d(e, a)) for e, a in zip(truth, found, strict=True))
        return self.record | {"value": hits / (self.at * len(self.queries))}
