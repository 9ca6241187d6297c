"""`OrtBackend`: an exported graph run by ONNX Runtime, behind the backend contract (`runtime.feeds`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rerankrt.core.errors import ModelFileError, UnavailableError
from rerankrt.runtime.feeds import Backend
from rerankrt.runtime.sidecar import precision_of, read_sidecar

#: ONNX Runtime providers by the short names rerankrt accepts.
ORT_PROVIDERS = {"trt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def physical_cores() -> int:
    """The physical cores this process may run on (hyperthread siblings counted once): what one session's
    intra-op threads should number. Read from /proc/cpuinfo where it exists, else the CPUs it may use."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return max(len(allowed), 1)
    cores, cpu, package = set(), None, "0"
    for line in text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            cpu = int(value)
        elif key == "physical id":
            package = value
        elif key == "core id" and cpu in allowed:
            cores.add((package, value))
    return max(len(cores) or len(allowed), 1)


def session_options():
    """The one session setting rerankrt runs ONNX Runtime with (measured: `python -m
    rerankrt.bench.ort_options`, measured/ort-session-options.json): intra-op threads = the physical cores
    (ONNX Runtime's own default counts what the OS reports, hyperthreads and a container's hidden CPUs
    included), one inter-op thread with sequential execution (the graphs are chains; a parallel executor
    only competes for the same cores), spinning left on (off cost 7 % on AMES at 25 pairs, 2 cores), the
    memory pattern on (its default; the shapes of one loop repeat), every graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OrtBackend(Backend):
    """ONNX Runtime over an exported graph. `provider` is "cpu", "cuda" or "trt" (ONNX Runtime's own
    TensorRT execution provider); a provider that is not available, or that ONNX Runtime silently
    replaced by the CPU, is an error. GPU providers run through IO binding."""

    def __init__(self, onnx_path: str | os.PathLike, provider: str = "cpu") -> None:
        if provider not in ORT_PROVIDERS:
            raise ValueError(f"provider: expected one of {', '.join(ORT_PROVIDERS)}, got {provider!r}")
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such file")
        meta = read_sidecar(self.path)
        super().__init__(f"ort-{provider}", meta, precision_of(self.path, meta))
        self.provider = ORT_PROVIDERS[provider]
        self.session = None

    def open(self) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.provider not in available:
            raise UnavailableError(f"ONNX Runtime provider {self.provider} is not available here "
                                   f"(available: {', '.join(available)})")
        try:
            session = ort.InferenceSession(str(self.path), session_options(), providers=[self.provider])
        except Exception as e:  # onnxruntime's InvalidProtobuf, NoSuchFile, Fail …: the file, not the caller
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load it ({first})") from None
        active = session.get_providers()
        if active[0] != self.provider:  # ONNX Runtime falls back to the CPU without raising
            raise UnavailableError(f"ONNX Runtime did not start {self.provider}; active providers: {', '.join(active)}")
        self._check_graph(session)
        self.session = session

    def _check_graph(self, session) -> None:
        """The graph's own inputs and outputs must be the sidecar's (names, order, element types): a graph
        and a sidecar from different exports would otherwise fail in the feed check, or not at all."""
        types = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float16): "tensor(float16)",
                 np.dtype(np.bool_): "tensor(bool)", np.dtype(np.int64): "tensor(int64)"}
        for field, graph, specs in (("inputs", session.get_inputs(), self.check.inputs),
                                    ("outputs", session.get_outputs(), self.check.outputs)):
            have = [(t.name, t.type) for t in graph]
            want = [(s.name, types[s.dtype]) for s in specs]
            if have != want:
                raise ModelFileError(f"{self.path}: the graph's {field} {have} are not its sidecar's {want} "
                                     f"(a graph and a sidecar of different exports? export again)")

    def close(self) -> None:
        self.session = None

    def weight_bytes(self) -> int:
        """The graph file's size: its initializers, the weights inside it."""
        return self.path.stat().st_size

    def infer_impl(self, feeds: dict) -> dict[str, np.ndarray]:
        assert self.session is not None
        names = [spec.name for spec in self.check.outputs]
        if self.provider == ORT_PROVIDERS["cpu"]:
            return dict(zip(names, self.session.run(names, feeds), strict=True))
        # GPU providers: IO binding, so that outputs stay on the device until one copy back at the end.
        binding = self.session.io_binding()
        for name, x in feeds.items():
            binding.bind_cpu_input(name, x)
        for name in names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))
