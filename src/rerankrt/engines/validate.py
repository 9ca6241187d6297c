"""`rerankrt validate NAME.plan`: a TensorRT engine against ONNX Runtime on the FP32 graph it came from,
at the spec's validation shapes, within the engine precision's tolerance, through Polygraphy's TrtRunner
and the same comparison as the ONNX validation ladder (`rerankrt.export.validate`).

`import tensorrt` sits at the top for the type checker; the CLI imports this module lazily.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import tensorrt

from rerankrt.core import environment
from rerankrt.core.errors import ModelFileError
from rerankrt.export.validate import (
    Report,
    cast_feeds,
    compare,
    ort_runner,
    ort_session,
    shape_text,
    spec_from_sidecar,
)
from rerankrt.runtime.plan import check_compatible, read_plan_sidecar


def validate_engine(plan_path: str | Path) -> Report:
    """The engine against ONNX Runtime FP32 (needs TensorRT and the GPU the engine was built for)."""
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    path = Path(plan_path)
    meta = read_plan_sidecar(path)
    check_compatible(path, meta, tensorrt.__version__, environment.cuda_device())
    graph_meta = meta["onnx"]["sidecar"]
    fp32_graph = path.with_name(graph_meta["files"]["fp32"])
    if not fp32_graph.is_file():
        raise ModelFileError(f"{path}: the FP32 graph {fp32_graph} to compare against is missing")
    spec, _ = spec_from_sidecar(graph_meta)
    precision = meta["precision"]

    class Runner(TrtRunner):
        def infer_impl(self, feed_dict, copy_outputs_to_host=None, return_raw_buffers=None):
            out = super().infer_impl(cast_feeds(feed_dict, precision), copy_outputs_to_host=True)
            return OrderedDict((k, np.asarray(v, dtype=np.float32)) for k, v in out.items())

    report = Report(path)
    tol = spec.fp16 if precision == "fp16" else spec.fp32
    feeds = [spec.feeds(s, seed=i) for i, s in enumerate(spec.checks)]
    ok, detail = compare([ort_runner(ort_session(fp32_graph), "fp32"), Runner(EngineFromBytes(path.read_bytes()))],
                         feeds, tol, spec.error_stat)
    report.add(f"TensorRT {meta['precision']} engine vs ONNX Runtime FP32", ok,
               f"{detail} at " + "; ".join(shape_text(s) for s in spec.checks))
    return report
