"""GPU check: what a GPU machine with PyTorch (CUDA) and cuda-bindings verifies in under 5 minutes.

`python -m rerankrt.bench.gpu_check [--out DIR] [--repeat 20]`
1. TorchBackend FP16 on CUDA vs FP32 on the CPU (AMES 100×600×50, LOCORE-small K 100, RAML 8×224²),
   within each spec's FP16 tolerance;
2. a host↔device round trip through the runtime's buffer and stream wrappers (`runtime.cuda`);
3. torch FP16 latency on CUDA of AMES (and its store scorer), LOCORE-small, LOCORE and the pair-wise
   baselines (RRT and R2Former at 100 pairs, CVNet-Rerank at 8 pairs of 48×64 maps), with and without
   CUDA graphs (CUDA events, medians);
4. where TensorRT is installed: AMES's FP16 graph built into an engine, TrtBackend vs ONNX Runtime, and
   TrtBackend with CUDA graphs: a replay after a larger shape (its buffers grew) equals a fresh run; AMES's
   INT8 graph (Q/DQ, calibrated on a synthetic dataset) built as a strongly typed INT8 engine, its ranking
   of 100 pairs against ONNX Runtime's INT8 graph (Spearman, top-10 overlap: INT8 is not checked by atol).
Prints a table, writes `gpu_check.json` to --out, exits 1 when a check fails and 2 without a CUDA device.
Released configurations with random weights.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rerankrt.core import environment

PARITY = [("ames", {"pairs": 100, "query_descriptors": 600, "db_descriptors": 50}),
          ("locore-small", {"batch": 1, "images": 100}),
          ("raml", {"batch": 8, "height": 224, "width": 224})]
LATENCY = [("ames", PARITY[0][1]), ("ames-dist-scorer", PARITY[0][1]), ("locore-small", PARITY[1][1]),
           ("locore", PARITY[1][1]),
           ("rrt", {"pairs": 100, "src_descriptors": 500, "tgt_descriptors": 500}),
           ("r2former", {"pairs": 100, "query_tokens": 500, "db_tokens": 500}),
           ("cvnet-rerank", {"pairs": 8})]


def parity(rows: list) -> None:
    from rerankrt.models import spec_for
    from rerankrt.models.torch_backend import TorchBackend

    for name, shape in PARITY:
        spec = spec_for(name)
        feeds = spec.feeds(shape, seed=3)
        half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feeds.items()}
        with TorchBackend(name) as cpu, TorchBackend(name, device="cuda", dtype="float16") as gpu:
            ref = next(iter(cpu.infer(feeds).values()))
            out = next(iter(gpu.infer(half).values())).astype(np.float32)
        worst = float(np.abs(out - ref).max())
        ok = bool(np.isfinite(out).all()) and worst <= spec.fp16.atol + spec.fp16.rtol * float(np.abs(ref).max())
        rows.append({"check": f"torch fp16 cuda vs fp32 cpu: {name}", "ok": ok,
                     "detail": f"max |Δ| {worst:.2e} (atol {spec.fp16.atol:g}) at {shape}"})


def round_trip(rows: list) -> None:
    from rerankrt.runtime import cuda

    x = np.random.default_rng(0).standard_normal((600, 768)).astype(np.float16)
    m = np.random.default_rng(1).random((100, 600)) < 0.3
    ok = True
    with cuda.Stream() as stream:
        for host in (x, m):
            device, pinned = cuda.DeviceBuffer(host.nbytes), cuda.PinnedBuffer(host.nbytes)
            staged = pinned.array(host.shape, host.dtype)
            staged[...] = host
            device.upload(staged, stream)
            back = np.empty_like(host)
            device.download(back, stream)
            stream.synchronize()
            ok &= bool(np.array_equal(back, host))
            device.close()
            pinned.close()
    rows.append({"check": "host↔device round trip (runtime.cuda)", "ok": ok,
                 "detail": "fp16 [600,768], bool [100,600]"})


def latency(rows: list, repeat: int) -> None:
    import torch

    from rerankrt.bench.timing import cuda_median_ms
    from rerankrt.models import spec_for
    from rerankrt.models.torch_backend import TorchBackend

    for name, shape in LATENCY:
        spec = spec_for(name)
        feeds = spec.feeds(shape, seed=5)
        args = [torch.from_numpy(feeds[t.name]).cuda() for t in spec.inputs]
        args = [a.half() if a.is_floating_point() else a for a in args]
        times = {}
        for graphs in (False, True):
            with TorchBackend(name, device="cuda", dtype="float16", cuda_graphs=graphs) as backend:
                times[graphs] = cuda_median_ms(lambda: backend.run(args), repeat)  # noqa: B023
        rows.append({"check": f"torch fp16 latency: {name}", "ok": True,
                     "detail": f"{times[False]:.2f} ms eager, {times[True]:.2f} ms CUDA graph at {shape}",
                     "eager_ms": times[False], "graph_ms": times[True]})


def tensorrt(rows: list) -> None:
    if importlib.util.find_spec("tensorrt") is None:
        rows.append({"check": "TensorRT engine vs ONNX Runtime", "ok": None, "detail": "TensorRT is not installed"})
        return
    from rerankrt.engines.build import build_engine
    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import spec_for
    from rerankrt.runtime.ort_backend import OrtBackend
    from rerankrt.runtime.trt_backend import TrtBackend

    spec = spec_for("ames")

    def half(feeds: dict) -> dict:
        return {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feeds.items()}

    with tempfile.TemporaryDirectory() as tmp:
        export_model("ames", out_dir=tmp)
        start = time.perf_counter()
        plan = build_engine(Path(tmp) / "ames.fp16.onnx")
        built = time.perf_counter() - start
        feeds = spec.feeds(PARITY[0][1], seed=9)
        with TrtBackend(plan) as engine, OrtBackend(Path(tmp) / "ames.onnx") as ort:
            worst = float(np.abs(engine.infer(half(feeds))["logits"].astype(np.float32)
                                 - ort.infer(feeds)["logits"]).max())
        rows.append({"check": "TensorRT engine vs ONNX Runtime", "ok": worst <= spec.fp16.atol,
                     "detail": f"ames fp16 engine built in {built:.0f} s, max |Δ| {worst:.2e}"})
        small = half(spec.feeds({"pairs": 8, "query_descriptors": 100, "db_descriptors": 20}, seed=10))
        large = half(spec.feeds({"pairs": 64, "query_descriptors": 600, "db_descriptors": 50}, seed=11))
        with TrtBackend(plan) as fresh:
            expected = [fresh.infer(f)["logits"] for f in (small, large)]
        with TrtBackend(plan, cuda_graphs=True) as graphs:
            got = [graphs.infer(f)["logits"] for f in (small, large, small, large)]
        # a replay reading a freed or stale buffer gives another input's logits, far beyond fp16 rounding
        worst = max(float(np.abs(g.astype(np.float32) - expected[i % 2]).max()) for i, g in enumerate(got))
        rows.append({"check": "TensorRT CUDA graph replay after a larger shape", "ok": worst <= spec.fp16.atol,
                     "detail": f"8×100×20, 64×600×50, then both again vs plain runs: max |Δ| {worst:.2e}"})
        int8(rows, Path(tmp), feeds)


def int8(rows: list, folder: Path, feeds: dict) -> None:
    """AMES's INT8 graph as a strongly typed TensorRT engine, ranked against ONNX Runtime's INT8 graph."""
    from rerankrt.bench.synth import synthesize
    from rerankrt.engines.build import build_engine
    from rerankrt.export.onnx_export import export_model
    from rerankrt.export.quantize import agreement
    from rerankrt.runtime.ort_backend import OrtBackend
    from rerankrt.runtime.trt_backend import TrtBackend

    data = synthesize(folder / "synth")
    export_model("ames", out_dir=folder, precision="int8", calibration=data)
    start = time.perf_counter()
    plan = build_engine(folder / "ames.int8.onnx")
    built = time.perf_counter() - start
    with TrtBackend(plan) as engine, OrtBackend(folder / "ames.int8.onnx") as ort:
        a = engine.infer(feeds)["logits"].astype(np.float64)
        b = ort.infer(feeds)["logits"].astype(np.float64)
    agreed = agreement([b], [a])
    rows.append({"check": "TensorRT INT8 engine vs ONNX Runtime INT8", "ok": agreed.ok,
                 "detail": f"ames int8 engine built in {built:.0f} s: {agreed.text()} (100 pairs)"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    device = environment.cuda_device()
    if device is None:
        print("gpu_check: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2
    rows: list[dict] = []
    for step in (parity, round_trip, lambda r: latency(r, args.repeat), tensorrt):
        try:
            step(rows)
        except Exception as e:  # report and go on: one failing step must not hide the others
            rows.append({"check": getattr(step, "__name__", "step"), "ok": False, "detail": f"{type(e).__name__}: {e}"})
    width = max(len(r["check"]) for r in rows)
    print(f"{device['name']} (compute capability {device['compute_capability']})")
    for r in rows:
        status = "SKIP" if r["ok"] is None else "PASS" if r["ok"] else "FAIL"
        print(f"{r['check']:<{width}}  {status}  {r['detail']}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(
        {"environment": environment.describe(), "results": rows}, indent=2) + "\n")
    return 1 if any(r["ok"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
