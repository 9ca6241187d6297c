"""ONNX Runtime's session options, measured side by side: the evidence behind `runtime.ort_backend.
session_options` (the one setting rerankrt runs ONNX Runtime with).

`python -m rerankrt.bench.ort_options GRAPH [DIM=SIZE …] [--repeat 5] [--out FILE.json]` times one query of
the spec's feeds through a session per variant, the variants interleaved (A, B, A, B …), and prints the
medians: intra-op threads (the physical cores, one, ONNX Runtime's default), the inter-op pool and its
parallel executor, spinning, the memory pattern.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from rerankrt.core import environment
from rerankrt.core.atomic import write_json


def variants() -> dict[str, dict]:
    """{name: the changes from rerankrt's setting} (the first is rerankrt's own)."""
    from rerankrt.runtime.ort_backend import physical_cores

    return {"rerankrt": {}, "onnxruntime defaults": {"defaults": True}, "intra-op 1": {"intra_op_num_threads": 1},
            f"intra-op {2 * physical_cores()} (2 × cores)": {"intra_op_num_threads": 2 * physical_cores()},
            "parallel executor, inter-op 2": {"parallel": True}, "no spinning": {"spin": "0"},
            "no memory pattern": {"enable_mem_pattern": False}}


def session(graph: str, change: dict):
    import onnxruntime as ort

    from rerankrt.runtime.ort_backend import session_options

    options = ort.SessionOptions() if change.get("defaults") else session_options()
    for key, value in change.items():
        if key == "spin":
            options.add_session_config_entry("session.intra_op.allow_spinning", value)
        elif key == "parallel":
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
            options.inter_op_num_threads = 2
        elif key != "defaults":
            setattr(options, key, value)
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def measure(graph: str, shape: dict[str, int], repeat: int) -> dict:
    from rerankrt.models import get_info, spec_for
    from rerankrt.runtime.feeds import DTYPES
    from rerankrt.runtime.sidecar import precision_of, read_sidecar

    meta = read_sidecar(graph)
    spec = spec_for(meta["model"], type(get_info(meta["model"]).config)(**meta["config"]))
    sizes = {**{d: p["opt"] for d, p in meta["profiles"].items()}, **shape}
    precision = precision_of(graph, meta)
    dtypes = {i["name"]: DTYPES[i["dtype"][precision]] for i in meta["inputs"]}
    feeds: dict = {k: v.astype(dtypes[k]) for k, v in spec.feeds(sizes, one_query=True).items()}
    sessions = {name: session(graph, change) for name, change in variants().items()}
    for s in sessions.values():
        s.run(None, feeds)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeat):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds)
            times[name].append(1e3 * (time.perf_counter() - start))
    return {"graph": str(graph), "shape": sizes, "repeat": repeat, "environment": environment.describe(),
            "median_ms": {name: round(float(np.median(t)), 1) for name, t in times.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rerankrt.bench.ort_options", description=__doc__.split("\n\n")[0])
    parser.add_argument("graph")
    parser.add_argument("shape", nargs="*", metavar="DIM=SIZE")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", help="write the medians as JSON")
    args = parser.parse_args(argv)
    result = measure(args.graph, {k: int(v) for k, v in (s.split("=", 1) for s in args.shape)}, args.repeat)
    base = result["median_ms"]["rerankrt"]
    for name, ms in result["median_ms"].items():
        print(f"{name:34s} {ms:9.1f} ms  {ms / base:5.2f}× rerankrt's")
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
