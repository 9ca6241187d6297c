"""The thin runtime: backends (ONNX Runtime, TensorRT) behind one contract, the sidecars and artifact
names, the re-ranking loops and re-rankers, LOCORE's sliding windows and score fusion.

No torch, and nothing of the layers above (`data`, `models`, `search`, `export`, `bench`): this is what
ships to a device. The PyTorch model behind the same contract is `rerankrt.models.TorchBackend`.
"""

from rerankrt.runtime.artifacts import Artifacts
from rerankrt.runtime.feeds import Backend, IOSpec
from rerankrt.runtime.fusion import fuse
from rerankrt.runtime.loops import LOOPS, Loop, loop_of, released_settings, reranker_for
from rerankrt.runtime.ort_backend import OrtBackend
from rerankrt.runtime.request import BackendRequest, open_backend, resolve
from rerankrt.runtime.rerankers import AmesReranker, LocoreReranker, Reranked
from rerankrt.runtime.sliding import ORDERS, SlidingResult, sliding_rerank, window_starts

__all__ = [
    "LOOPS", "ORDERS", "AmesReranker", "Artifacts", "Backend", "BackendRequest", "IOSpec", "LocoreReranker", "Loop",
    "OrtBackend", "Reranked", "SlidingResult", "fuse", "loop_of", "open_backend", "released_settings", "reranker_for",
    "resolve", "sliding_rerank", "window_starts",
]
