"""Search: a query image (or its descriptors) in, ranked gallery images out, over a search index
(`search.index`).

Each query goes through the same stages as the commands that compose it (`extract` → `shortlist` →
`index build` → `rerank --index`), with the same functions, so their results are equal:

1. described by the DINOv2 extractor, the whole image at the size and descriptor count the gallery was
   described at (the index's extraction record; 770 px and 700 descriptors for a gallery of published
   files), with weights checked against the gallery's;
2. the first stage: cosine over the index's globals, exact or through faiss (`search.first_stage`), the
   top max(S, K);
3. its top S re-ranked by AMES from the index's store (the query encoded once), fused with the global
   similarity; the rest of the first-stage list follows with its global similarity as score (as `rerank`
   writes it).

`Searcher` opens the index and the re-ranker's two graphs once, and the extractor on the first image
query (a search over descriptor files never needs it); `timing_ms` splits each query's time by stage.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rerankrt.core.errors import InputError, ModelFileError
from rerankrt.data.dataset_layout import DatasetLayout
from rerankrt.data.descriptors import COL_MASK, META_COLUMNS, LocalDescriptorFile, read_global
from rerankrt.data.extraction import weights_record
from rerankrt.runtime.feeds import Backend
from rerankrt.runtime.loops import LOOPS, reranker_for
from rerankrt.runtime.request import BackendRequest, resolve
from rerankrt.search.backends import open_model
from rerankrt.search.first_stage import GraphFirstStage, normalised
from rerankrt.search.index import SearchIndex, read_record
from rerankrt.search.protocols import FirstStage
from rerankrt.search.shards import ShardedFirstStage, ShardedIndex, open_index

EXTRACTOR = "dinov2-extractor"
FIRST_STAGE = "first-stage"
#: results per query unless asked otherwise (the CLI's --top, the Triton model's `top` parameter)
DEFAULT_TOP = 10
#: the extraction settings of a gallery that records none (`rerankrt extract`'s defaults)
DEFAULT_EXTRACTION = {"imsize": 770, "topk": 700}
#: the torch weights a search takes by role: the extractor's backbone and detector, the re-ranker's, RAML's
#: 224-px student (an index with RAML's first stage)
WEIGHTS = ("extractor", "detector", "rerank", "raml")


@dataclass(frozen=True)
class QueryDescriptors:
    """A query already described: its global vector [D] and local descriptors [n, D] with their padding
    mask [n] (True = padding), best first, as one row of the official files."""

    global_: np.ndarray
    desc: np.ndarray
    mask: np.ndarray
    name: str = "query"


@dataclass(frozen=True)
class Hit:
    rank: int  #: 1 = best
    index: int  #: the gallery row: the position in the gallery files
    image: str | None  #: its file name, where the extraction recorded one
    score: float  #: the fused score of a re-ranked image, the global similarity of the rest
    global_: float  #: the first stage's cosine similarity

    def as_dict(self) -> dict:
        return {"rank": self.rank, "index": self.index, "image": self.image, "score": self.score,
                "global": self.global_}


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: list[Hit]
    timing_ms: dict = field(default_factory=dict)  #: extract (None for descriptors), first_stage, rerank, total

    def as_dict(self) -> dict:
        return {"query": self.query, "results": [h.as_dict() for h in self.hits], "timing_ms": self.timing_ms}

    def table(self) -> str:
        """The query and its stages' times, then a line per hit: rank, score, global similarity, row, name."""
        timing = "  ".join(f"{k} {v:.1f} ms" for k, v in self.timing_ms.items() if v is not None)
        return "".join([f"{self.query}  ({timing})\n", *(
            f"  {h.rank:>4}  {h.score:.6f}  global {h.global_:.6f}  #{h.index:<8} {h.image or ''}\n"
            for h in self.hits)])


def _describe_weights(record: dict) -> str:
    parts = "".join(f", {name} sha256 {sha}" for name, sha in sorted(record.get("parts", {}).items()))
    return f"{record['model']} sha256 {record['checkpoint_sha256'] or 'null'}{parts}"


def check_extractor_weights(have: dict, want: dict, what: str = "query extractor") -> None:
    """Refuse extractor weights `have` (`weights_record`) other than the gallery's `want`, naming both."""
    if any(have[k] != want.get(k) for k in ("model", "checkpoint_sha256", "parts")):
        raise ModelFileError(f"{what}: {_describe_weights(have)}, but the index's gallery was described by "
                             f"{_describe_weights(want)} (null: the released random weights)")


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"{name}: expected a positive number of images, got {value!r}")
    return int(value)


class Searcher:
    """`Searcher(index, artifacts=…, backend=…, precision=…)`, then `.search(query, top=K, …)` per query
    and `close()` (or `with Searcher(…) as s:`). `index`: an index folder, a shard set (`index build
    --shards`) or a list of indexes of disjoint galleries, searched as one (`search.shards`), or one
    already opened (`open_index`).

    `backend` picks every model's backend as the commands do (`search.backends`): `auto` runs the TensorRT
    engine of an artifacts folder where one was built, else the ONNX graph, and the torch backend where a
    checkpoint is given without `artifacts`. `checkpoint` and `detector` are the torch extractor's files,
    `rerank_checkpoint` the torch re-ranker's. `rerank`: the index's re-ranker (default), or None for the
    first stage alone. `imsize` and `topk`: the query extraction's, default the gallery's. An index whose
    first stage is RAML's (`index build --globals raml`) describes the query's global vector with RAML's
    224-px student (`raml_checkpoint`: its torch weights; else the artifacts' `raml` graph), and runs the
    DINOv2 extractor only for the re-ranker's local descriptors: with `rerank=None`, not at all. `models`: entered
    backends by model name that the caller owns and closes (Triton's BLS backends), used instead of opening
    those models; they are checked against the index all the same."""

    def __init__(self, index: str | os.PathLike | Sequence[str | os.PathLike] | SearchIndex | ShardedIndex,
                 request: BackendRequest | None = None, rerank: str | None = "index",
                 weights: Mapping[str, str | os.PathLike | None] | None = None,
                 extraction: Mapping[str, int | None] | None = None, log: Callable[[str], None] = lambda message: None,
                 models: dict | None = None, exact_graph: bool | None = None) -> None:
        self.index = index if isinstance(index, (SearchIndex, ShardedIndex)) else open_index(index)
        self.models = dict(models or {})
        self.log = log
        self._request = (request or BackendRequest()).replace(checkpoint=None, parts={})
        given = {k: v for k, v in (weights or {}).items() if v}
        unknown = sorted(set(given) - set(WEIGHTS))
        if unknown:
            raise ValueError(f"weights: {', '.join(unknown)}: expected some of {', '.join(WEIGHTS)}")
        self._weights = given
        self.raml = None
        recorded = self.index.extractor or DEFAULT_EXTRACTION
        asked = {k: v for k, v in (extraction or {}).items() if v is not None}
        unknown = sorted(set(asked) - set(DEFAULT_EXTRACTION))
        if unknown:
            raise ValueError(f"extraction: {', '.join(unknown)}: expected imsize and/or topk")
        self.imsize = _positive("imsize", asked["imsize"]) if "imsize" in asked else int(recorded["imsize"])
        self.topk = _positive("topk", asked["topk"]) if "topk" in asked else int(recorded["topk"])
        if "extractor" in given or "detector" in given:  # the torch extractor's files: refused now where unused
            resolve(EXTRACTOR, self._extractor_request())
        self._said: set[str] = set()
        self._stack = contextlib.ExitStack()
        self.extractor = None
        self.model = self.index.model if rerank == "index" else rerank
        try:
            self._open_reranker()
            self._open_first_stage(exact_graph)
        except BaseException:
            self._stack.close()
            raise

    def _extractor_request(self) -> BackendRequest:
        """The request of the DINOv2 extractor: the torch weights `weights` names for it."""
        detector = self._weights.get("detector")
        return self._request.replace(checkpoint=self._weights.get("extractor"),
                                     parts={"detector": detector} if detector else {})

    def _open(self, name: str, request: BackendRequest, param: str = "checkpoint") -> Backend:
        """A backend the caller gave (`models`), else `name` opened from `request` on this searcher's stack."""
        return self.models.get(name) or self._stack.enter_context(open_model(name, request, param, self.log))

    def _open_reranker(self) -> None:
        self.encoder = self.scorer = None
        if self.model is None:
            return
        from rerankrt.models import get_info

        if self.index.store is None or self.model != self.index.model:
            held = f"a store of {self.index.model}" if self.index.store is not None else "no re-ranker store"
            raise ModelFileError(f"the index {self.index.path} holds {held}, not {self.model}'s "
                                 f"(search it with `rerank` none, or build one with `rerankrt index build --model "
                                 f"{self.model}`)", param="rerank")
        info = get_info(self.model)
        rerank = self._request.replace(checkpoint=self._weights.get("rerank"))
        if info.loop is not None and LOOPS[info.loop].reads_globals:  # one list-wise graph over globals and locals
            self.scorer = self._open(self.model, rerank, "weights.rerank")
            self.index.store.check_reranker(self.scorer.meta)
            return
        assert info.store is not None  # a re-ranker with a store in an index: AMES (encoder, scorer) or LOCORE
        encoder, scorer = info.store
        self.encoder, self.scorer = (self._open(name, rerank, "weights.rerank") for name in (encoder, scorer))
        self.index.store.check_encoder(self.encoder.meta)
        self.index.store.check_scorer(self.scorer.meta)

    def _open_first_stage(self, exact_graph: bool | None) -> None:
        """An exact first stage through the `first-stage` graph where asked (`exact_graph`), or by default where
        the engines run: `--backend trt`, or `auto` with a first-stage engine in the artifacts. Its gallery is
        copied to the device once (`GraphFirstStage`)."""
        shards = getattr(self.index, "shards", [self.index])
        exact = all(s.globals is not None for s in shards)
        if exact_graph and not exact:
            raise InputError(f"exact_graph: the first stage of {self.index.path} is approximate (faiss); the "
                             f"{FIRST_STAGE} graph scans an exact one")
        if exact_graph is None:
            exact_graph = exact and self._request.runs_engine(FIRST_STAGE)
        if not exact_graph:
            return
        graph = self._open(FIRST_STAGE, self._request)
        stages: list[FirstStage] = [GraphFirstStage(graph, s.globals) for s in shards]
        if isinstance(self.index.first_stage, ShardedFirstStage):
            self.index.first_stage.stages = stages
        else:
            self.index.first_stage = stages[0]
        self.log(f"first stage: the exact scan through the {FIRST_STAGE} graph on {graph.name} {graph.precision} "
                 f"({len(shards)} gallery buffer(s))")

    def _extractor(self):
        """The extractor, opened on the first image query and checked against the gallery's."""
        if self.extractor is None:
            backend = self._open(EXTRACTOR, self._extractor_request())
            self.check_extractor(weights_record(backend.meta))
            self.extractor = backend
        return self.extractor

    def _raml(self):
        """RAML's query encoder for an index with RAML's first stage, opened on the first query: torch with
        the "raml" weights (as `extract --raml-checkpoint`), else the request over the artifacts."""
        if self.raml is None:
            from rerankrt.data.images import RamlEncoder

            checkpoint = self._weights.get("raml")
            request = self._request.replace(kind="torch", checkpoint=checkpoint) if checkpoint else self._request
            backend = self._open("raml", request, "weights.raml")
            self.raml = RamlEncoder(backend)
        return self.raml

    def check_extractor(self, have: dict) -> None:
        """Refuse query descriptors made by other weights (`have`: `weights_record` of the extractor, or an
        extraction record's `extractor`) than the gallery's, naming both; a gallery of published files
        records none, and is said once."""
        want = self.index.extractor
        if want is None:
            self._say(f"index {self.index.path}: its gallery records no extractor (no dinov2_gallery_images.json "
                      f"beside its files): the query extractor's weights are not checked")
            return
        check_extractor_weights(have, want)

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self.log(message)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self, image: str | os.PathLike | np.ndarray, name: str | None = None) -> QueryDescriptors:
        """A query image (a file, or BGR uint8 [H, W, 3] as OpenCV reads one) through the extractor, whole."""
        from rerankrt.data.extraction import extract_window, preprocess, read_image

        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise InputError(f"query image: expected BGR uint8 [H, W, 3], got {image.dtype} "
                                 f"{list(image.shape)}")
            pixels, label = image, name or "image"
        else:
            pixels, label = read_image(image), name or Path(image).name
        raml = self.index.desc == "raml"
        vector = self._raml().encode([np.ascontiguousarray(pixels[:, :, ::-1])])[0] if raml else None
        if vector is not None and self.model is None:  # RAML's first stage alone: no local descriptors
            return QueryDescriptors(vector, np.zeros((0, 0), np.float32), np.zeros(0, bool), label)
        backend = self._extractor()
        done = extract_window(backend, [preprocess(pixels, self.imsize, backend.config, name=label)], self.topk, 1)
        rows = done.rows[0]
        return QueryDescriptors(done.global_[0] if vector is None else vector, rows[:, META_COLUMNS:],
                                rows[:, COL_MASK] != 0, label)

    def _sizes(self, top: int, shortlist: int | None, reranking: bool) -> tuple[int, int]:
        n = self.index.images
        top = _positive("top", top)
        if shortlist is not None:
            _positive("shortlist", shortlist)
        for name, value in (("top", top), ("shortlist", shortlist)):
            if value is not None and value > n and (name == "top" or reranking):
                self._say(f"{name}: {value} is more than the gallery's {n} images; taking {n}")
        return min(top, n), min(shortlist, n) if shortlist is not None else n

    def search(self, query, top: int = DEFAULT_TOP, shortlist: int | None = None, lam: float | None = None,
               gamma: float | None = None, nprobe: int | None = None, ef_search: int | None = None,
               **settings) -> SearchResult:
        """The top `top` gallery images of one query: an image file, a BGR array or `QueryDescriptors`.
        `shortlist` (AMES: 100 as released), `lam`, `gamma` and any other run setting of the re-ranker's
        loop by name (`batch`) override its released settings; `nprobe` (IVF) and `ef_search` (HNSW) a faiss
        first stage's recorded knobs."""
        stage = self.index.first_stage
        assert stage is not None  # the Searcher opens its index with the first stage
        stage.check_knobs(nprobe, ef_search)  # before the extractor's work
        if settings and self.model is None:
            raise ValueError(f"{', '.join(settings)}: a re-ranker's setting, and this search re-ranks nothing")
        start = time.perf_counter()
        extract_ms = None
        if not isinstance(query, QueryDescriptors):
            query = self.describe(query)
            extract_ms = 1e3 * (time.perf_counter() - start)
        self._check_query(query)
        top, limit = self._sizes(top, shortlist, self.model is not None)
        reranker, s = None, 0
        if self.model is not None:
            reranker, s = reranker_for(self.scorer, lam, gamma, shortlist, self.encoder, settings)
            s = min(s, limit)
        t = time.perf_counter()
        vector = normalised(query.global_[None])[0]
        sims, idx = (a[0] for a in stage.search(vector, max(s, top), nprobe, ef_search))
        first_ms = 1e3 * (time.perf_counter() - t)
        s, top = min(s, len(idx)), min(top, len(idx))  # an approximate first stage may find fewer
        scores = sims.astype(np.float64)
        order = np.arange(len(idx))
        rerank_ms = None
        if reranker is not None:
            assert self.scorer is not None and self.index.store is not None
            t = time.perf_counter()
            result = self._rerank(reranker, query, idx[:s], sims[:s])
            order[:s], scores[:s] = result.order, result.scores
            rerank_ms = 1e3 * (time.perf_counter() - t)
        rows = idx[order][:top]
        hits = [Hit(rank + 1, int(i), self.index.names[i], float(score), float(sim))
                for rank, (i, score, sim) in enumerate(zip(rows, scores[:top], sims[order][:top], strict=True))]
        timing = {"extract": extract_ms, "first_stage": first_ms, "rerank": rerank_ms,
                  "total": 1e3 * (time.perf_counter() - start)}
        return SearchResult(query.name, hits, timing)

    def _rerank(self, reranker, query: QueryDescriptors, rows: np.ndarray, sims: np.ndarray):
        """The shortlist `rows` re-ranked from the index's store: AMES with the query's first
        `query_descriptors` locals against the stored entries, LOCORE's windows with its first
        `locals_per_image` (padded where it has fewer) against the stored globals and locals."""
        assert self.scorer is not None and self.index.store is not None
        if self.encoder is not None:
            n = min(self.scorer.config["query_descriptors"], len(query.desc))
            db, db_mask = self.index.store.entries(rows)
            return reranker.rerank(query.desc[:n], query.mask[:n], db, db_mask, sims)
        n = self.index.store.descriptors
        local, mask = np.zeros((n, query.desc.shape[1]), np.float32), np.ones(n, bool)
        local[:min(n, len(query.desc))], mask[:min(n, len(query.desc))] = query.desc[:n], query.mask[:n]
        g_global, g_local, g_mask = self.index.store.entries(rows)
        return reranker.rerank(query.global_, local, mask, g_global, g_local, g_mask, sims)

    def _check_query(self, query: QueryDescriptors) -> None:
        d = self.index.dim
        if query.global_.shape != (d,):
            raise InputError(f"query {query.name}: expected a global vector [{d}] (the index's), got "
                             f"{list(query.global_.shape)}")
        if not np.isfinite(query.global_).all():
            raise InputError(f"query {query.name}: NaN or infinite values in its global vector")
        if not query.global_.any():
            raise InputError(f"query {query.name}: its global vector is zero (it has no cosine similarity)")
        if self.model is None:  # the first stage alone reads no local descriptors
            return
        assert self.index.store is not None
        local_dim = self.index.store.manifest["descriptor_dim"]
        if query.desc.ndim != 2 or query.desc.shape[1] != local_dim or query.mask.shape != query.desc.shape[:1]:
            raise InputError(f"query {query.name}: expected local descriptors [n, {local_dim}] and a mask [n], got "
                             f"{list(query.desc.shape)} and {list(query.mask.shape)}")
        if not np.isfinite(query.desc).all():
            raise InputError(f"query {query.name}: NaN or infinite local descriptors")
        if query.mask.all():
            raise InputError(f"query {query.name}: every local descriptor is padding (an image with none)")

    def search_many(self, queries: Iterable, top: int = DEFAULT_TOP, **settings) -> list[SearchResult]:
        """`search` over each query, in order."""
        return [self.search(q, top=top, **settings) for q in queries]


def query_descriptors(folder: str | os.PathLike, desc: str = "dinov2", first_stage: str | None = None,
                      dim: int | None = None) -> tuple[list[QueryDescriptors], dict | None]:
    """Every query of a dataset folder in the official layout (`{desc}_query_local.hdf5` and the globals
    `{first_stage}_query_global.pt` of dimension `dim`, default `desc`'s and the locals'), named by its
    extraction record where there is one; and that record's extractor (None without one), for
    `Searcher.check_extractor`."""
    layout = DatasetLayout(Path(folder), desc)
    globals_path = DatasetLayout(Path(folder), first_stage or desc).global_("query")
    with LocalDescriptorFile(layout.local("query")) as f:
        local = f.read(np.arange(f.num_images))
        vectors = np.asarray(read_global(globals_path, dim or f.dim))
        f.check_globals(vectors, globals_path)
    record = read_record(layout, "query", len(vectors))
    names: Sequence[str | None] = record["images"] if record else [None] * len(vectors)
    queries = [QueryDescriptors(vectors[i], local.desc[i], local.mask[i], names[i] or f"query {i}")
               for i in range(len(vectors))]
    return queries, record["extractor"] if record else None
