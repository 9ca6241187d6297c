"""`NAME.ort.onnx`: an exported FP32 graph fused for ONNX Runtime, beside the standard one TensorRT parses.

ONNX Runtime's own transformer optimizer (`onnxruntime.transformers.optimizer`) matches none of the dynamo
exporter's graphs (DESIGN.md: 0 attention fusions in AMES, its symbolic shape inference fails). The
onnxscript rewriter's ONNX Runtime fusions (`onnxscript.rewriter.ort_fusions.optimize_for_ort`) are written
for the dynamo exporter's patterns and do match: every scaled dot-product attention of AMES's blocks and
LOCORE's bands becomes one `MultiHeadAttention` (the masked softmax, the head transposes and the score
tensors fused away), residual additions with LayerNorm become `SkipLayerNormalization`, scaled and
transposed products `FusedMatMul`. The result is exact to rounding (the ladder checks it as it checks every
graph). A model where nothing fuses (RAML, the extractor's convolutions: ONNX Runtime's load-time fusions
already cover them) gets no fused graph.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

from rerankrt.core.optional import require

#: what wrote the fused graphs (recorded in the sidecar)
TOOL = "onnxscript.rewriter.ort_fusions.optimize_for_ort"


def fuse(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, int]:
    """Write `src` fused for ONNX Runtime to `dst`; returns {fusion: count} of those that applied (empty:
    nothing fused, and nothing written)."""
    require("onnxscript", "export", "the graph fused for ONNX Runtime")
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.load(str(src))
    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model, counts = optimize_for_ort(model)
    finally:
        quiet.setLevel(level)
    applied = {name: int(n) for name, n in counts.items() if n}
    if applied:
        ir.save(model, str(Path(dst)))
    return applied
