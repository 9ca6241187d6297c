"""The roofs of the roofline, probed on the backend and precision the models run with.

Compute roof: the best FLOP/s of several dense kernels the models are made of (square and batched
matrix products of a few sizes, and a 3×3 convolution), each timed best-of-N, so that the roof is the
machine's attainable peak on that backend rather than one kernel's. At INT8 (ONNX Runtime) the kernels
are what an INT8 graph runs: a float activation quantized per tensor times an INT8 weight per output
channel (the Q/DQ pattern ONNX Runtime fuses into an integer product), in operations per second.
Memory roof: the bytes per second of a large copy (read + write), the device's for torch on CUDA, the
host's otherwise. A model's bound at arithmetic intensity I (FLOP per byte moved) is min(compute roof,
I × memory roof).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

#: (name, FLOPs, the ONNX graph's op, input shapes)
GEMMS = [(f"matmul {n}", 2 * n**3, ("MatMul", [(n, n), (n, n)])) for n in (512, 1024, 2048)]
BATCHED = [("batched matmul 16×512", 2 * 16 * 512**3, ("MatMul", [(16, 512, 512), (16, 512, 512)]))]
#: a ResNet stage-2 3×3 convolution, batch 8, 128 → 128 channels at 56 × 56 ("same" padding)
CONV = [("conv 3×3 128→128 @56²×8", 2 * 8 * 128 * 128 * 9 * 56 * 56, ("Conv", [(8, 128, 56, 56), (128, 128, 3, 3)]))]
KERNELS = GEMMS + BATCHED + CONV


def _best_seconds(run: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    run()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _torch_runs(device: str, dtype, op: str, shapes: list[tuple]) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F

    rng = torch.Generator().manual_seed(0)
    a, b = (torch.randn(s, generator=rng).to(device, dtype) for s in shapes)
    if op == "MatMul":
        return lambda: a @ b
    return lambda: F.conv2d(a, b, padding=1)


def _ort_int8_runs(device: str, shapes: list[tuple]) -> Callable[[], object]:
    """x (float) → QuantizeLinear → DequantizeLinear → MatMul ← DequantizeLinear ← W (INT8, per column)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    k, n = shapes[1][-2:]
    weight = rng.integers(-127, 128, (k, n), dtype=np.int8)
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.full(n, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(n, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.int8), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["a", "xs", "xz"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "xs", "xz"], ["ad"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=1),
             helper.make_node("MatMul", ["ad", "wd"], ["c"])]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(shapes[0]))],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    session = ort.InferenceSession(model.SerializeToString(), providers=[provider])
    feeds = {"a": rng.standard_normal(shapes[0]).astype(np.float32)}
    return lambda: session.run(None, feeds)


def _ort_runs(device: str, dtype, op: str, shapes: list[tuple]) -> Callable[[], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    node = helper.make_node(op, ["a", "b"], ["c"])
    if op == "Conv":
        node.attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info(n, elem, list(s))
                                                for n, s in zip("ab", shapes, strict=True)],
                              [helper.make_tensor_value_info("c", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    session = ort.InferenceSession(model.SerializeToString(), providers=[provider])
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(dtype) for n, s in zip("ab", shapes, strict=True)}
    return lambda: session.run(None, feeds)


def compute_roof(backend: str, precision: str, device: str, repeat: int = 5) -> dict:
    """{"gflops": the best, "kernels": {name: GFLOP/s}} on `backend` ("torch" or "ort"); a kernel the backend
    cannot run at this precision (ONNX Runtime's CPU convolution in fp16) is left out. INT8 (ONNX Runtime
    only): the matrix products as an INT8 graph runs them, in GOP/s."""
    dtype = np.float16 if precision == "fp16" else np.float32
    sync = _sync(backend, device)
    kernels = {}
    for name, flops, (op, shapes) in KERNELS:
        if precision == "int8" and (backend != "ort" or op != "MatMul"):
            continue
        try:
            if precision == "int8":
                run = _ort_int8_runs(device, shapes)
            elif backend == "torch":
                import torch

                run = _torch_runs(device, torch.float16 if precision == "fp16" else torch.float32, op, shapes)
            else:
                run = _ort_runs(device, dtype, op, shapes)
            kernels[name] = flops / _best_seconds(run, repeat, sync) / 1e9
        except Exception as e:  # noqa: BLE001  (a kernel the backend lacks at this precision: not the peak)
            if "NOT_IMPLEMENTED" not in str(e) and "not implemented" not in str(e).lower():
                raise
    return {"gflops": max(kernels.values()), "kernels": kernels}


def memory_roof(backend: str, device: str, megabytes: int = 256, repeat: int = 5) -> dict:
    """{"gb_per_s", "where"}: a copy of `megabytes`, counting the bytes read and written."""
    n = megabytes * 2**20
    if backend == "torch" and device.startswith("cuda"):
        import torch

        source = torch.empty(n, dtype=torch.uint8, device=device)
        target = torch.empty_like(source)
        seconds = _best_seconds(lambda: target.copy_(source), repeat, torch.cuda.synchronize)
        return {"gb_per_s": 2 * n / seconds / 1e9, "where": "device copy"}
    src = np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8)
    dst = np.empty_like(src)
    seconds = _best_seconds(lambda: np.copyto(dst, src), repeat, lambda: None)
    return {"gb_per_s": 2 * n / seconds / 1e9, "where": "host copy"}


def _sync(backend: str, device: str) -> Callable[[], None]:
    if backend == "torch" and device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def bound(intensity: float, roof: dict, memory: dict) -> float:
    """The attainable GFLOP/s at `intensity` FLOP per byte under both roofs."""
    return min(roof["gflops"], intensity * memory["gb_per_s"])
