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

An INT8 graph's fused form also carries its activations as uint8 with zero point 128 (`uint8_activations`):
the same quantization grid as TensorRT's symmetric int8 (q_u8 = q_s8 + 128, saturating at the same values),
in the type ONNX Runtime's x86 integer products take. The int8 graph gives each product a Q/DQ pair of its
own, but ONNX Runtime's common-subexpression elimination merges the pairs of a shared activation (AMES's q
and kv projections, LOCORE's) into one Q feeding two DQs, its int8→uint8 pass skips a Q with several
consumers, and an int8 activation stays DequantizeLinear → float MatMul: 18 of AMES's 42 products and 28 of
LOCORE-small's 52 ran in float. With uint8 activations every product becomes `MatMulIntegerToFloat`.
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
#: the sidecar's name for the activations rewritten to uint8 (beside the fusions' counts)
UINT8 = "Uint8Activations"


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
    if rewritten := uint8_activations(model):
        applied[UINT8] = rewritten
    if applied:
        ir.save(model, str(Path(dst)))
    return applied


def uint8_activations(model) -> int:
    """Rewrite `model`'s (an `onnx_ir` model) activation quantizers with an int8 zero point 0 to uint8 with zero
    point 128, with the DequantizeLinear nodes they feed; returns how many. A quantizer that feeds anything
    but a DequantizeLinear with its own zero point, or has another zero point, is left as it is."""
    import numpy as np
    import onnx_ir as ir

    graph = model.graph
    zero = None
    rewritten = 0
    for node in graph:
        if node.op_type != "QuantizeLinear" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 3:
            continue
        point = node.inputs[2]
        value = point.const_value if point is not None else None
        out = node.outputs[0]
        if value is None or value.dtype != ir.DataType.INT8 or value.numpy().shape != () or value.numpy() != 0:
            continue
        if any(user.op_type != "DequantizeLinear" or len(user.inputs) < 3 or user.inputs[2] is not point
               for user, _ in out.uses()):
            continue
        if zero is None:
            zero = ir.Value(name=f"{point.name}_uint8", const_value=ir.tensor(np.array(128, np.uint8)))
            graph.register_initializer(zero)
        node.replace_input_with(2, zero)
        for user, _ in list(out.uses()):
            user.replace_input_with(2, zero)
        out.dtype = ir.DataType.UINT8
        rewritten += 1
        if not point.uses() and point.name in graph.initializers:
            graph.initializers.pop(point.name)
    return rewritten
