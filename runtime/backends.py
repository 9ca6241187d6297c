"""Backends behind one contract: a context manager with `input_specs()` and `infer(feeds) → outputs`.

The same feeds (numpy arrays by input name) work for every backend, as Polygraphy's runners do. Each
backend checks its feeds against the sidecar's I/O before running: names, dtypes, fixed dimensions,
one size per symbolic dimension across inputs, and sizes inside the TensorRT optimisation profile, so
a bad feed fails with the same message whatever runs it.

`OrtBackend` runs an exported graph with ONNX Runtime; `TorchBackend` the PyTorch model (imports torch
only when asked for). `open_backend` picks one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerankrt.errors import InputError, UnavailableError

from .sidecar import precision_of, read_sidecar

DTYPES = {"float32": np.float32, "float16": np.float16, "bool": np.bool_}
#: ONNX Runtime providers by the short names rerankrt accepts.
ORT_PROVIDERS = {"trt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


@dataclass(frozen=True)
class IOSpec:
    name: str
    dtype: np.dtype
    shape: tuple[str | int, ...]  #: symbolic dimensions by name, fixed ones by size


class FeedChecker:
    """Checks feeds against a sidecar's inputs and profiles (shared by every backend)."""

    def __init__(self, meta: dict, precision: str) -> None:
        self.inputs = [IOSpec(t["name"], np.dtype(DTYPES[t["dtype"][precision]]), tuple(t["shape"]))
                       for t in meta["inputs"]]
        self.outputs = [IOSpec(t["name"], np.dtype(DTYPES[t["dtype"][precision]]), tuple(t["shape"]))
                        for t in meta["outputs"]]
        self.profiles = meta["profiles"]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, int]:
        """Raises InputError on the first problem; returns the size of every symbolic dimension."""
        names = [s.name for s in self.inputs]
        missing, extra = [n for n in names if n not in feeds], sorted(set(feeds) - set(names))
        if missing or extra:
            raise InputError(f"feeds: expected inputs {names}; missing {missing}, unexpected {extra}")
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            x = feeds[spec.name]
            if not isinstance(x, np.ndarray):
                raise InputError(f"{spec.name}: expected a numpy array, got {type(x).__name__}")
            if x.dtype != spec.dtype:
                raise InputError(f"{spec.name}: expected dtype {spec.dtype}, got {x.dtype}")
            if x.ndim != len(spec.shape):
                raise InputError(f"{spec.name}: expected {len(spec.shape)} dimensions {list(spec.shape)}, "
                                 f"got shape {list(x.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, x.shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise InputError(f"{spec.name}: expected size {want} on axis {axis}, got shape {list(x.shape)}")
                if isinstance(want, str):
                    if sizes.setdefault(want, got) != got:
                        raise InputError(f"{spec.name}: dimension {want} is {got} here but {sizes[want]} in an "
                                         f"earlier input")
                    p = self.profiles[want]
                    if not p["min"] <= got <= p["max"]:
                        raise InputError(f"{spec.name}: {want}={got} is outside the optimisation profile "
                                         f"{p['min']}…{p['max']} (opt {p['opt']})")
        return sizes

    def finite(self, feeds: dict[str, np.ndarray]) -> None:
        """A NaN scan of the floating inputs, for backends whose models run with their own checks off."""
        for spec in self.inputs:
            x = feeds[spec.name]
            if x.dtype != np.bool_ and not np.isfinite(x).all():
                raise InputError(f"{spec.name}: contains {int((~np.isfinite(x)).sum())} NaN or infinite values")


class OrtBackend:
    """ONNX Runtime over an exported graph. `provider` is "cpu", "cuda" or "trt" (ONNX Runtime's own
    TensorRT execution provider); a provider that is not available, or that ONNX Runtime silently
    replaced by the CPU, is an error. GPU providers run through IO binding."""

    def __init__(self, onnx_path: str | os.PathLike, provider: str = "cpu") -> None:
        self.path = Path(onnx_path)
        self.meta = read_sidecar(self.path)
        self.precision = precision_of(self.path, self.meta)
        self.check = FeedChecker(self.meta, self.precision)
        if provider not in ORT_PROVIDERS:
            raise ValueError(f"provider: expected one of {', '.join(ORT_PROVIDERS)}, got {provider!r}")
        self.provider = ORT_PROVIDERS[provider]
        self.name = f"ort-{provider}"
        self.session = None

    def __enter__(self) -> OrtBackend:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.provider not in available:
            raise UnavailableError(f"ONNX Runtime provider {self.provider} is not available here "
                               f"(available: {', '.join(available)})")
        session = ort.InferenceSession(str(self.path), providers=[self.provider])
        active = session.get_providers()
        if active[0] != self.provider:  # ONNX Runtime falls back to the CPU without raising
            raise UnavailableError(f"ONNX Runtime did not start {self.provider}; active providers: {', '.join(active)}")
        self.session = session
        return self

    def __exit__(self, *exc) -> None:
        self.session = None

    def input_specs(self) -> list[IOSpec]:
        return list(self.check.inputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            raise RuntimeError(f"{self.name}: use the backend inside a `with` block")
        self.check(feeds)
        if self.provider == ORT_PROVIDERS["cpu"]:
            outputs = self.session.run(None, feeds)
            return {spec.name: out for spec, out in zip(self.check.outputs, outputs, strict=True)}
        # GPU providers: IO binding, so that outputs stay on the device until one copy back at the end.
        binding = self.session.io_binding()
        for name, x in feeds.items():
            binding.bind_cpu_input(name, x)
        for spec in self.check.outputs:
            binding.bind_output(spec.name, "cuda")
        self.session.run_with_iobinding(binding)
        return {spec.name: out for spec, out in zip(self.check.outputs, binding.copy_outputs_to_cpu(), strict=True)}


class TorchBackend:
    """The PyTorch model, on `device` in `dtype` ("float32" or "float16"): from an exported graph's
    sidecar (its model, configuration and checkpoint) or from a registered model name.

    Feeds are checked on the host (as every backend does, plus a NaN scan), then the model runs with its
    own checks off. `cuda_graphs=True` (CUDA only) captures one CUDA graph per input shape and replays it.
    """

    def __init__(self, source: str | os.PathLike, device: str = "cpu", dtype: str = "float32",
                 checkpoint: str | os.PathLike | None = None, cuda_graphs: bool = False, **config) -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype: expected float32 or float16, got {dtype!r}")
        if cuda_graphs and not device.startswith("cuda"):
            raise ValueError(f"cuda_graphs: CUDA graphs need a CUDA device, got device {device!r}")
        self.model_name, self.checkpoint, self.config = str(source), checkpoint, config
        if Path(source).suffix == ".onnx":
            meta = read_sidecar(source)
            recorded = meta["checkpoint"]
            self.model_name = meta["model"]
            self.checkpoint = checkpoint or (recorded["path"] if recorded else None)
            self.config = meta["config"] | config
        self.device, self.dtype, self.cuda_graphs = device, dtype, cuda_graphs
        self.name = f"torch-{device}-{dtype}" + ("-graphs" if cuda_graphs else "")
        self.model = None
        self._graphs: dict[tuple, tuple] = {}

    def __enter__(self) -> TorchBackend:
        import torch

        from rerankrt.export.specs import spec_for
        from rerankrt.models import load_model

        model = load_model(self.model_name, self.checkpoint, **self.config)
        precision = "fp16" if self.dtype == "float16" else "fp32"
        self.check = FeedChecker(spec_for(self.model_name, model.config).io_meta([precision]), precision)
        self.model = model.to(self.device, getattr(torch, self.dtype))
        return self

    def __exit__(self, *exc) -> None:
        self.model = None
        self._graphs.clear()

    def input_specs(self) -> list[IOSpec]:
        return list(self.check.inputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        if self.model is None:
            raise RuntimeError(f"{self.name}: use the backend inside a `with` block")
        self.check(feeds)
        self.check.finite(feeds)
        args = [torch.from_numpy(feeds[s.name]).to(self.device) for s in self.check.inputs]
        return {self.check.outputs[0].name: self.run(args).cpu().numpy()}

    def run(self, args: list):
        """The model on device tensors that are already checked (through a CUDA graph when enabled)."""
        import torch

        from rerankrt.models.checks import prechecked

        model = self.model
        if model is None:
            raise RuntimeError(f"{self.name}: use the backend inside a `with` block")
        with torch.inference_mode(), prechecked():
            if not self.cuda_graphs:
                return model(*args)
            key = tuple((tuple(a.shape), a.dtype) for a in args)
            if key not in self._graphs:
                static = [a.clone() for a in args]
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):  # warm-up outside capture (lazy initialisation, autotuning)
                        model(*static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = model(*static)
                self._graphs[key] = (graph, static, out)
            graph, static, out = self._graphs[key]
            for dst, src in zip(static, args, strict=True):
                dst.copy_(src)
            graph.replay()
            return out.clone()


def open_backend(source: str | os.PathLike, backend: str = "auto", device: str = "cpu", log=print):
    """A backend for `source`: a TensorRT engine `.plan`, an exported `.onnx` with its sidecar, or a
    registered model name for torch. For a graph, "auto" prefers ONNX Runtime with CUDA, then on the CPU,
    and says which it chose."""
    if backend == "torch":
        return TorchBackend(source, device=device)
    if Path(source).suffix == ".plan" and backend in ("auto", "trt"):
        try:
            from .trt_backend import TrtBackend
        except ImportError as e:
            raise UnavailableError(f"{source}: TensorRT is not installed here ({e}); pip install rerankrt[trt]") \
                from None
        log(f"backend {backend}: TensorRT engine {source}")
        return TrtBackend(source)
    if Path(source).suffix != ".onnx":
        raise ValueError(f"{source}: backend {backend!r} needs an exported .onnx file (or use backend='torch')")
    if backend == "ort":
        return OrtBackend(source, "cuda" if device.startswith("cuda") else "cpu")
    if backend != "auto":
        raise ValueError(f"backend: expected auto, ort or torch, got {backend!r}")
    import onnxruntime as ort

    provider = "cuda" if ORT_PROVIDERS["cuda"] in ort.get_available_providers() else "cpu"
    log(f"backend auto: ONNX Runtime with {ORT_PROVIDERS[provider]} for {source}")
    return OrtBackend(source, provider)
