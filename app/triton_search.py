"""The search pipeline as a Triton Python-backend model (`search`): one encoded query image in, its top K
gallery rows, names, fused scores and global similarities out (the fields of `rerankrt search`'s JSON).

It is `Searcher` itself over the search index named by the `index` parameter, with the extractor, the
AMES encoder and the scorer of the same repository behind BLS (`runtime.triton_bls.BlsBackend`), so its
results are `Searcher`'s. The config's parameters name the three models and the re-ranker's settings; the
version folder's `target.json` holds their export sidecars (what `Searcher` checks against the index: the
extractor's weights, the store's checkpoint, the dimensions). Both are written by `rerankrt triton --index`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rerankrt.errors import InputError
from rerankrt.runtime.feeds import IOSpec
from rerankrt.runtime.triton_bls import TARGET_FILE, BlsBackend

from .search import Searcher

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


def _one(tensor, spec: IOSpec) -> np.ndarray:
    x = tensor.as_numpy()
    if x.shape != (1,):
        raise InputError(f"{spec.name}: expected shape [1] (one query per request), got {list(x.shape)}")
    return x


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
        self.searcher = Searcher(p["index"], models={b.model_name: b for b in self.backends})
        self.settings: dict[str, Any] = {"shortlist": int(p["shortlist"]), "lam": float(p["lambda"]),
                                         "gamma": float(p["gamma"])}
        self.inputs, self.outputs = search_io()

    def finalize(self) -> None:
        """Triton's unload hook."""
        self.searcher.close()
        for backend in self.backends:
            backend.__exit__(None, None, None)

    def search(self, request) -> list:
        from rerankrt.runtime.extraction import decode_image

        pb = self.pb_utils
        query, top = (pb.get_input_tensor_by_name(request, s.name) for s in self.inputs)
        if query is None:
            raise InputError("query: missing from the request (the encoded image, as bytes)")
        data = _one(query, self.inputs[0])[0]
        if not isinstance(data, bytes):
            raise InputError(f"query: expected the encoded image as bytes (TYPE_STRING), got {type(data).__name__}")
        k = int(self.params["top"]) if top is None else int(_one(top, self.inputs[1])[0])
        result = self.searcher.search(decode_image(data, "query"), top=k, **self.settings)
        hits = result.hits
        values = (np.array([h.index for h in hits], np.int64),
                  np.array([(h.image or "").encode() for h in hits], np.object_),
                  np.array([h.score for h in hits], np.float32), np.array([h.global_ for h in hits], np.float32))
        return [pb.Tensor(spec.name, value) for spec, value in zip(self.outputs, values, strict=True)]

    def execute(self, requests: list) -> list:
        pb = self.pb_utils
        responses = []
        for request in requests:
            try:
                responses.append(pb.InferenceResponse(output_tensors=self.search(request)))
            except (InputError, ValueError, RuntimeError) as e:  # each request's error in its own response
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(e))))
        return responses
