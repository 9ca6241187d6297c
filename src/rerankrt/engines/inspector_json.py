"""Reading TensorRT's engine-inspector JSON of both schemas (no TensorRT needed).

TensorRT 10.x lists a layer's tensors with one "Format/Datatype" string and the engine's I/O under
"Bindings"; 11.x renamed "Bindings" to "I/O Tensors" and split the field into "Format" and "DataType"
(TensorRT 10.x → 11.x migration guide, "IEngineInspector JSON Output"). With ProfilingVerbosity below
DETAILED a layer is just its name. This module turns either into the same rows.
"""

from __future__ import annotations

import json


def _tensor(t: dict) -> str:
    if "Format/Datatype" in t:  # 10.x
        kind = t["Format/Datatype"]
    else:  # 11.x
        kind = " ".join(str(t[k]) for k in ("DataType", "Format") if k in t)
    return f"{t.get('Name', '?')} {t.get('Dimensions', '')} {kind}".strip()


def layer_rows(info: str | dict) -> list[dict]:
    """[{name, type, inputs, outputs, tactic}] from `get_engine_information(JSON)` of 10.x or 11.x."""
    data = json.loads(info) if isinstance(info, str) else info
    rows = []
    for layer in data.get("Layers", []):
        if isinstance(layer, str):  # ProfilingVerbosity LAYER_NAMES_ONLY
            rows.append({"name": layer, "type": "", "inputs": [], "outputs": [], "tactic": ""})
            continue
        rows.append({
            "name": layer.get("Name", "?"),
            "type": layer.get("LayerType", ""),
            "inputs": [_tensor(t) for t in layer.get("Inputs", [])],
            "outputs": [_tensor(t) for t in layer.get("Outputs", [])],
            "tactic": str(layer.get("TacticName", layer.get("TacticValue", ""))),
        })
    return rows


def io_names(info: str | dict) -> list[str]:
    """The engine's I/O tensor names from the JSON ("Bindings" on 10.x, "I/O Tensors" on 11.x)."""
    data = json.loads(info) if isinstance(info, str) else info
    return list(data.get("I/O Tensors", data.get("Bindings", [])))
