"""The search pipeline as Triton Python-backend models: `search`, one encoded query image in, its top K
gallery rows, names, fused scores and global similarities out (the fields of `rerankrt search`'s JSON), in
front of two models per shard of its index (one index: one shard).

`search` is `Searcher` itself (`ShardSearcher`) with the extractor, the AMES encoder and the scorer of the
same repository behind BLS (`serve.triton_bls.BlsBackend`), its first stage and its re-ranking fanned out
by BLS to the shard models, so its results are those of `Searcher` over one index of the whole gallery:

- `search_shard_NNN` (`ShardFirstStageModel`) holds shard NNN's first stage: the query's normalised global
  vector and k in, the shard's top k (similarities, its own rows) out. The front merges the shards' lists
  into the gallery's top k (`search.shards.merge_top`: over exact shards, the exact top k);
- `search_shard_NNN_rerank` is the AMES store loop over shard NNN's store with the query encoded
  (`AmesShardRerankModel`): the front encodes the query once, sends it to each shard with the rows of the
  merged shortlist that the shard holds, and orders the fused scores that come back (an image's fused score
  depends on the query and its own entry alone; equal scores keep the shortlist's order, as
  `AmesReranker` does).

A shard's models read only its own folder, so the shards of one gallery can be spread over model
instances, GPUs or, with a search model per server, behind a load balancer (BLS reaches the models of its
own server only). One search model asks its shards one after another: its first stage costs the sum of
theirs, O(gallery rows) when exact. The config's parameters name the models and the re-ranker's
settings; the version folder's `target.json` holds their export sidecars (what `Searcher` checks against
the index: the extractor's weights, the store's checkpoint, the dimensions). Both are written by
`rerankrt triton --index`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rerankrt.core.errors import InputError
from rerankrt.runtime.feeds import IOSpec
from rerankrt.runtime.loops import loop_of
from rerankrt.runtime.rerankers import encode_query
from rerankrt.search.index import SearchIndex
from rerankrt.search.searcher import Searcher
from rerankrt.search.shards import ShardedIndex, merge_top, open_index
from rerankrt.serve.triton_bls import TARGET_FILE, BlsBackend, bls_infer, checked_input, error_response

#: the models the search model calls, by role: its parameters name them (`<role>_model`); an index with
#: RAML's first stage adds RAML's query encoder (`raml_model`)
ROLES = ("extractor", "encoder", "scorer")
RAML_ROLE = "raml"


def roles(params: dict) -> list[str]:
    """The roles a search model's parameters name."""
    return [*ROLES, *([RAML_ROLE] if f"{RAML_ROLE}_model" in params else [])]


def search_io() -> tuple[list[IOSpec], list[IOSpec]]:
    """The search model's I/O (one query per request, max_batch_size 0): the encoded image as bytes and an
    optional `top`; one row per result."""
    text, i64, f32 = np.dtype(np.object_), np.dtype(np.int64), np.dtype(np.float32)
    inputs = [IOSpec("query", text, (1,)), IOSpec("top", i64, (1,))]
    outputs = [IOSpec("index", i64, ("results",)), IOSpec("image", text, ("results",)),
               IOSpec("score", f32, ("results",)), IOSpec("global", f32, ("results",))]
    return inputs, outputs


def shard_models(search: str, shards: int) -> list[tuple[str, str]]:
    """The (first stage, re-rank) model names of each shard of the `search` model, in gallery order."""
    return [(f"{search}_shard_{i:03d}", f"{search}_shard_{i:03d}_rerank") for i in range(shards)]


def shard_io(dim: int) -> tuple[list[IOSpec], list[IOSpec]]:
    """A shard first-stage model's I/O (one query per request): the normalised global vector [D] and k; the
    shard's top k, best first, its rows counted from its own first image."""
    f32, i64 = np.dtype(np.float32), np.dtype(np.int64)
    return ([IOSpec("vector", f32, (dim,)), IOSpec("k", i64, (1,))],
            [IOSpec("similarity", f32, ("k",)), IOSpec("index", i64, ("k",))])


def _one(tensor, spec: IOSpec) -> np.ndarray:
    x = tensor.as_numpy()
    if x.shape != (1,):
        raise InputError(f"{spec.name}: expected shape [1] (one query per request), got {list(x.shape)}")
    return x


class BlsFirstStage:
    """The first stages of the shard models by BLS, merged into the gallery's top k: the interface of a
    first stage (`search.first_stage`) for one query. The shards search with the knobs their indexes
    record."""

    kind = "shards"

    def __init__(self, pb_utils, models: list[str], offsets: list[int]) -> None:
        self.pb_utils, self.models, self.offsets = pb_utils, models, offsets

    def check_knobs(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        if nprobe is not None or ef_search is not None:
            raise InputError("nprobe, ef_search: the search model's shards search with the knobs their indexes "
                             "record")

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        self.check_knobs(nprobe, ef_search)
        vector = np.asarray(queries, np.float32).reshape(-1)
        results = []
        for model in self.models:
            got = bls_infer(self.pb_utils, model, {"vector": vector, "k": np.array([k], np.int64)},
                            ["similarity", "index"])
            results.append((got["similarity"][None], got["index"][None]))
        return merge_top(results, self.offsets, k)


@dataclass(frozen=True)
class Fused:
    order: np.ndarray  #: [S] shortlist positions, best first
    scores: np.ndarray  #: [S] fused scores, aligned with `order`


class ShardSearcher(Searcher):
    """`Searcher` over an index opened without its first stages (`BlsFirstStage` stands in), re-ranking
    through the shards' store loops: each gets the rows of the shortlist it holds."""

    def __init__(self, pb_utils, rerank_models: list[str], index: SearchIndex | ShardedIndex, **kwargs) -> None:
        super().__init__(index, exact_graph=False, **kwargs)
        self.pb_utils, self.rerank_models = pb_utils, rerank_models
        self.offsets = np.asarray(getattr(index, "offsets", [0]))

    def _rerank(self, reranker, query, rows: np.ndarray, sims: np.ndarray) -> Fused:
        assert self.scorer is not None and self.encoder is not None
        n = min(self.scorer.config["query_descriptors"], len(query.desc))
        encoded = encode_query(self.encoder, query.desc[:n], query.mask[:n])  # once, for every shard
        encoded = encoded if encoded.dtype == np.bool_ else encoded.astype(np.float32)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        fused = np.empty(len(rows), np.float64)
        for i, model in enumerate(self.rerank_models):
            where = np.flatnonzero(shard == i)
            if where.size:
                feeds = {"q_encoded": encoded, "q_mask": query.mask[:n],
                         "shortlist": (rows[where] - self.offsets[i]).astype(np.int64),
                         "global_sim": sims[where].astype(np.float32)}
                got = bls_infer(self.pb_utils, model, feeds, ["order", "scores"])
                fused[where[got["order"]]] = got["scores"]
        order = np.argsort(-fused, kind="stable")
        return Fused(order, fused[order])


class ShardFirstStageModel:
    """Triton's `TritonPythonModel` for `search_shard_NNN`: the first stage of the index named by its `index`
    parameter (opened once), at most `max_k` images per request."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # only inside Triton

        self.setup(pb_utils, json.loads(args["model_config"]))

    def setup(self, pb_utils, config: dict) -> None:
        self.pb_utils = pb_utils
        p = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.index, self.max_k = SearchIndex(p["index"]), int(p["max_k"])
        self.inputs, self.outputs = shard_io(self.index.dim)

    def finalize(self) -> None:
        """Triton's unload hook (the index holds no handles)."""

    def search(self, request) -> list:
        pb = self.pb_utils
        vector, k = (checked_input(pb.get_input_tensor_by_name(request, s.name), s) for s in self.inputs)
        if not 1 <= int(k[0]) <= self.max_k:
            raise InputError(f"k: expected 1…{self.max_k} images (the max_k parameter), got {int(k[0])}")
        assert self.index.first_stage is not None  # a shard model opens its index with the first stage
        sims, rows = (a[0] for a in self.index.first_stage.search(vector[None], int(k[0])))
        return [pb.Tensor(spec.name, value.astype(spec.dtype))
                for spec, value in zip(self.outputs, (sims, rows), strict=True)]

    def execute(self, requests: list) -> list:
        return [_respond(self.pb_utils, self.search, request) for request in requests]


def _respond(pb, answer, request):
    """The response to one request: its tensors, or its own error (the other requests still answered)."""
    try:
        return pb.InferenceResponse(output_tensors=answer(request))
    except (InputError, ValueError, RuntimeError) as e:
        return error_response(pb, e)


class SearchModel:
    """Triton's `TritonPythonModel` for `search` (the generated `model.py` re-exports it)."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # only inside Triton

        self.setup(pb_utils, json.loads(args["model_config"]), Path(args["model_repository"]) / args["model_version"])

    def setup(self, pb_utils, config: dict, version_dir: Path) -> None:
        self.pb_utils = pb_utils
        target = json.loads((version_dir / TARGET_FILE).read_text())
        p = self.params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.backends = [BlsBackend(pb_utils, p[f"{role}_model"], target[role], target["precision"]).__enter__()
                         for role in roles(p)]
        index = open_index(p["index"], first_stage=False)
        firsts, reranks = (p[f"{part}_models"].split(",") for part in ("shard", "rerank"))
        index.first_stage = BlsFirstStage(pb_utils, firsts, list(getattr(index, "offsets", [0])))
        self.searcher = ShardSearcher(pb_utils, reranks, index, models={b.model_name: b for b in self.backends})
        self.settings: dict[str, Any] = loop_of(target["scorer"]).from_params(target["scorer"], p)
        self.max_top = int(p["max_top"])
        self.inputs, self.outputs = search_io()

    def finalize(self) -> None:
        """Triton's unload hook."""
        self.searcher.close()
        for backend in self.backends:
            backend.__exit__(None, None, None)

    def search(self, request) -> list:
        from rerankrt.data.extraction import decode_image

        pb = self.pb_utils
        query, top = (pb.get_input_tensor_by_name(request, s.name) for s in self.inputs)
        if query is None:
            raise InputError("query: missing from the request (the encoded image, as bytes)")
        data = _one(query, self.inputs[0])[0]
        if not isinstance(data, bytes):
            raise InputError(f"query: expected the encoded image as bytes (TYPE_STRING), got {type(data).__name__}")
        k = int(self.params["top"]) if top is None else int(_one(top, self.inputs[1])[0])
        if k > self.max_top:
            raise InputError(f"top: {k} results, more than this model returns ({self.max_top}, its max_top "
                             f"parameter)")
        result = self.searcher.search(decode_image(data, "query"), top=k, **self.settings)
        hits = result.hits
        values = (np.array([h.index for h in hits], np.int64),
                  np.array([(h.image or "").encode() for h in hits], np.object_),
                  np.array([h.score for h in hits], np.float32), np.array([h.global_ for h in hits], np.float32))
        return [pb.Tensor(spec.name, value) for spec, value in zip(self.outputs, values, strict=True)]

    def execute(self, requests: list) -> list:
        return [_respond(self.pb_utils, self.search, request) for request in requests]
