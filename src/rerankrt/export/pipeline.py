"""`export_and_validate`: every graph a model's loops use, exported and put through the validation ladder —
what `rerankrt export` runs, one call for the CLI and for scripts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rerankrt.core.errors import InputError
from rerankrt.export.onnx_export import DEFAULT_OPSET, export_model
from rerankrt.export.validate import Report, validate
from rerankrt.models import MODELS, Profile, graphs_of, names, spec_for
from rerankrt.runtime.naming import onnx_name


def planned_graphs(name: str, parts: list[str] | None = None, precision: str = "both",
                   profiles: dict[str, Profile] | None = None,
                   calibration: str | os.PathLike | None = None) -> list[str]:
    """The registered graphs an export of `name` writes (`parts`: some of whole, encoder, scorer), after the
    checks that need no work: INT8 without calibration data (or calibration data without INT8), INT8 of a
    model no loop drives, a profile no graph has."""
    if (precision == "int8") != (calibration is not None):
        raise (InputError("int8 needs `calibration` (a dataset folder in the official layout)", param="precision")
               if calibration is None else InputError("only `precision` int8 is calibrated", param="calibration"))
    if precision == "int8" and MODELS[name].loop is None:
        raise InputError(f"int8: INT8 graphs are calibrated through a re-ranking loop; {name} has none "
                         f"(INT8 takes {', '.join(names(loop=True))})", param="precision")
    graphs = list(graphs_of(name, parts).values())
    dims = {g: set(spec_for(g).profiles) for g in graphs}
    stray = sorted(d for d in profiles or {} if not any(d in own for own in dims.values()))
    if stray:
        raise InputError(f"no graph of {', '.join(graphs)} has a dimension {', '.join(stray)}; known: "
                         f"{', '.join(sorted(set().union(*dims.values())))}", param="profile")
    return graphs


def outputs(graphs: list[str], out_dir: str | os.PathLike, precision: str) -> list[Path]:
    """The graph files an export may write (the fused forms where a fusion applies)."""
    precisions = ["fp32", "fp16"] if precision == "both" else [precision]
    return [Path(out_dir) / onnx_name(g, p, fused) for g in graphs for p in precisions
            for fused in ((False, True) if p != "fp16" else (False,))]


def export_and_validate(name: str, checkpoint: str | os.PathLike | None = None,
                        out_dir: str | os.PathLike = "exported", precision: str = "both", opset: int = DEFAULT_OPSET,
                        profiles: dict[str, Profile] | None = None, parts: list[str] | None = None,
                        calibration: str | os.PathLike | None = None, calibration_method: str = "minmax",
                        log: Callable[[str], None] = lambda message: None, **part_files) -> list[Report]:
    """Export `name` and every graph its loops use (or `parts`), each validated by the ladder; returns the
    reports. `profiles` apply to the graphs that have the dimension; `part_files` are the files of parts
    released on their own (the extractor's detector). At "int8", a store's encoder (no loop to calibrate
    through) is exported FP32 beside the INT8 graphs."""
    from rerankrt.models import load_model

    reports = []
    # the encoder and scorer of a store load one checkpoint, their halves of it
    for graph in planned_graphs(name, parts, precision, profiles, calibration):
        model = load_model(graph, checkpoint, **part_files)
        own = {d: p for d, p in (profiles or {}).items() if d in spec_for(graph).profiles}
        this, data = precision, calibration
        if precision == "int8" and MODELS[graph].loop is None:
            log(f"{graph}: no re-ranking loop to calibrate through; it runs FP32 beside the INT8 graphs")
            this, data = "fp32", None
        meta = export_model(graph, checkpoint, out_dir, this, opset, own, log=log, model=model, calibration=data,
                            calibration_method=calibration_method, **part_files)
        first = meta.with_name(onnx_name(graph, "fp16" if this == "fp16" else "fp32"))
        reports.append(validate(first, Path(checkpoint) if checkpoint else None, model=model))
    return reports
