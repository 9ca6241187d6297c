"""CUDA device memory, pinned host memory and streams through `cuda.bindings` (TensorRT's own samples'
pattern, `common_runtime.py`): small RAII wrappers, every call checked.

`cuda.bindings` imports without a GPU and answers each call with an error code; `check` turns the
"no driver / no device" codes into one `UnavailableError("no CUDA device …")` and any other code into
a `RuntimeError` naming it.
"""

from __future__ import annotations

import ctypes

import numpy as np

from rerankrt.core.errors import UnavailableError
from rerankrt.core.optional import require

#: error names that mean "there is no usable GPU here" rather than "this call went wrong"
NO_DEVICE = {"cudaErrorInsufficientDriver", "cudaErrorNoDevice", "cudaErrorInitializationError",
             "cudaErrorCompatNotSupportedOnDevice"}


def cudart():
    return require("cuda.bindings.runtime", "gpu", "CUDA memory and streams")


def check(result: tuple):
    """`(err, *values)` from a cuda.bindings call → values (one value unwrapped), or an error."""
    rt = cudart()
    err, *values = result
    if err != rt.cudaError_t.cudaSuccess:
        name = rt.cudaGetErrorName(err)[1].decode()
        text = rt.cudaGetErrorString(err)[1].decode()
        if name in NO_DEVICE:
            raise UnavailableError(f"no CUDA device: {name} ({text})")
        raise RuntimeError(f"CUDA call failed: {name} ({text})")
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    return int(check(cudart().cudaGetDeviceCount()))


class Stream:
    """A non-default CUDA stream (TensorRT's enqueue must not use stream 0)."""

    def __init__(self) -> None:
        self.handle = check(cudart().cudaStreamCreate())

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.handle))

    def close(self) -> None:
        if self.handle is not None:
            check(cudart().cudaStreamDestroy(self.handle))
            self.handle = None

    def __int__(self) -> int:
        return int(self.handle)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Allocation:
    """`nbytes` of memory from a cuda.bindings allocator, released on close (or when collected)."""

    allocate, release = "", ""  #: the cudart function names

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(check(getattr(cudart(), self.allocate)(max(nbytes, 1))))

    def close(self) -> None:
        if self.ptr:
            check(getattr(cudart(), self.release)(self.ptr))
            self.ptr = 0

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the context may be gone already
            pass


class DeviceBuffer(_Allocation):
    """Device memory with async copies from and to host arrays."""

    allocate, release = "cudaMalloc", "cudaFree"

    def upload(self, host: np.ndarray, stream: Stream) -> None:
        check(cudart().cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes,
                                       cudart().cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle))

    def download(self, host: np.ndarray, stream: Stream) -> None:
        check(cudart().cudaMemcpyAsync(host.ctypes.data, self.ptr, host.nbytes,
                                       cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle))

    def copy_from(self, ptr: int, nbytes: int, stream: Stream) -> None:
        """Device-to-device: `nbytes` from another allocation (a caller's CUDA tensor) into this one."""
        if nbytes > self.nbytes:
            raise ValueError(f"device buffer of {self.nbytes} bytes cannot hold {nbytes}")
        check(cudart().cudaMemcpyAsync(self.ptr, ptr, nbytes, cudart().cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                       stream.handle))


class PinnedBuffer(_Allocation):
    """Page-locked host memory viewed as a numpy array of any dtype (fp16 included), for async copies."""

    allocate, release = "cudaMallocHost", "cudaFreeHost"

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A view of the first bytes as an array; the view keeps this buffer alive (its memory is freed
        when both the buffer and every view are gone, or at an explicit `close`)."""
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if count > self.nbytes:
            raise ValueError(f"pinned buffer of {self.nbytes} bytes cannot hold {count}")
        if not self.ptr:
            raise ValueError("pinned buffer: closed")
        memory = (ctypes.c_byte * max(count, 1)).from_address(self.ptr)
        memory._owner = self  # type: ignore[attr-defined]  # numpy's base chain reaches this buffer
        raw = np.ctypeslib.as_array(memory)
        return raw[:count].view(dtype).reshape(shape)


class DeviceArray:
    """A host array copied once into device memory, to be fed as an input again and again (the first stage's
    gallery): it exposes `__cuda_array_interface__`, so a backend reads it in place. `DeviceArray(host,
    dtype, stream)` copies `host` [N, …] row block by row block through one pinned staging buffer of at most
    `STAGING` bytes, converting each block to `dtype`, so the host never holds a second full copy (a
    memory-mapped float32 file of 3 GB goes up as 1.5 GB of FP16)."""

    STAGING = 64 << 20

    def __init__(self, host: np.ndarray, dtype, stream: Stream) -> None:
        self.shape, self.dtype = tuple(host.shape), np.dtype(dtype)
        row = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.buffer = DeviceBuffer(self.shape[0] * row)
        rows = max(self.STAGING // max(row, 1), 1)
        staging = PinnedBuffer(min(rows, self.shape[0]) * row)
        try:
            for start in range(0, self.shape[0], rows):
                block = host[start:start + rows]
                staged = staging.array(block.shape, self.dtype)
                staged[...] = block
                check(cudart().cudaMemcpyAsync(self.buffer.ptr + start * row, staged.ctypes.data, staged.nbytes,
                                               cudart().cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle))
                stream.synchronize()  # the staging buffer is reused by the next block
        finally:
            staging.close()

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.buffer.ptr, False), "version": 3}

    def download(self, stream: Stream) -> np.ndarray:
        """A host copy (for checks)."""
        host = np.empty(self.shape, self.dtype)
        self.buffer.download(host, stream)
        stream.synchronize()
        return host

    def close(self) -> None:
        self.buffer.close()
