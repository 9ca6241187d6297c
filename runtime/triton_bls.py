"""The re-ranking loops as Triton Python-backend models (`ames_rerank`, `locore_rerank`).

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerankrt.errors import InputError

from .backends import FeedChecker, IOSpec
from .rerankers import AmesReranker, LocoreReranker

TARGET_FILE = "target.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  #: Triton's data type
    dims: tuple[int, ...]  #: -1 where the size varies


#: The I/O of each loop model: one query per request (max_batch_size 0). `rerankrt triton` writes these
#: into config.pbtxt and `--check` compares the config against them. D and n come from the target's sidecar.
def rerank_io(kind: str, dim: int, locals_: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    if kind == "ames":
        inputs = [TensorSpec("q_desc", "TYPE_FP32", (-1, dim)), TensorSpec("q_mask", "TYPE_BOOL", (-1,)),
                  TensorSpec("db_desc", "TYPE_FP32", (-1, -1, dim)), TensorSpec("db_mask", "TYPE_BOOL", (-1, -1)),
                  TensorSpec("global_sim", "TYPE_FP32", (-1,))]
    elif kind == "locore":
        inputs = [TensorSpec("q_global", "TYPE_FP32", (dim,)), TensorSpec("q_local", "TYPE_FP32", (locals_, dim)),
                  TensorSpec("q_mask", "TYPE_BOOL", (locals_,)), TensorSpec("g_global", "TYPE_FP32", (-1, dim)),
                  TensorSpec("g_local", "TYPE_FP32", (-1, locals_, dim)),
                  TensorSpec("g_mask", "TYPE_BOOL", (-1, locals_)), TensorSpec("global_sim", "TYPE_FP32", (-1,))]
    else:
        raise ValueError(f"kind: expected ames or locore, got {kind!r}")
    outputs = [TensorSpec("order", "TYPE_INT64", (-1,)), TensorSpec("scores", "TYPE_FP32", (-1,))]
    return inputs, outputs


class BlsBackend:
    """The backend contract (`input_specs`, `check`, `infer`) over BLS requests to another model."""

    def __init__(self, pb_utils, model_name: str, meta: dict, precision: str) -> None:
        self.pb_utils, self.model_name = pb_utils, model_name
        self.check = FeedChecker(meta, precision)
        self.name = f"triton-bls:{model_name}"

    def input_specs(self) -> list[IOSpec]:
        return list(self.check.inputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check(feeds)
        pb = self.pb_utils
        request = pb.InferenceRequest(
            model_name=self.model_name, requested_output_names=[s.name for s in self.check.outputs],
            inputs=[pb.Tensor(name, np.ascontiguousarray(array)) for name, array in feeds.items()],
            # outputs in host memory: a GPU model's BLS outputs may otherwise stay on the device, where
            # `as_numpy()` cannot read them (the scores are a few KB)
            preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0))
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.model_name}: {response.error().message()}")
        return {s.name: pb.get_output_tensor_by_name(response, s.name).as_numpy() for s in self.check.outputs}


NUMPY_DTYPES = {"TYPE_FP32": np.float32, "TYPE_BOOL": np.bool_}


def _checked(tensor, spec: TensorSpec) -> np.ndarray:
    """A request's input against the loop's own I/O, so that errors name the caller's shapes (Triton
    checks them too, but the adapter does not rely on it)."""
    if tensor is None:
        raise InputError(f"{spec.name}: missing from the request")
    x = tensor.as_numpy()
    if x.dtype != NUMPY_DTYPES[spec.dtype]:
        raise InputError(f"{spec.name}: expected dtype {np.dtype(NUMPY_DTYPES[spec.dtype])}, got {x.dtype}")
    if x.ndim != len(spec.dims) or any(w not in (-1, g) for w, g in zip(spec.dims, x.shape, strict=True)):
        raise InputError(f"{spec.name}: expected shape {list(spec.dims)} (-1: any size), got {list(x.shape)}")
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
        self.backend = BlsBackend(pb_utils, self.params["target_model"], target["sidecar"], target["precision"])
        cfg = target["sidecar"]["config"]
        self.inputs, _ = rerank_io(self.kind, cfg["local_dim"], cfg.get("local_descriptors", 0))
        self.reranker = self.make_reranker()

    def make_reranker(self):
        raise NotImplementedError

    def run(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def execute(self, requests: list) -> list:
        pb = self.pb_utils
        responses = []
        for request in requests:
            try:
                arrays = {spec.name: _checked(pb.get_input_tensor_by_name(request, spec.name), spec)
                          for spec in self.inputs}
                order, scores = self.run(arrays)
                responses.append(pb.InferenceResponse(output_tensors=[
                    pb.Tensor("order", order.astype(np.int64)), pb.Tensor("scores", scores.astype(np.float32))]))
            except (InputError, ValueError, RuntimeError) as e:
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(e))))
        return responses


class AmesRerankModel(_RerankModel):
    """A query's descriptors and its shortlist in; the re-ranked order and fused scores out. Pairs go to
    the AMES model in batches of at most `batch` (the model's max_batch_size by default), so that Triton's
    dynamic batcher can merge the batches of concurrent queries."""

    kind = "ames"

    def make_reranker(self) -> AmesReranker:
        batch = int(self.params["batch"]) if "batch" in self.params else None
        return AmesReranker(self.backend, float(self.params["lambda"]), float(self.params["gamma"]), batch)

    def run(self, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        result = self.reranker.rerank(a["q_desc"], a["q_mask"], a["db_desc"], a["db_mask"], a["global_sim"])
        return result.order, result.scores


class LocoreRerankModel(_RerankModel):
    """A query and its shortlist of N in; LOCORE's sliding windows over the first `shortlist`, one BLS
    request per window; the order of all N and the fused scores (NaN past the shortlist) out."""

    kind = "locore"

    def make_reranker(self) -> LocoreReranker:
        p = self.params
        return LocoreReranker(self.backend, shortlist=int(p["shortlist"]), window=int(p["window"]),
                              stride=int(p["stride"]), order=p["order"], alpha=float(p["alpha"]),
                              temperature=float(p["temperature"]))

    def run(self, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        result = self.reranker.rerank(a["q_global"], a["q_local"], a["q_mask"], a["g_global"], a["g_local"],
                                      a["g_mask"], a["global_sim"])
        return result.order, result.scores


LOOP_MODELS = {"ames": AmesRerankModel, "locore": LocoreRerankModel}
