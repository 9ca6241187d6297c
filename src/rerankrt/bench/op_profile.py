"""Where an ONNX Runtime graph spends its time, by operator type: ONNX Runtime's own per-node profile
(`SessionOptions.enable_profiling`) of one query's calls, summed by the operator each node ran as after
the load-time fusions (a fused graph's MultiHeadAttention, an INT8 graph's MatMulIntegerToFloat).

`rerankrt bench` profiles every ONNX Runtime case once, after its timed rounds, in a session of its own
(profiling slows each node a little, so these are shares, not the case's latency), and reports the
heaviest operator types. `python -m rerankrt.bench.op_profile GRAPH DIM=SIZE …` profiles one graph at the
spec's feeds of that shape.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

#: operator types reported per case, the heaviest first
TOP = 6
#: what counts as the dense products of the roofline (the rest is the overhead a fusion can remove)
PRODUCTS = {"MatMul", "Gemm", "FusedMatMul", "MatMulIntegerToFloat", "QLinearMatMul", "Conv", "FusedConv",
            "MultiHeadAttention", "Attention", "FusedGemm", "QLinearConv", "ConvInteger", "MatMulInteger"}


def profile(graph: str | os.PathLike, calls: list[dict], runs: int = 1) -> dict[str, float]:
    """{operator type: ms} over `runs` passes of `calls` (feed dicts of one query) through `graph`, heaviest
    first."""
    import onnxruntime as ort

    from rerankrt.runtime.ort_backend import session_options

    options = session_options()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            for feeds in calls:
                session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return dict(by_op.most_common())


def shares(by_op: dict[str, float], top: int = TOP) -> dict:
    """{"ops": [[op, share of the graph's node time], …] the `top` heaviest, "products": the share of dense
    products, "total_ms"}."""
    total = sum(by_op.values()) or 1.0
    return {"ops": [[op, round(ms / total, 3)] for op, ms in list(by_op.items())[:top]],
            "products": round(sum(ms for op, ms in by_op.items() if op in PRODUCTS) / total, 3),
            "total_ms": round(total, 1)}


def main(argv: list[str] | None = None) -> int:
    from rerankrt.models import get_info, spec_for
    from rerankrt.runtime.feeds import DTYPES
    from rerankrt.runtime.sidecar import precision_of, read_sidecar

    parser = argparse.ArgumentParser(prog="python -m rerankrt.bench.op_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("graph")
    parser.add_argument("shape", nargs="*", metavar="DIM=SIZE", help="sizes of the symbolic dimensions")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    meta = read_sidecar(args.graph)
    spec = spec_for(meta["model"], type(get_info(meta["model"]).config)(**meta["config"]))
    shape = {**{d: p["opt"] for d, p in meta["profiles"].items()},
             **{k: int(v) for k, v in (s.split("=", 1) for s in args.shape)}}
    precision = precision_of(args.graph, meta)
    dtypes = {i["name"]: DTYPES[i["dtype"][precision]] for i in meta["inputs"]}
    feeds: dict = {k: v.astype(dtypes[k]) for k, v in spec.feeds(shape, one_query=True).items()}
    by_op = profile(args.graph, [feeds], args.runs)  # one query at the given shape
    total = sum(by_op.values())
    for op, ms in by_op.items():
        print(f"{op:28s} {ms:10.1f} ms {100 * ms / total:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
