"""`rerankrt export`: a registered model → `NAME.onnx` (FP32), `NAME.fp16.onnx` (strongly typed FP16),
`NAME.int8.onnx` (explicitly quantized, `export.quantize`), their forms fused for ONNX Runtime
`NAME[.int8].ort.onnx` (`export.ort_fusion`) and the `NAME.json` sidecar.

The exporter is torch's dynamo exporter (`dynamo=True`, `dynamic_shapes` from the spec, weights inside
the file). The FP16 graph is exported from a half-precision copy of the model whose FP32 islands
(LayerNorm, masked softmax, L2 normalisation, GeM) are written in the modules themselves, so every
floating tensor is FP16 except those islands: no converter pass, nothing patched afterwards.

I/O dtype policy: the FP32 graph takes and returns float32; the FP16 graph takes and returns float16
for every floating input and output. Masks are bool in both. There are no int64 graph inputs.

Files are written all-or-nothing (`core.atomic`): every file goes to a temporary name in the output
folder first and is renamed into place only when all of them were written.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from rerankrt.core import environment
from rerankrt.core.atomic import atomic_outputs
from rerankrt.core.errors import InputError, OutputPathError
from rerankrt.core.optional import require
from rerankrt.export import ort_fusion
from rerankrt.models import ExportSpec, Profile, describe, get_info, spec_for
from rerankrt.runtime.artifacts import Artifacts
from rerankrt.runtime.naming import PRECISIONS, onnx_name
from rerankrt.runtime.sidecar import FORMAT as SIDECAR_FORMAT
from rerankrt.runtime.sidecar import checkpoint_record

DEFAULT_OPSET = 20
#: TensorRT 10's ONNX parser reads opsets 9–20; 17 is the first with LayerNormalization.
OPSETS = range(17, 21)
#: opset 23 emits ONNX `Attention`, which ONNX Runtime's CPU kernel runs wrongly with padding masks.
OPSET_ATTENTION = 23
IO_DTYPE_POLICY = ("FP32 and INT8 graphs: float32 in and out (the INT8 graph quantizes inside). FP16 graph: "
                   "float16 for every floating input and output, FP32 islands inside. Masks are bool (True = "
                   "padding) in all; no int64 inputs.")


def check_opset(opset: int) -> None:
    if opset == OPSET_ATTENTION:
        warnings.warn(
            "opset 23 exports attention as ONNX Attention, which ONNX Runtime 1.31/1.32 CPU runs wrongly with a "
            "key-padding mask, and TensorRT 10's parser does not read opset 23; opset 20 is the default",
            stacklevel=3,
        )
        return
    if opset not in OPSETS:
        raise ValueError(f"opset: expected {OPSETS.start}–{OPSETS.stop - 1} (or 23), got {opset}")


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out}: is a file, expected a folder", param="out")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputPathError(f"{out}: the folder is not writable", param="out")
    return out


def parse_profile(text: str) -> tuple[str, Profile]:
    """`NAME:min,opt,max` → (NAME, Profile)."""
    try:
        dim, sizes = text.split(":")
        lo, opt, hi = (int(s) for s in sizes.split(","))
    except ValueError:
        raise ValueError(f"profile {text!r}: expected NAME:min,opt,max, e.g. pairs:1,100,400") from None
    return dim, Profile(lo, opt, hi)


def _torch_inputs(spec: ExportSpec, feeds: dict, half: bool) -> tuple:
    import torch

    tensors = []
    for t in spec.inputs:
        x = torch.from_numpy(feeds[t.name])
        tensors.append(x.half() if half and t.dtype == "float" else x)
    return tuple(tensors)


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter prints its progress and warns per op; rerankrt reports its own progress."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model, spec: ExportSpec, path: Path, precision: str, opset: int) -> None:
    """Trace `model` (FP32, eval mode) at the spec's dummy shape and save one graph to `path`."""
    import torch

    require("onnxscript", "export", "torch's ONNX exporter")

    half = precision == "fp16"
    module = copy.deepcopy(model).half() if half else model
    args = _torch_inputs(spec, spec.feeds(spec.trace), half)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            dynamic_shapes=spec.dims(),
            opset_version=opset,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            optimize=True,
        )
        if program is None:
            raise RuntimeError(f"{spec.model}: torch.onnx.export returned no program")
        program.save(str(path), external_data=False)


def sidecar(spec: ExportSpec, config, checkpoint: Path | None, precisions: list[str], opset: int,
            parts: dict | None = None) -> dict:
    return {
        "format": SIDECAR_FORMAT,
        **describe(spec, config, precisions),
        "checkpoint": checkpoint_record(checkpoint, parts),
        "files": {p: onnx_name(spec.model, p) for p in precisions},
        "fused": {},
        "precisions": precisions,
        "opset": opset,
        "io_dtype_policy": IO_DTYPE_POLICY,
        "versions": {k: environment.package_version(k) for k in ("rerankrt", "torch", "onnx", "onnxruntime")},
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def export_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "exported",
    precision: str = "both",
    opset: int = DEFAULT_OPSET,
    profiles: dict[str, Profile] | None = None,
    log: Callable[[str], None] = lambda message: None,
    model=None,
    calibration: str | os.PathLike | None = None,
    calibration_method: str = "minmax",
    **config,
) -> Path:
    """Export registered model `name` and write its sidecar; returns the sidecar's path.

    `precision`: "fp32", "fp16", "both" (the two) or "int8": the FP32 graph (exported here unless an
    earlier export of the same graphs left it) quantized on the dataset folder `calibration`
    (`export.quantize`), written only where it keeps the FP32 graph's ranking. Every FP32 and INT8 graph
    where a fusion applies also gets its form fused for ONNX Runtime (`export.ort_fusion`).
    `config` overrides the released configuration (as `load_model`), and names the files of parts released
    on their own (the extractor's `detector=`); `profiles` overrides the spec's default TensorRT
    optimisation profiles by dimension name. `model`: the model already loaded from `checkpoint` with
    `config` (the CLI validates it next and loads it once).
    """
    parts = {k: config.pop(k) for k in list(config) if k in get_info(name).parts}
    precisions = ["fp32", "fp16"] if precision == "both" else [precision]
    if any(p not in PRECISIONS for p in precisions):
        raise ValueError(f"precision: expected fp32, fp16, int8 or both, got {precision!r}")
    if ("int8" in precisions) != (calibration is not None):
        raise (InputError("int8 needs `calibration` (a dataset folder in the official layout)", param="precision")
               if calibration is None else InputError("only `precision` int8 is calibrated", param="calibration"))
    check_opset(opset)
    out = prepare_out_dir(out_dir)
    if model is None:
        from rerankrt.models import load_model

        model = load_model(name, checkpoint, **parts, **config)
    spec = spec_for(name, model.config)
    if profiles:
        spec = spec.with_profiles(profiles)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    folder = Artifacts(out)
    earlier = _kept(folder, sidecar(spec, model.config, ckpt, precisions, opset, parts))
    kept = [p for p in earlier.get("files", {}) if p not in precisions]
    exported = [p for p in precisions if p != "int8"]
    if "int8" in precisions and "fp32" not in kept:
        exported = ["fp32", *exported]  # the graph it quantizes
    listed = [p for p in PRECISIONS if p in exported + kept + precisions]
    meta = sidecar(spec, model.config, ckpt, listed, opset, parts)
    meta["fused"] = {p: e for p, e in earlier.get("fused", {}).items() if p in kept}
    if "quantization" in earlier and "int8" in kept:
        meta["quantization"] = earlier["quantization"]
    if kept:  # the other precisions' graphs stay, and the sidecar lists them
        log(f"keeping {', '.join(str(folder.onnx(name, p)) for p in kept)} (same model, configuration, profiles)")
    written = [*exported, *(["int8"] if "int8" in precisions else [])]
    graphs = {p: folder.onnx(name, p) for p in written}
    fused = {p: folder.root / onnx_name(name, p, fused=True) for p in written if p in ("fp32", "int8")}
    targets = [*graphs.values(), *fused.values(), folder.sidecar(name)]
    with atomic_outputs(targets) as temps, tempfile.TemporaryDirectory(dir=out, prefix=f".{name}.") as work:
        staged = dict(zip([*graphs, *(f"{p}-fused" for p in fused)], temps[:-1], strict=True))
        for p in exported:
            log(f"exporting {name} {p} (opset {opset}) → {graphs[p]}")
            export_onnx(model, spec, staged[p], p, opset)
        if "int8" in precisions:
            from rerankrt.export.quantize import quantize, with_int8

            scratch = Path(work)  # the FP32 graph and a sidecar that lists it, where a backend can open it
            fp32 = scratch / onnx_name(name, "fp32")
            shutil.copy(staged["fp32"] if "fp32" in exported else folder.onnx(name, "fp32"), fp32)
            (scratch / f"{name}.json").write_text(json.dumps(meta))
            log(f"quantizing {name} to INT8, calibrated on {calibration} → {graphs['int8']}")
            assert calibration is not None
            meta["quantization"] = quantize(fp32, calibration, staged["int8"], calibration_method, log=log,
                                            fused_out=staged["int8-fused"])
            meta = with_int8(meta, onnx_name(name, "int8"))
            if "fused" in meta["quantization"]:  # fused, and its agreement measured, by the quantizer
                meta["fused"]["int8"] = {"file": fused["int8"].name, "tool": ort_fusion.TOOL,
                                         "fusions": meta["quantization"]["fused"]["fusions"]}
        for p, target in fused.items():
            if p == "int8":
                continue
            counts = ort_fusion.fuse(staged[p], staged[f"{p}-fused"])
            if counts:
                meta["fused"][p] = {"file": target.name, "tool": ort_fusion.TOOL, "fusions": counts}
                log(f"fused {name} {p} for ONNX Runtime ({', '.join(f'{k} {v}' for k, v in counts.items())}) → "
                    f"{target}")
        temps[-1].write_text(json.dumps(meta, indent=2) + "\n")
        unfused = [t for p, t in fused.items() if p not in meta["fused"]]
    for target in unfused:  # nothing fused: no file (an earlier export's would be stale)
        target.unlink(missing_ok=True)
    log(f"wrote {', '.join(str(t) for t in targets if t not in unfused)}")
    return targets[-1]


def _kept(folder: Artifacts, meta: dict) -> dict:
    """The sidecar of an earlier export of the same graphs (model, configuration, checkpoint, profiles,
    opset), its `files` and `fused` narrowed to those still there: exporting another precision adds to
    them instead of dropping them; {} where there is none."""
    from rerankrt.core.errors import ModelFileError
    from rerankrt.runtime.sidecar import read_json_sidecar

    path = folder.sidecar(meta["model"])
    if not path.is_file():
        return {}
    try:
        old = read_json_sidecar(path, path, SIDECAR_FORMAT, "rerankrt export")
    except ModelFileError:
        return {}
    same = ("model", "config", "checkpoint", "profiles", "opset")
    if any(json.dumps(old.get(k), sort_keys=True) != json.dumps(meta[k], sort_keys=True) for k in same):
        return {}
    files = {p: f for p, f in old.get("files", {}).items() if (folder.root / f).is_file()}
    fused = {p: e for p, e in old.get("fused", {}).items() if p in files and (folder.root / e["file"]).is_file()}
    return {**old, "files": files, "fused": fused}
