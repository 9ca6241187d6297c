"""AMES's attention alone: ONNX Runtime's `MultiHeadAttention` against the same attention as separate
nodes and against eager torch's SDPA, on one query block (the evidence that its 64-wide heads, not a
missing fusion, hold the fused graphs below the GEMM roof; docs/performance.md).

`python -m rerankrt.bench.attention [--pairs 100] [--repeat 7] [--out FILE.json [--force]]` times, interleaved
(A, B, A, B …) after one warm-up each: `MultiHeadAttention` with the padding bias AMES feeds it and without
a mask (ONNX Runtime's CPU flash path), q·kᵀ, softmax and p·v as three graphs, and torch's SDPA with the
bias where torch is installed; it prints the medians and GFLOP/s. The shape defaults to AMES's released
query block: heads and width from `AmesConfig`, the query's descriptors as rows, [mtc ; query] as keys.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping

import numpy as np

from rerankrt.core import environment
from rerankrt.core.atomic import check_outputs, write_json
from rerankrt.core.flags import in_flags


def shape(pairs: int) -> dict[str, int]:
    """The query block of released AMES at `pairs` pairs."""
    from rerankrt.models.cards.ames import AmesConfig

    cfg = AmesConfig()
    return {"pairs": pairs, "heads": cfg.num_heads, "rows": cfg.query_descriptors,
            "keys": 1 + cfg.query_descriptors, "head_dim": cfg.model_dim // cfg.num_heads}


def _session(nodes, inputs: Mapping[str, tuple[int, ...]]):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from rerankrt.runtime.ort_backend import session_options

    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                  for n, s in inputs.items()],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])


def cases(sizes: dict[str, int], rng: np.random.Generator) -> tuple[dict, dict]:
    """({name: (run, GFLOP)}, inputs): the ways of computing softmax(q·kᵀ + bias)·v on one block (`run()` →
    its output; the MultiHeadAttention cases in [P, S, H·D], the rest per head) and their inputs per head
    (q, k, v, bias [P,1,S,L], and the scores the separate softmax and p·v take). `sizes` as `shape` gives."""
    from onnx import helper

    p, h, s, n, d = (sizes[k] for k in ("pairs", "heads", "rows", "keys", "head_dim"))

    def f(*dims: int) -> np.ndarray:
        return rng.standard_normal(dims).astype(np.float32)

    q, k, v = f(p, s, h * d), f(p, n, h * d), f(p, n, h * d)
    bias = np.zeros((p, 1, s, n), np.float32)
    bias[..., -n // 10:] = np.finfo(np.float32).min  # AMES's padding bias on a tenth of the keys
    heads = {name: x.reshape(p, -1, h, d).transpose(0, 2, 1, 3).copy() for name, x in (("q", q), ("k", k), ("v", v))}
    scores = f(p, h, s, n)
    mha = {"q": (p, s, h * d), "k": (p, n, h * d), "v": (p, n, h * d)}
    biased = _session([helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "bias"], ["out"],
                                        domain="com.microsoft", num_heads=h, scale=1.0)], {**mha, "bias": bias.shape})
    unmasked = _session([helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["out"], domain="com.microsoft",
                                          num_heads=h, scale=1.0)], mha)
    qk = _session([helper.make_node("MatMul", ["q", "kt"], ["out"])], {"q": (p, h, s, d), "kt": (p, h, d, n)})
    softmax = _session([helper.make_node("Softmax", ["x"], ["out"], axis=-1)], {"x": scores.shape})
    pv = _session([helper.make_node("MatMul", ["x", "v"], ["out"])], {"x": scores.shape, "v": (p, h, n, d)})
    kt = heads["k"].transpose(0, 1, 3, 2).copy()
    product = 2 * p * h * s * n * d / 1e9
    out = {
        "MultiHeadAttention, padding bias": (lambda: biased.run(None, {"q": q, "k": k, "v": v, "bias": bias})[0],
                                             2 * product),
        "MultiHeadAttention, no mask": (lambda: unmasked.run(None, {"q": q, "k": k, "v": v})[0], 2 * product),
        "q·kᵀ (MatMul)": (lambda: qk.run(None, {"q": heads["q"], "kt": kt})[0], product),
        "softmax (Softmax)": (lambda: softmax.run(None, {"x": scores})[0], 0.0),
        "p·v (MatMul)": (lambda: pv.run(None, {"x": scores, "v": heads["v"]})[0], product),
    }
    inputs = {**heads, "bias": bias, "scores": scores}
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return out, inputs
    tq, tk, tv = (torch.from_numpy(heads[n]) for n in ("q", "k", "v"))
    tb = torch.from_numpy(bias)

    def sdpa() -> np.ndarray:
        with torch.no_grad():
            return F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tb, scale=1.0).numpy()

    out["torch SDPA, padding bias"] = (sdpa, 2 * product)
    return out, inputs


def measure(sizes: dict[str, int], repeat: int, seed: int = 0) -> dict:
    runs, _ = cases(sizes, np.random.default_rng(seed))
    for run, _ in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, (run, _) in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(1e3 * (time.perf_counter() - start))
    medians = {name: float(np.median(t)) for name, t in times.items()}
    return {"shape": sizes, "repeat": repeat, "environment": environment.describe(),
            "median_ms": {name: round(ms, 1) for name, ms in medians.items()},
            "gflops_per_s": {name: round(runs[name][1] / ms * 1e3, 1) for name, ms in medians.items() if runs[name][1]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rerankrt.bench.attention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", help="write the medians as JSON")
    parser.add_argument("--force", action="store_true", help="replace an earlier --out")
    args = parser.parse_args(argv)
    if args.out:
        try:  # before any work: a measured file is not replaced by accident
            check_outputs([args.out], force=args.force)
        except FileExistsError as e:
            parser.error(in_flags(e, parser))
    result = measure(shape(args.pairs), args.repeat)
    for name, ms in result["median_ms"].items():
        rate = result["gflops_per_s"].get(name)
        print(f"{name:34s} {ms:9.1f} ms" + (f"  {rate:6.1f} GFLOP/s" if rate else ""))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
