"""`rerankrt export`, `validate`, `build` and `inspect`: graphs, their ladder, engines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rerankrt.cli.args import OutputArgs, log, part_files, report_command
from rerankrt.cli.paths import Flags
from rerankrt.core.flags import text_in_flags
from rerankrt.core.optional import require
from rerankrt.export.quantize import METHODS
from rerankrt.models import MODELS
from rerankrt.runtime.naming import PRECISIONS


def cmd_export(args: argparse.Namespace) -> int:
    from rerankrt.export.onnx_export import parse_profile
    from rerankrt.export.pipeline import export_and_validate, outputs, planned_graphs

    profiles = dict(parse_profile(p) for p in args.profile)
    require("polygraphy", "export", "the validation ladder after the export")
    files = part_files(args, args.name)
    parts = [p for p in args.parts.split(",") if p] if args.parts else None
    graphs = planned_graphs(args.name, parts, args.precision, profiles, args.calibration)
    OutputArgs.check(args, outputs(graphs, args.out, args.precision))
    reports = export_and_validate(args.name, args.checkpoint, args.out, args.precision, args.opset, profiles, parts,
                                  args.calibration, args.calibration_method, log=log, **files)
    for report in reports:
        print(report.table())
    return 0 if all(r.ok for r in reports) else 1


def cmd_validate(args: argparse.Namespace) -> int:
    if args.path.endswith(".plan"):
        require("tensorrt", "trt", "validating a TensorRT engine")
        from rerankrt.engines.validate import validate_engine

        report = validate_engine(args.path)
    else:
        from rerankrt.export.validate import validate

        report = validate(args.path, args.checkpoint)
    print(text_in_flags(report.table(), args.paths.parser))
    return 0 if report.ok else 1


def cmd_build(args: argparse.Namespace) -> int:
    from rerankrt.export.onnx_export import parse_profile
    from rerankrt.runtime.naming import plan_sidecar_path
    from rerankrt.runtime.sidecar import sidecar_path

    plan = Path(args.out) if args.out else Path(args.onnx).with_suffix(".plan")
    OutputArgs.check(args, [plan, plan_sidecar_path(plan)], [args.onnx, sidecar_path(args.onnx)])
    require("tensorrt", "trt", "building a TensorRT engine")
    from rerankrt.engines.build import build_engine

    profiles = {d: (p.min, p.opt, p.max) for d, p in (parse_profile(t) for t in args.profile)}
    build_engine(args.onnx, args.out, profiles, args.workspace, args.opt_level, args.timing_cache, log=log)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    require("tensorrt", "trt", "inspecting a TensorRT engine")
    from rerankrt.engines.inspect import inspect_engine

    report = inspect_engine(args.plan)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['plan']}: TensorRT {report['tensorrt']}, {report['sidecar']['precision']}")
    for t in report["io"]:
        print(f"  {t['mode']:<6} {t['name']:<16} {t['dtype']:<16} {t['shape']}  {' / '.join(t.get('profile', []))}")
    for layer in report["layers"]:
        print(f"  {layer['type']:<20} {layer['name']}  {layer['tactic']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model (and the encoder and scorer its store uses) to FP32, FP16 "
                                      "or INT8 ONNX with their sidecars and fused forms, then validate")
    f = Flags(p)
    p.add_argument("name", choices=list(MODELS), metavar="NAME", help=f"one of {', '.join(MODELS)}")
    f.input("--checkpoint", help="the official checkpoint (default: random weights)")
    f.input("--detector", help="dinov2-extractor: the AMES detector's checkpoint (dinov2_detector.pt)")
    OutputArgs("output folder (default: exported)", whole=False, default="exported",
               force="replace existing graphs of the same name").add(p, f)
    f.value("--parts", help="comma-separated from whole,encoder,scorer (default: every graph the model's loops use: "
                            "ames and ames-dist also export their store's encoder and scorer)")
    p.add_argument("--precision", choices=[*PRECISIONS, "both"], default="both",
                   help="both: fp32 and fp16; int8: the FP32 graph quantized on --calibration")
    f.input("--calibration", metavar="DATA", help="--precision int8: a dataset folder in the official layout whose "
                                                  "queries calibrate the quantization and check its ranking")
    p.add_argument("--calibration-method", choices=METHODS, default="minmax",
                   help="how an activation's INT8 range is set: minmax (its largest |x|) or percentile (99.99th)")
    p.add_argument("--opset", type=int, default=20, help="ONNX opset, 17–20 (default 20)")
    f.value("--profile", action="append", default=[], metavar="DIM:MIN,OPT,MAX",
            help="override a TensorRT optimisation profile, e.g. pairs:1,100,400 (repeatable; each graph takes "
                 "the dimensions it has)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("build", help="build a strongly typed TensorRT engine from an exported graph")
    f = Flags(p)
    f.input("onnx", help="DIR/NAME.fp16.onnx (or NAME.onnx, NAME.int8.onnx) with its sidecar DIR/NAME.json")
    OutputArgs("the plan (default: the graph's path with .plan)", force="replace an existing engine").add(p, f)
    f.value("--profile", action="append", default=[], metavar="DIM:MIN,OPT,MAX",
            help="override the sidecar's optimisation profile of a dimension (repeatable)")
    p.add_argument("--workspace", type=float, default=4.0, metavar="GB", help="workspace pool limit (default 4)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="0-5",
                   help="builder optimisation level (default 3)")
    f.input("--timing-cache", help="timing cache file, loaded when present and saved after the build")
    p.set_defaults(run=cmd_build)

    report_command(sub, "inspect", "a TensorRT engine's I/O and layers (TensorRT and the GPU it was built for)",
                   cmd_inspect, ("plan", "NAME.plan with its sidecar NAME.plan.json"))

    p = sub.add_parser("validate", help="the validation ladder of an exported graph, or an engine against ORT")
    f = Flags(p)
    f.input("path", help="DIR/NAME.onnx or DIR/NAME.fp16.onnx (with DIR/NAME.json beside it), or NAME.plan")
    f.input("--checkpoint", help="the checkpoint, when not at the path the sidecar records")
    p.set_defaults(run=cmd_validate)
