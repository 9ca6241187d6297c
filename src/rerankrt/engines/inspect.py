"""`rerankrt inspect NAME.plan`: the engine's I/O (names, modes, dtypes, profile shapes) from the engine
API and its layers from the engine inspector (both JSON schemas, `inspector_json`).

`import tensorrt` sits at the top for the type checker; the CLI imports this module lazily.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorrt as trt

from rerankrt.core import environment
from rerankrt.core.errors import ModelFileError, UnavailableError
from rerankrt.engines.inspector_json import layer_rows
from rerankrt.runtime.plan import check_compatible, read_plan_sidecar


def inspect_engine(plan_path: str | os.PathLike) -> dict:
    path = Path(plan_path)
    meta = read_plan_sidecar(path)
    check_compatible(path, meta, trt.__version__, environment.cuda_device())
    try:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    except TypeError as e:
        raise UnavailableError(f"TensorRT {trt.__version__} could not create a Runtime ({e})") from None
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ModelFileError(f"{path}: TensorRT could not deserialise the engine (truncated or corrupt?)")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        row: dict[str, object] = {"name": name, "mode": "input" if is_input else "output",
                                  "dtype": str(engine.get_tensor_dtype(name)),
                                  "shape": str(engine.get_tensor_shape(name))}
        if is_input:
            row["profile"] = [str(d) for d in engine.get_tensor_profile_shape(name, 0)]
        io.append(row)
    inspector = engine.create_engine_inspector()
    inspector.execution_context = engine.create_execution_context()
    layers = layer_rows(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return {"plan": str(path), "tensorrt": trt.__version__, "sidecar": meta, "io": io, "layers": layers}
