"""`TrtBackend`: a TensorRT engine behind the backend contract, with no PyTorch in the process.

Named tensors, `set_input_shape` per call, device and pinned host buffers and a non-default stream
through `runtime.cuda`, `execute_async_v3`, and optionally one CUDA graph per input shape. Feeds may be
numpy arrays or CUDA tensors (anything with `__cuda_array_interface__`, e.g. torch): device tensors are
used in place, without a copy, unless CUDA graphs are on. An engine is refused before it is deserialised
when its sidecar says it was built by another TensorRT version or for another compute capability
(TensorRT would fail obscurely).

`resident(array)` copies an input that stays the same from call to call (the first stage's gallery) into
device memory once; fed back, it is bound in place on every call, CUDA graphs or not (its address does
not move), and freed with the backend.

A captured CUDA graph replays the device addresses it was captured with. So with graphs on, every tensor
lives in a buffer of this backend (a caller's device tensor is copied in, device to device), and growing a
buffer for a larger shape drops every captured graph: a replay never reads freed or stale memory.

`import tensorrt` sits at the top for the type checker (`scripts/trt_conformance.py`); the runtime
imports this module lazily.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorrt as trt

from rerankrt.core import environment
from rerankrt.core.errors import InputError, ModelFileError, UnavailableError
from rerankrt.runtime import cuda
from rerankrt.runtime.feeds import Backend
from rerankrt.runtime.plan import check_compatible, read_plan_sidecar


class TrtBackend(Backend):
    def __init__(self, plan_path: str | os.PathLike, cuda_graphs: bool = False) -> None:
        self.path = Path(plan_path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such file")
        self.plan_meta = read_plan_sidecar(self.path)
        precision = self.plan_meta["precision"]
        super().__init__(f"trt-{precision}", self.plan_meta["onnx"]["sidecar"], precision)
        self.cuda_graphs = cuda_graphs
        self.context: trt.IExecutionContext | None = None

    def open(self) -> None:
        check_compatible(self.path, self.plan_meta, trt.__version__, environment.cuda_device())
        self.logger = trt.Logger(trt.Logger.WARNING)
        try:
            runtime = trt.Runtime(self.logger)
        except TypeError as e:  # pybind11: the factory returned null
            raise UnavailableError(f"TensorRT {trt.__version__} could not create a Runtime ({e})") from None
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ModelFileError(f"{self.path}: TensorRT could not deserialise the engine (truncated or corrupt?)")
        self.engine, self.runtime = engine, runtime
        self.context = engine.create_execution_context()
        self.stream = cuda.Stream()
        self.device: dict[str, cuda.DeviceBuffer] = {}
        self.pinned: dict[str, cuda.PinnedBuffer] = {}
        self.graphs: dict[tuple, object] = {}
        self.residents: list[cuda.DeviceArray] = []

    def resident(self, name: str, host: np.ndarray) -> cuda.DeviceArray:
        """Input `name`'s `host` array in device memory, in the engine's dtype, for feeding on every call."""
        spec = next((s for s in self.check.inputs if s.name == name), None)
        if spec is None:
            names = ", ".join(s.name for s in self.check.inputs)
            raise InputError(f"{name}: not an input of {self.meta['model']} ({names})")
        if self.context is None:
            raise RuntimeError(f"{self.name}: use the backend inside a `with` block")
        array = cuda.DeviceArray(host, spec.dtype, self.stream)
        self.residents.append(array)
        return array

    def close(self) -> None:
        self._drop_graphs()
        for array in self.residents:
            array.close()
        for device in self.device.values():
            device.close()
        for pinned in self.pinned.values():
            pinned.close()
        self.stream.close()
        self.context = None

    def weight_bytes(self) -> int:
        """The engine file's size: its weights and little else."""
        return self.path.stat().st_size

    def _drop_graphs(self) -> None:
        for graph in self.graphs.values():
            cuda.check(cuda.cudart().cudaGraphExecDestroy(graph))
        self.graphs.clear()

    def _buffers(self, name: str, nbytes: int) -> tuple[cuda.DeviceBuffer, cuda.PinnedBuffer]:
        """Per-tensor buffers that grow to the largest shape seen; growing one drops the captured graphs,
        which hold the old addresses."""
        if name not in self.device or self.device[name].nbytes < nbytes:
            self.stream.synchronize()  # the old buffers may still be in use by queued work
            self._drop_graphs()
            for pool in (self.device, self.pinned):
                if name in pool:
                    pool[name].close()
            self.device[name], self.pinned[name] = cuda.DeviceBuffer(nbytes), cuda.PinnedBuffer(nbytes)
        return self.device[name], self.pinned[name]

    def infer_impl(self, feeds: dict) -> dict[str, np.ndarray]:
        context = self.context
        assert context is not None
        for spec in self.check.inputs:
            x = feeds[spec.name]
            if not context.set_input_shape(spec.name, trt.Dims(list(x.shape))):
                raise InputError(f"{spec.name}: shape {list(x.shape)} is outside the engine's optimisation profile")
            iface = getattr(x, "__cuda_array_interface__", None)
            nbytes = int(np.prod(x.shape)) * spec.dtype.itemsize
            if iface is not None and (isinstance(x, cuda.DeviceArray) or not self.cuda_graphs):
                # zero copy: a resident array (its address fixed), or the caller's device memory
                context.set_tensor_address(spec.name, int(iface["data"][0]))
                continue
            device, pinned = self._buffers(spec.name, nbytes)
            if iface is not None:
                device.copy_from(int(iface["data"][0]), nbytes, self.stream)
            else:
                staged = pinned.array(x.shape, x.dtype)
                staged[...] = x
                device.upload(staged, self.stream)
            context.set_tensor_address(spec.name, device.ptr)
        outputs = {}
        for spec in self.check.outputs:
            dims = context.get_tensor_shape(spec.name)
            shape = tuple(int(dims[i]) for i in range(len(dims)))
            device, pinned = self._buffers(spec.name, int(np.prod(shape)) * spec.dtype.itemsize)
            context.set_tensor_address(spec.name, device.ptr)
            outputs[spec.name] = (device, pinned.array(shape, spec.dtype))
        self._execute(tuple(tuple(feeds[s.name].shape) for s in self.check.inputs))
        for device, host in outputs.values():
            device.download(host, self.stream)
        self.stream.synchronize()
        return {name: host.copy() for name, (_, host) in outputs.items()}

    def _execute(self, shapes: tuple) -> None:
        """execute_async_v3, or a CUDA graph per input shape (captured after one plain run, as trtexec does;
        an engine that cannot be captured falls back to plain enqueues)."""
        context = self.context
        assert context is not None
        rt = cuda.cudart()
        if not self.cuda_graphs:
            if not context.execute_async_v3(self.stream.handle):
                raise RuntimeError(f"{self.name}: execute_async_v3 failed (see the TensorRT log)")
            return
        graph = self.graphs.get(shapes)
        if graph is None:
            context.execute_async_v3(self.stream.handle)  # flushes lazy initialisation and shape updates
            cuda.check(rt.cudaStreamBeginCapture(self.stream.handle,
                                                 rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            ok = context.execute_async_v3(self.stream.handle)
            captured = cuda.check(rt.cudaStreamEndCapture(self.stream.handle))
            if not ok:
                rt.cudaGetLastError()
                self.cuda_graphs = False
                self._execute(shapes)
                return
            graph = cuda.check(rt.cudaGraphInstantiate(captured, 0))
            cuda.check(rt.cudaGraphDestroy(captured))
            self.graphs[shapes] = graph
        cuda.check(rt.cudaGraphLaunch(graph, self.stream.handle))
