"""The re-ranking loops as Triton Python-backend models (`ames_rerank`, `locore_rerank`), and the graph
models in their Python form (`GraphModel`: an exported graph over ONNX Runtime, for a server without an
onnxruntime backend).

Triton's ensembles are DAG-only and cannot loop, so the loops run in Python-backend models that call
the AMES / LOCORE model of the same repository by BLS (Business Logic Scripting) requests. `BlsBackend`
puts BLS behind the runtime's backend contract, so the loops are `AmesReranker` and `LocoreReranker`
themselves (pair batching and sliding windows), not copies; the generated `model.py` only re-exports
one of the classes below as `TritonPythonModel`.

`triton_python_backend_utils` exists only inside Triton's Python backend: it is imported in
`initialize`, and passed in explicitly everywhere else so that the loops are testable without Triton.
The config's parameters name the target model (`target_model`) and the loop's settings; the version
folder's `target.json` holds the target's precision and export sidecar (its inputs, dtypes and
profiles). Both are written by `rerankrt triton`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rerankrt.core.errors import InputError
from rerankrt.runtime.feeds import Backend, IOSpec
from rerankrt.runtime.loops import LOOPS

TARGET_FILE = "target.json"


def triton_dims(spec: IOSpec) -> list[int]:
    """A shape as Triton writes it: -1 for every named (variable) dimension."""
    return [d if isinstance(d, int) else -1 for d in spec.shape]


def conform(name: str, x: np.ndarray, spec: IOSpec, sizes: dict[str, int], who: str) -> np.ndarray:
    """`x` in the shape `spec` declares, its named dims at `sizes` (the request's), or an error naming both:
    never a broadcast. Triton hands a tensor that is only the batch dimension, declared as dims [1] with a
    reshape [], back as [batch, 1]: that trailing 1 is the config's, and is dropped."""
    if len(spec.shape) == 1 and x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    want = [sizes.get(d, d) if isinstance(d, str) else d for d in spec.shape]
    if x.ndim != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want, x.shape, strict=True)):
        shown = [w if isinstance(w, int) else f"{w}" for w in want]
        raise RuntimeError(f"{who}: {name} came back with shape {list(x.shape)}, expected {shown} "
                           f"({list(spec.shape)})")
    for d, g in zip(spec.shape, x.shape, strict=True):  # a named dim first seen in an output (tokens): the
        if isinstance(d, str):  # next output must agree
            sizes.setdefault(d, g)
    return x


class BlsBackend(Backend):
    """The backend contract over BLS requests to another model of the repository; what comes back is
    checked against the target's declared outputs (`conform`)."""

    def __init__(self, pb_utils, model_name: str, meta: dict, precision: str) -> None:
        super().__init__(f"triton-bls:{model_name}", meta, precision)
        self.pb_utils, self.model_name = pb_utils, model_name

    def infer_impl(self, feeds: dict) -> dict[str, np.ndarray]:
        got = bls_infer(self.pb_utils, self.model_name, feeds, [s.name for s in self.check.outputs])
        sizes = self.check(feeds)
        return {spec.name: conform(spec.name, got[spec.name], spec, sizes, self.model_name)
                for spec in self.check.outputs}


def bls_infer(pb, model: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """One BLS request to `model` of the same server: `outputs` by name as numpy arrays, in host memory; the
    model's error, or an output missing from its response, raised as a RuntimeError naming the model."""
    request = pb.InferenceRequest(
        model_name=model, requested_output_names=outputs,
        inputs=[pb.Tensor(name, np.ascontiguousarray(array)) for name, array in feeds.items()],
        # outputs in host memory: a GPU model's BLS outputs may otherwise stay on the device, where
        # `as_numpy()` cannot read them (the scores are a few KB)
        preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0))
    response = request.exec()
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    out = {}
    for name in outputs:
        tensor = pb.get_output_tensor_by_name(response, name)
        if tensor is None:
            raise RuntimeError(f"{model}: no {name} in its response")
        out[name] = tensor.as_numpy()
    return out


def error_response(pb, error: Exception, prefix: str = ""):
    """A request's own error response: INVALID_ARGUMENT where the request is at fault (an InputError or
    another ValueError names the input), INTERNAL where the model failed; the other requests are still
    answered."""
    code = getattr(pb.TritonError, "INVALID_ARG" if isinstance(error, ValueError) else "INTERNAL", None)
    message = f"{prefix}{error}"
    return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message, code) if code is not None
                                else pb.TritonError(message))


def checked_input(tensor, spec: IOSpec) -> np.ndarray:
    """A request's input against the loop's own I/O, so that errors name the caller's shapes (Triton
    checks them too, but the adapter does not rely on it)."""
    if tensor is None:
        raise InputError(f"{spec.name}: missing from the request")
    x = tensor.as_numpy()
    if x.dtype != spec.dtype:
        raise InputError(f"{spec.name}: expected dtype {spec.dtype}, got {x.dtype}")
    dims = triton_dims(spec)
    if x.ndim != len(dims) or any(w not in (-1, g) for w, g in zip(dims, x.shape, strict=True)):
        raise InputError(f"{spec.name}: expected shape {dims} (-1: any size), got {list(x.shape)}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InputError(f"{spec.name}: contains {int((~np.isfinite(x)).sum())} NaN or infinite values")
    return x


class _RerankModel:
    """Shared by both loop models: reads the target, answers each request with its own error."""

    kind = ""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # only inside Triton

        self.setup(pb_utils, json.loads(args["model_config"]), Path(args["model_repository"]) / args["model_version"])

    def setup(self, pb_utils, config: dict, version_dir: Path) -> None:
        self.pb_utils = pb_utils
        target = json.loads((version_dir / TARGET_FILE).read_text())
        self.params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.backends = self.open_targets(target)
        self.backend = self.backends[0]
        cfg = target["sidecar"]["config"]
        self.name = config.get("name", self.kind)
        self.inputs, self.outputs = LOOPS[self.kind].io(cfg)
        self.reranker = self.make_reranker()

    def open_targets(self, target: dict) -> list[BlsBackend]:
        """The entered BLS backends of the models the loop calls, the target model first."""
        backend = BlsBackend(self.pb_utils, self.params["target_model"], target["sidecar"], target["precision"])
        return [backend.__enter__()]

    def finalize(self) -> None:
        """Triton's unload hook."""
        for backend in self.backends:
            backend.__exit__(None, None, None)

    def make_reranker(self):
        """The loop's re-ranker over the target (a scorer with its encoder) at the model's parameters."""
        loop = LOOPS[self.kind]
        encoder = self.backends[1] if loop.stored and not loop.encoded else None
        return loop.reranker(self.backend, encoder, loop.from_params(self.backend.meta, self.params))[0]

    def run(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def execute(self, requests: list) -> list:
        pb = self.pb_utils
        responses = []
        for request in requests:
            try:
                arrays = {spec.name: checked_input(pb.get_input_tensor_by_name(request, spec.name), spec)
                          for spec in self.inputs}
                n = len(arrays["global_sim"])
                limit = int(self.params.get("max_shortlist", n))
                if n > limit:
                    raise InputError(f"shortlist: {n} images, more than this model takes ({limit}, its "
                                     f"max_shortlist parameter)")
                order, scores = self.run(arrays)
                sizes = {"shortlist": len(arrays["global_sim"])}
                tensors = [pb.Tensor(spec.name, conform(spec.name, np.asarray(value), spec, sizes, self.name)
                                     .astype(spec.dtype)) for spec, value in zip(self.outputs, (order, scores),
                                                                                  strict=True)]
                responses.append(pb.InferenceResponse(output_tensors=tensors))
            except (InputError, ValueError, RuntimeError) as e:
                responses.append(error_response(pb, e))
        return responses


class AmesRerankModel(_RerankModel):
    """A query's descriptors and its shortlist in; the re-ranked order and fused scores out. Pairs go to
    the AMES model in batches of at most `batch` (the model's max_batch_size by default), so that Triton's
    dynamic batcher can merge the batches of concurrent queries."""

    kind = "ames"

    def run(self, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        result = self.reranker.rerank(a["q_desc"], a["q_mask"], a["db_desc"], a["db_mask"], a["global_sim"])
        return result.order, result.scores


class LocoreRerankModel(_RerankModel):
    """A query and its shortlist of N in; LOCORE's sliding windows over the first `shortlist`, one BLS
    request per window; the order of all N and the fused scores (NaN past the shortlist) out."""

    kind = "locore"

    def run(self, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        result = self.reranker.rerank(a["q_global"], a["q_local"], a["q_mask"], a["g_global"], a["g_local"],
                                      a["g_mask"], a["global_sim"])
        return result.order, result.scores


class AmesStoreRerankModel(AmesRerankModel):
    """A query's descriptors, its shortlist as database image indices and their first-stage similarities in;
    the re-ranked order and fused scores out. The database side comes from the store named by the `store`
    parameter (memory-mapped, refused when its checkpoint, variant or sizes do not fit the scorer); the query
    is encoded once by the encoder model, then scored against batches of stored entries."""

    kind = "ames-store"

    def open_targets(self, target: dict) -> list[BlsBackend]:
        from rerankrt.search.shards import open_store

        scorer = super().open_targets(target)[0]
        encoder = BlsBackend(self.pb_utils, self.params["encoder_model"], target["encoder"], target["precision"])
        self.store = open_store(self.params["store"])
        self.store.check_scorer(scorer.meta)
        self.store.check_encoder(encoder.meta)
        return [scorer, encoder.__enter__()]

    def run(self, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        db, db_mask = self.store.entries(a["shortlist"])
        result = self.reranker.rerank(a["q_desc"], a["q_mask"], db, db_mask, a["global_sim"])
        return result.order, result.scores


class AmesShardRerankModel(AmesStoreRerankModel):
    """A search shard's store loop (`search_shard_NNN_rerank`): as `AmesStoreRerankModel`, but the query comes
    encoded (`q_encoded`) by the search front, once for all its shards, so it calls the scorer alone."""

    kind = "ames-store-encoded"

    def open_targets(self, target: dict) -> list[BlsBackend]:
        from rerankrt.search.shards import open_store

        scorer = _RerankModel.open_targets(self, target)[0]
        self.store = open_store(self.params["store"])
        self.store.check_scorer(scorer.meta)  # the front checks the store against its encoder
        return [scorer]

    def run(self, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        db, db_mask = self.store.entries(a["shortlist"])
        result = self.reranker.rerank(a["q_encoded"], a["q_mask"], db, db_mask, a["global_sim"])
        return result.order, result.scores


#: each loop's Triton model, by loop name
LOOP_MODELS = {cls.kind: cls for cls in (AmesRerankModel, AmesStoreRerankModel, AmesShardRerankModel,
                                         LocoreRerankModel)}


class GraphModel:
    """An exported graph as a Python-backend model over ONNX Runtime (`rerankrt triton --platform python`):
    the name, inputs, outputs and batching of its onnxruntime_onnx form, the feed check in front. The
    requests of a dynamic batch whose other dimensions agree run as one call along the batch dimension
    (Triton hands a Python model the batch's requests, not their concatenation); each request gets its
    own response, or its own error."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # only inside Triton

        self.setup(pb_utils, json.loads(args["model_config"]), Path(args["model_repository"]) / args["model_version"])

    def setup(self, pb_utils, config: dict, version_dir: Path) -> None:
        from rerankrt.runtime.ort_backend import OrtBackend

        self.pb_utils, self.name = pb_utils, config.get("name", "graph")
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.backend = OrtBackend(version_dir / "model.onnx").__enter__()

    def finalize(self) -> None:
        self.backend.__exit__(None, None, None)

    def execute(self, requests: list) -> list:
        pb = self.pb_utils
        inputs, outputs = self.backend.input_specs(), self.backend.output_specs()
        arrays: list[dict | Exception] = []
        for request in requests:
            try:
                arrays.append({s.name: self._input(pb.get_input_tensor_by_name(request, s.name), s) for s in inputs})
            except InputError as e:
                arrays.append(e)
        results: list[dict | Exception] = list(arrays)
        groups: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            if isinstance(a, dict):
                key = tuple(a[s.name].shape[1:] if self.batched else (i,) for s in inputs)
                groups.setdefault(key, []).append(i)
        for members in groups.values():
            try:
                feeds = {s.name: np.concatenate([arrays[i][s.name] for i in members])  # type: ignore[index]
                         if len(members) > 1 else arrays[members[0]][s.name] for s in inputs}  # type: ignore[index]
                out = self.backend.infer(feeds)
                counts = np.cumsum([len(arrays[i][inputs[0].name]) for i in members])[:-1]  # type: ignore[index]
                for k, i in enumerate(members):
                    results[i] = {name: np.split(x, counts)[k] if len(members) > 1 else x for name, x in out.items()}
            except (InputError, ValueError, RuntimeError) as e:
                for i in members:
                    results[i] = e
        responses = []
        for r in results:
            if isinstance(r, Exception):
                responses.append(error_response(pb, r, f"{self.name}: "))
            else:
                responses.append(pb.InferenceResponse(output_tensors=[
                    pb.Tensor(s.name, np.ascontiguousarray(r[s.name])) for s in outputs]))
        return responses

    def _input(self, tensor, spec: IOSpec) -> np.ndarray:
        if tensor is None:
            raise InputError(f"{spec.name}: missing from the request")
        return tensor.as_numpy()
