"""CUDA wrappers without a GPU (one clear error), and the engine-compatibility rule of plan sidecars."""

from __future__ import annotations

import ctypes
import gc
import json

import numpy as np
import pytest

from rerankrt.core import environment
from rerankrt.core.errors import ModelFileError, UnavailableError
from rerankrt.runtime import cuda
from rerankrt.runtime.plan import check_compatible, read_plan_sidecar

HAS_GPU = environment.cuda_device() is not None


@pytest.mark.skipif(HAS_GPU, reason="a CUDA device is present: the round trip test covers it")
def test_no_gpu_is_one_clear_error():
    pytest.importorskip("cuda.bindings", reason="cuda-bindings (dev extra) is not installed")
    for make in (cuda.device_count, lambda: cuda.DeviceBuffer(16), cuda.Stream, lambda: cuda.PinnedBuffer(16)):
        with pytest.raises(UnavailableError, match=r"^no CUDA device: cudaError\w+ \(.+\)$"):
            make()


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")
def test_host_device_round_trip():
    """FP16 and bool arrays through pinned staging, up and back on one stream (gpu_check's own check)."""
    from rerankrt.bench.gpu_check import round_trip

    rows: list = []
    round_trip(rows)
    assert rows == [{"check": "host↔device round trip (runtime.cuda)", "ok": True,
                     "detail": "fp16 [600,768], bool [100,600]"}]


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")
def test_a_resident_array_goes_up_in_blocks_and_converted(monkeypatch):
    """A float32 gallery of 1,000 × 48 through a staging buffer of 7 rows' bytes (143 blocks, the last one
    short) lands as FP16, whole; torch reads it in place through __cuda_array_interface__ where present."""
    host = np.random.default_rng(0).standard_normal((1000, 48)).astype(np.float32)
    monkeypatch.setattr(cuda.DeviceArray, "STAGING", 7 * 48 * 2)
    with cuda.Stream() as stream:
        array = cuda.DeviceArray(host, np.float16, stream)
        back = array.download(stream)
        assert array.__cuda_array_interface__["shape"] == (1000, 48)
        assert array.__cuda_array_interface__["typestr"] == "<f2"
        np.testing.assert_array_equal(back, host.astype(np.float16))
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None and torch.cuda.is_available():
            np.testing.assert_array_equal(torch.as_tensor(array, device="cuda").cpu().numpy(), back)
        array.close()


class FakeRuntime:
    """Host allocations standing in for cuda.bindings' pinned memory, recording what is freed."""

    class cudaError_t:  # noqa: N801  (cuda.bindings' name)
        cudaSuccess = 0

    def __init__(self) -> None:
        self.live: dict[int, ctypes.Array] = {}
        self.freed: list[int] = []

    def cudaMallocHost(self, nbytes: int) -> tuple[int, int]:  # noqa: N802
        memory = ctypes.create_string_buffer(nbytes)
        self.live[ctypes.addressof(memory)] = memory
        return 0, ctypes.addressof(memory)

    def cudaFreeHost(self, ptr: int) -> tuple[int]:  # noqa: N802
        del self.live[ptr]
        self.freed.append(ptr)
        return (0,)


def test_pinned_views_keep_their_buffer_alive(monkeypatch):
    """A view returned by `PinnedBuffer.array` outlives the buffer object: the memory is freed only when
    the last view is gone (or at an explicit close)."""
    fake = FakeRuntime()
    monkeypatch.setattr(cuda, "cudart", lambda: fake)
    pinned = cuda.PinnedBuffer(64)
    view, ptr = pinned.array((4, 2), np.float32), pinned.ptr
    del pinned
    gc.collect()
    assert fake.freed == []
    view[...] = 7.0  # still the pinned memory, still writable
    assert np.frombuffer(fake.live[ptr], np.float32, 8).tolist() == [7.0] * 8
    del view
    gc.collect()
    assert fake.freed == [ptr]
    closed = cuda.PinnedBuffer(16)
    closed.close()
    with pytest.raises(ValueError, match="pinned buffer: closed"):
        closed.array((4,), np.float32)
    with pytest.raises(ValueError, match="pinned buffer of 16 bytes cannot hold 32"):
        cuda.PinnedBuffer(16).array((8,), np.float32)


PLAN = {"format": "rerankrt-plan/2", "tensorrt": "10.3.0", "gpu": {"name": "Orin", "compute_capability": "8.7"},
        "precision": "fp16", "onnx": {"sidecar": {
            "format": "rerankrt-onnx/2", "model": "ames", "kind": "pair-wise", "config": {}, "opset": 20,
            "checkpoint": None, "files": {"fp16": "ames.fp16.onnx"},
            "inputs": [{"name": "x", "dtype": {"fp16": "float16"}, "shape": ["pairs", 4]}],
            "outputs": [{"name": "y", "dtype": {"fp16": "float16"}, "shape": ["pairs"]}],
            "profiles": {"pairs": {"min": 1, "opt": 2, "max": 3}}}}}
ORIN = {"name": "Orin", "compute_capability": "8.7"}


def test_engine_runs_only_where_it_was_built(tmp_path):
    plan = tmp_path / "ames.plan"
    check_compatible(plan, PLAN, "10.3.0", ORIN)
    with pytest.raises(ModelFileError, match=r"ames.plan: built by TensorRT 10.3.0, this is TensorRT 11.4.0.106; "
                                             r"rebuild it here with `rerankrt build`"):
        check_compatible(plan, PLAN, "11.4.0.106", ORIN)
    with pytest.raises(ModelFileError, match=r"ames.plan: built for compute capability 8.7, this GPU \(H100\) is 9.0"):
        check_compatible(plan, PLAN, "10.3.0", {"name": "H100", "compute_capability": "9.0"})
    with pytest.raises(UnavailableError, match=r"ames.plan: no CUDA device to run the engine on"):
        check_compatible(plan, PLAN, "10.3.0", None)


def test_plan_sidecar_errors(tmp_path):
    plan = tmp_path / "ames.plan"
    with pytest.raises(ModelFileError, match=r"ames.plan: its sidecar .*ames.plan.json is missing"):
        read_plan_sidecar(plan)
    (tmp_path / "ames.plan.json").write_text("{")
    with pytest.raises(ModelFileError, match=r"ames.plan.json: not valid JSON"):
        read_plan_sidecar(plan)
    (tmp_path / "ames.plan.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelFileError, match=r"expected format 'rerankrt-plan/2', got 'other'"):
        read_plan_sidecar(plan)
    (tmp_path / "ames.plan.json").write_text(json.dumps(PLAN))
    assert read_plan_sidecar(plan) == PLAN
