"""`rerankrt validate NAME.onnx`: the validation ladder of an exported model.

(a) onnx checker and strict shape inference; (b) ONNX Runtime FP32 vs PyTorch FP32 at the spec's
validation shapes; (c) the FP16 graph vs the FP32 graph; (d) a PyTorch `.half()` overflow check on
realistic padded inputs; (e) a TensorRT parser lint; (f) for re-rankers, the FP16-vs-FP32 ranking
agreement of one shortlist. The comparisons run through Polygraphy's `Comparator`, so a TensorRT
engine (`TrtRunner`, `rerankrt.engines.validate`) is compared against ONNX Runtime by the same code.

The ladder reads everything it needs from the sidecar `NAME.json`: the model, its configuration, the
checkpoint (path and sha256), profiles and tolerances. Each graph gets one ONNX Runtime session, and
`rerankrt export` hands over the model it has just exported instead of loading it again.

The other graphs of the sidecar are checked too: a graph fused for ONNX Runtime (`NAME[.int8].ort.onnx`)
passes the checker and the comparison of its standard graph (against PyTorch, or against the INT8 graph
it fuses) at the same tolerance, and is not linted for TensorRT (it holds ONNX Runtime's own operators);
the INT8 graph (g) holds Q/DQ pairs, runs on ONNX Runtime with finite outputs at the validation shapes,
and kept the FP32 graph's ranking when it was exported (its recorded agreement against the thresholds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from rerankrt.core.errors import ModelFileError
from rerankrt.core.optional import require
from rerankrt.models import ExportSpec, Profile, Tolerance, get_info, spec_for
from rerankrt.runtime.agreement import kendall_tau, top_overlap
from rerankrt.runtime.sidecar import read_sidecar, sha256

#: ops TensorRT's parser rejects or handles only in restricted forms that these models never need.
FORBIDDEN_OPS = {"NonZero", "Loop", "If", "Scan"}
SEQUENCE_PREFIX = "Sequence"


@dataclass
class Check:
    name: str
    status: str  #: "pass", "fail" or "skip"
    detail: str = ""


@dataclass
class Report:
    path: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def add(self, name: str, passed: bool | None, detail: str = "") -> None:
        self.checks.append(Check(name, "skip" if passed is None else "pass" if passed else "fail", detail))

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"validation of {self.path}", f"{'check':<{width}}  result  detail"]
        lines += [f"{c.name:<{width}}  {c.status.upper():<6}  {c.detail}" for c in self.checks]
        failed = sum(c.status == "fail" for c in self.checks)
        lines.append("all checks passed" if not failed else f"{failed} check(s) FAILED")
        return "\n".join(lines)


def load_onnx(path: Path):
    import onnx

    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError, onnx ValueError/OSError on a cut file
        raise ModelFileError(f"{path}: not a readable ONNX model (truncated or corrupt?): {e}") from None


def spec_from_sidecar(meta: dict) -> tuple[ExportSpec, object]:
    """The spec of the exported graphs: the model's spec in the recorded configuration and profiles."""
    info = get_info(meta["model"])
    try:
        config = type(info.config)(**meta["config"])
    except TypeError as e:
        raise ModelFileError(f"the sidecar's config does not fit {meta['model']} ({e}); export it again") from None
    spec = spec_for(meta["model"], config)
    return spec.with_profiles({d: Profile(**p) for d, p in meta["profiles"].items()}), config


# --- (e) TensorRT parser lint -------------------------------------------------------------------------

def trt_operator_matrix() -> dict:
    return json.loads(resources.files("rerankrt.export").joinpath("trt_onnx_ops.json").read_text())


def lint(model, spec: ExportSpec) -> list[str]:
    """Problems TensorRT's ONNX parser would have with `model`; empty when none."""
    import onnx

    matrix = trt_operator_matrix()
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    low, high = matrix["opset_range"]
    if opset is None or opset > high:
        problems.append(f"opset {opset}: TensorRT 10.x parses opsets {low}–{high}")
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    unsupported, forbidden = set(), set()
    for node in nodes:
        op = node.op_type
        if node.domain not in ("", "ai.onnx") or not matrix["ops"].get(op, {}).get("supported", False):
            unsupported.add(f"{node.domain + '::' if node.domain else ''}{op}")
        if op in FORBIDDEN_OPS or op.startswith(SEQUENCE_PREFIX):
            forbidden.add(op)
        if op == "ScatterND" and any(a.name == "reduction" and a.s not in (b"", b"none") for a in node.attribute):
            forbidden.add("ScatterND with reduction")
    if unsupported:
        problems.append(f"ops not in TensorRT's ONNX operator matrix: {', '.join(sorted(unsupported))}")
    if forbidden:
        problems.append(f"ops TensorRT parses badly or not at all: {', '.join(sorted(forbidden))}")
    symbolic = set(spec.profiles)
    inputs = {value.name for value in model.graph.input}
    for value in list(model.graph.input) + list(model.graph.output):
        t = value.type.tensor_type
        if t.elem_type == onnx.TensorProto.INT64 and value.name in inputs:
            problems.append(f"input {value.name}: int64 (TensorRT wants float/bool graph inputs)")
        for dim in t.shape.dim:
            if not dim.HasField("dim_param"):
                continue
            # an output may be sized by an expression of the inputs' dims, the extractor's
            # `((height//14))*((width//14))` tokens, the first stage's `Min(1000, images)` neighbours; every name
            # in it but a function's must be a profiled dim
            names = {dim.dim_param} if value.name in inputs else \
                set(re.findall(r"\b[A-Za-z_]\w*\b(?!\s*\()", dim.dim_param))
            if not names <= symbolic:
                problems.append(f"{value.name}: symbolic dim {dim.dim_param!r} is not one of {sorted(symbolic)}")
    return problems


# --- comparisons through Polygraphy ------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_polygraphy():
    from polygraphy.logger import G_LOGGER

    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        yield
    finally:
        G_LOGGER.module_severity = severity


def _torch_runner(model, spec: ExportSpec):
    """A Polygraphy runner over the PyTorch model on the CPU (Polygraphy's own PytRunner moves to CUDA). It
    keeps the outputs of each feed it ran (by the feed's bytes), so that the ladder compares a second graph
    with the same reference without running the model again."""
    import hashlib

    import torch
    from polygraphy.backend.base import BaseRunner

    class TorchRunner(BaseRunner):
        def __init__(self) -> None:
            super().__init__(name="torch-fp32", prefix="torch-runner")
            self.seen: dict[str, OrderedDict] = {}

        def activate_impl(self) -> None:
            pass

        def deactivate_impl(self) -> None:
            pass

        def get_input_metadata_impl(self):
            from polygraphy.common import TensorMetadata

            meta = TensorMetadata()
            for t in spec.inputs:
                meta.add(t.name, {"float": np.float32, "half": np.float16, "bool": np.bool_}[t.dtype], t.shape)
            return meta

        def infer_impl(self, feed_dict):
            key = hashlib.sha1()
            for t in spec.inputs:
                x = np.ascontiguousarray(feed_dict[t.name])
                key.update(f"{t.name}{x.dtype}{x.shape}".encode())
                key.update(memoryview(x).cast("B"))
            start = time.perf_counter()
            if key.hexdigest() not in self.seen:
                args = [torch.from_numpy(feed_dict[t.name]) for t in spec.inputs]
                with torch.no_grad():
                    out = outputs(model(*args))
                self.seen[key.hexdigest()] = OrderedDict((t.name, o.float().numpy())
                                                         for t, o in zip(spec.outputs, out, strict=True))
            self.inference_time = time.perf_counter() - start
            return OrderedDict((k, v.copy()) for k, v in self.seen[key.hexdigest()].items())

    return TorchRunner()


def ort_session(path: Path):
    """An ONNX Runtime CPU session of one graph."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def cast_feeds(feeds: dict, precision: str) -> dict:
    """Float feeds in the graph's input precision."""
    if precision != "fp16":
        return feeds
    return OrderedDict((k, v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in feeds.items())


def ort_runner(session, precision: str):
    """A Polygraphy runner over an ONNX Runtime session; float feeds are cast to the graph's precision."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    class Runner(OnnxrtRunner):
        def infer_impl(self, feed_dict):
            out = super().infer_impl(cast_feeds(feed_dict, precision))
            return OrderedDict((k, v.astype(np.float32)) for k, v in out.items())

    return Runner(session, name=f"onnxrt-{precision}")


def _overlap(first: list, second: list, name: str) -> float:
    """The least share, over every row of every feed, of the first runner's row of output `name` (gallery
    rows) that the second runner's row holds too."""
    shares = [len(np.intersect1d(r1, r2)) / max(len(r1), 1)
              for a, b in zip(first, second, strict=True)
              for r1, r2 in zip(a[name].reshape(-1, a[name].shape[-1]), b[name].reshape(-1, b[name].shape[-1]),
                                strict=True)]
    return min(shares, default=1.0)


def compare(runners: list, feeds: list[dict], tolerance: Tolerance, error_stat: str = "max",
            rank_outputs: tuple[str, ...] = ()) -> tuple[bool, str]:
    """Polygraphy Comparator over `feeds`: (within tolerance, what was measured). The error statistic is
    the largest |difference| or, for "mean", the largest mean |difference| (the share of flipped code
    bits); with a scaled tolerance each output's is reported as a fraction of its largest magnitude in the
    first runner's outputs, which also sets that output's `atol`. `rank_outputs` (gallery rows) are
    compared as sets per row instead: their least overlap must reach the tolerance's `overlap`."""
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    with _quiet_polygraphy():
        results = Comparator.run(runners, data_loader=[OrderedDict(f) for f in feeds], warm_up=0)
    (_, first), (_, second) = results.items()
    overlaps = {name: _overlap(first, second, name) for name in rank_outputs}
    ranked = all(v >= tolerance.overlap for v in overlaps.values())
    rows = "".join(f"; {name} overlap {v:.3f} (at least {tolerance.overlap:g})" for name, v in overlaps.items())
    reduce = np.max if error_stat == "max" else np.mean
    valued = [k for k in first[0] if k not in overlaps]
    scale = {k: max(float(np.abs(a[k]).max()) if a[k].size else 0.0 for a in first) for k in valued}
    errors = {k: max(float(reduce(np.abs(a[k] - b[k]))) if a[k].size else 0.0
                     for a, b in zip(first, second, strict=True)) for k in valued}
    atol = {k: tolerance.atol_for(scale[k]) for k in scale} | {k: float("inf") for k in overlaps}  # rows: as sets
    with _quiet_polygraphy():
        accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(
            atol=atol, rtol=tolerance.rtol, check_error_stat=error_stat))
    if not tolerance.scaled:
        return bool(accuracy) and ranked, f"{error_stat} |Δ| {max(errors.values()):.2e} (atol {tolerance.atol:g}){rows}"
    worst = max(errors, key=lambda k: errors[k] / scale[k] if scale[k] else 0.0)
    fraction = errors[worst] / scale[worst] if scale[worst] else 0.0
    return bool(accuracy) and ranked, (f"{error_stat} |Δ| {fraction:.2e} of the output's scale ({worst}: "
                                       f"{errors[worst]:.2e} at max |x| {scale[worst]:.3g}; atol {tolerance.atol:g} "
                                       f"of the scale){rows}")


def shape_text(shape: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in shape.items())


def validate(onnx_path: str | Path, checkpoint: str | Path | None = None, model=None) -> Report:
    """Run the ladder on the graphs next to `onnx_path` (both precisions when both were exported).
    `model`: the PyTorch model the graphs were exported from, when the caller has it loaded already."""
    require("polygraphy", "export", "the validation ladder")
    path = Path(onnx_path)
    report = Report(path)
    model_proto = load_onnx(path)
    meta = read_sidecar(path)
    spec, config = spec_from_sidecar(meta)
    graphs = {p: path.with_name(f) for p, f in meta["files"].items() if path.with_name(f).is_file()}
    fused = {p: path.with_name(e["file"]) for p, e in meta.get("fused", {}).items()
             if path.with_name(e["file"]).is_file()}
    for p in sorted(set(meta["files"]) - set(graphs)):
        report.add(f"(a) graph [{p}]", False, f"{path.with_name(meta['files'][p])}: listed in the sidecar, missing")
    for p in sorted(set(meta.get("fused", {})) - set(fused)):
        report.add(f"(a) graph [{p} fused]", False, f"{path.with_name(meta['fused'][p]['file'])}: listed in the "
                                                    f"sidecar, missing")
    protos = {p: (model_proto if g.resolve() == path.resolve() else load_onnx(g)) for p, g in graphs.items()}

    mismatched = False
    for p, proto in protos.items():
        mismatched |= _check_graph(proto, p, meta, spec, report)
        problems = lint(proto, spec)
        report.add(f"(e) TensorRT parser lint [{p}]", not problems, "; ".join(problems) or
                   f"opset {meta['opset']}, {len({n.op_type for n in proto.graph.node})} op types, all supported")
    for p, g in fused.items():  # ONNX Runtime's own operators: not linted for TensorRT
        mismatched |= _check_graph(load_onnx(g), p, meta, spec, report, fused=True)
    if mismatched:  # the feeds would follow the sidecar, not the graph: no runner can start
        report.add("(b)–(f) comparisons", None, "not run: the graph and its sidecar disagree (export it again)")
        return report
    if model is None:
        model = _torch_model(meta, config, checkpoint, report)
    sessions = {p: ort_session(g) for p, g in graphs.items()}
    fused_sessions = {p: ort_session(g) for p, g in fused.items()}
    feeds = [spec.feeds(s, seed=i) for i, s in enumerate(spec.checks)]
    shapes = "; ".join(shape_text(s) for s in spec.checks)
    if "fp32" in sessions:
        if model is not None:
            reference = _torch_runner(model, spec)  # run once: the fused graph is compared with the same outputs
            ok, detail = compare([reference, ort_runner(sessions["fp32"], "fp32")], feeds,
                                 spec.fp32, spec.error_stat, spec.rank_outputs)
            report.add("(b) ONNX Runtime FP32 vs PyTorch FP32", ok, f"{detail} at {shapes}")
            if "fp32" in fused_sessions:
                ok, detail = compare([reference, ort_runner(fused_sessions["fp32"], "fp32")],
                                     feeds, spec.fp32, spec.error_stat, spec.rank_outputs)
                report.add("(b) ONNX Runtime fused FP32 vs PyTorch FP32", ok, f"{detail} at {shapes}")
        if "fp16" in sessions:
            ok, detail = compare([ort_runner(sessions["fp32"], "fp32"), ort_runner(sessions["fp16"], "fp16")], feeds,
                                 spec.fp16, spec.error_stat, spec.rank_outputs)
            report.add("(c) FP16 graph vs FP32 graph (ONNX Runtime)", ok, f"{detail} at {shapes}")
    if model is not None:
        _overflow_check(model, spec, report)
    if spec.ranking is not None and {"fp32", "fp16"} <= set(sessions):
        _ranking_agreement(spec, sessions, report)
    if "int8" in sessions:
        _int8_checks(protos["int8"], sessions["int8"], fused_sessions.get("int8"), sessions.get("fp32"), meta, spec,
                     feeds, report)
    return report


def _int8_checks(proto, session, fused, fp32, meta: dict, spec: ExportSpec, feeds: list[dict],
                 report: Report) -> None:
    """(g) the INT8 graph: Q/DQ pairs inside, finite outputs on ONNX Runtime, its fused form equal to it, and
    the ranking agreement each kept at export.

    The fused form runs every product as an integer product where ONNX Runtime runs some of the standard
    graph's on dequantized floats (`export.ort_fusion`), so an activation at a rounding boundary can quantize
    to the neighbouring step in one and not in the other: the two agree to quantization's noise, not to
    FP32 rounding. The bound is the INT8 graph's own distance from the FP32 graph (`fp32`, its session) on
    the same feeds: a wrong fusion moves the output by more than quantizing it did."""
    from rerankrt.export.quantize import Agreement

    pairs = sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    outs = [session.run(None, f) for f in feeds]
    finite = all(np.isfinite(o).all() for out in outs for o in out if np.issubdtype(o.dtype, np.floating))
    report.add("(g) INT8 graph: Q/DQ, runs on ONNX Runtime", pairs > 0 and finite,
               f"{pairs} QuantizeLinear, {sum(n.op_type == 'DequantizeLinear' for n in proto.graph.node)} "
               f"DequantizeLinear; outputs {'finite' if finite else 'NOT finite'} at {len(feeds)} shapes")
    if fused is not None:
        bound = spec.fp32
        if fp32 is not None:  # quantization's own noise: the fused form may differ by no more than that
            noise = max(float(np.abs(a - b).max()) for f, out in zip(feeds, outs, strict=True)
                        for a, b in zip(out, fp32.run(None, f), strict=True)
                        if np.issubdtype(a.dtype, np.floating) and a.size)
            bound = dataclasses.replace(spec.fp32, atol=max(noise, spec.fp32.atol), scaled=False)
        ok, detail = compare([ort_runner(session, "int8"), ort_runner(fused, "int8")], feeds, bound,
                             spec.error_stat, spec.rank_outputs)
        report.add("(g) INT8 fused graph vs INT8 graph", ok,
                   f"{detail}; atol: the INT8 graph's own distance from the FP32 graph" if fp32 is not None else detail)
    recorded = meta.get("quantization", {}).get("agreement")
    if recorded is None:
        report.add("(g) INT8 ranking agreement", False, "the sidecar records none (export it again)")
        return
    agreed = Agreement.from_dict(recorded)
    report.add("(g) INT8 ranking agreement (at export)", agreed.ok, agreed.text())
    if fused is not None:
        recorded = meta["quantization"].get("fused", {}).get("agreement")
        if recorded is None:
            report.add("(g) INT8 fused ranking agreement (at export)", False,
                       "the sidecar records none (export it again)")
        else:
            kept = Agreement.from_dict(recorded)
            report.add("(g) INT8 fused ranking agreement (at export)", kept.ok, kept.text())


def _check_graph(proto, precision: str, meta: dict, spec: ExportSpec, report: Report, fused: bool = False) -> bool:
    """(a) of one graph: its I/O against the sidecar's (True where they disagree), the onnx checker with
    strict shape inference."""
    import onnx

    label = f"{precision} fused" if fused else precision
    mismatch = _io_mismatch(proto, meta, precision, spec)
    if mismatch:
        report.add(f"(a) graph I/O = sidecar I/O [{label}]", False, "; ".join(mismatch))
    try:
        onnx.checker.check_model(proto, full_check=True)
        ops = sorted({n.op_type for n in proto.graph.node if n.domain == "com.microsoft"})
        report.add(f"(a) onnx checker + shape inference [{label}]", True, f"{len(proto.graph.node)} nodes"
                   + (f"; ONNX Runtime's {', '.join(ops) or 'none'}" if fused else ""))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        report.add(f"(a) onnx checker + shape inference [{label}]", False, str(e).splitlines()[0])
    return bool(mismatch)


def _dims(value) -> list[str | int]:
    """A graph input's or output's dims: the symbolic name, or the fixed size."""
    return [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in value.type.tensor_type.shape.dim]


def _dims_text(dims) -> str:
    return "[" + ", ".join(map(str, dims)) + "]"


def _io_mismatch(proto, meta: dict, precision: str, spec: ExportSpec) -> list[str]:
    """How a graph's inputs and outputs differ from its sidecar's (names, order, element types, dims) and
    from the inputs the ladder would feed (the spec of the sidecar's configuration); [] when they agree.
    An output's symbolic dims may be expressions of the inputs' (`((height//14))*((width//14))` tokens), so
    only its fixed sizes are compared."""
    import onnx

    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BOOL: "bool",
             onnx.TensorProto.INT64: "int64"}
    for kind, graph, recorded in (("inputs", proto.graph.input, meta["inputs"]),
                                  ("outputs", proto.graph.output, meta["outputs"])):
        have = [(v.name, names.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type))) for v in graph]
        want = [(t["name"], t["dtype"][precision]) for t in recorded]
        if have != want:
            return [f"the graph's {kind} {have}, the sidecar's {want}"]
    problems = []
    fed = {t.name: list(t.shape) for t in spec.inputs}
    for kind, graph, recorded in (("input", proto.graph.input, meta["inputs"]),
                                  ("output", proto.graph.output, meta["outputs"])):
        for value, t in zip(graph, recorded, strict=True):
            dims, side = _dims(value), list(t["shape"])
            same = dims == side if kind == "input" else len(dims) == len(side) and all(
                a == b for a, b in zip(dims, side, strict=True) if isinstance(a, int) and isinstance(b, int))
            if not same:
                problems.append(f"{kind} {value.name}: the sidecar's dims {_dims_text(side)}, the graph's "
                                f"{_dims_text(dims)}")
            elif kind == "input" and fed.get(value.name) != dims:
                problems.append(f"input {value.name}: the sidecar's configuration makes dims "
                                f"{_dims_text(fed.get(value.name, []))}, the graph's are {_dims_text(dims)}")
    return problems


def _torch_model(meta: dict, config, checkpoint: str | Path | None, report: Report):
    """The PyTorch model the graphs were exported from, or None (with the reason recorded)."""
    from rerankrt.core.errors import UnavailableError

    try:
        require("torch", "export", "checks (b) and (d)")
    except UnavailableError as e:
        report.add("(b) PyTorch model", None, str(e))
        return None
    from rerankrt.models import load_model

    recorded = meta["checkpoint"]
    if recorded is None:
        if checkpoint is not None:
            report.add("(b) PyTorch model", False, f"`checkpoint` {checkpoint}: the graphs were exported with "
                                                   f"random weights, not from a checkpoint")
            return None
        return load_model(meta["model"], **_overrides(meta["model"], config))
    files = {"checkpoint": (Path(checkpoint or recorded["path"]), recorded["sha256"])}
    files |= {name: (Path(part["path"]), part["sha256"]) for name, part in recorded.get("parts", {}).items()}
    for what, (path, digest) in files.items():
        if not path.is_file():  # a path given here is a mistake; the recorded one may just live elsewhere
            given = what == "checkpoint" and checkpoint is not None
            report.add("(b) PyTorch model", False if given else None,
                       f"{what} {path} not found" + ("" if given or what != "checkpoint" else " (pass `checkpoint`)"))
            return None
        if sha256(path) != digest:
            report.add("(b) PyTorch model", False, f"{what} {path} is not the exported one (sha256 differs)")
            return None
    parts = {name: path for name, (path, _) in files.items() if name != "checkpoint"}
    return load_model(meta["model"], files["checkpoint"][0], **parts, **_overrides(meta["model"], config))


def _overrides(name: str, config) -> dict:
    """Config fields that differ from the released configuration. Fields a checkpoint fixes are equal
    to the checkpoint's (the sidecar recorded them from it), so passing them is consistent."""
    released = get_info(name).config
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(released, f.name)}


def outputs(out) -> tuple:
    """A model's outputs as a tuple (the extractor returns four, the others one tensor)."""
    return out if isinstance(out, tuple) else (out,)


def _overflow_check(model, spec: ExportSpec, report: Report) -> None:
    import copy

    import torch

    half = copy.deepcopy(model).half()
    bad = []
    for i, shape in enumerate(spec.overflow_checks):
        feeds = spec.feeds(shape, seed=100 + i)
        args = [torch.from_numpy(feeds[t.name]) for t in spec.inputs]
        with torch.no_grad():
            out = outputs(half(*[a.half() if a.is_floating_point() else a for a in args]))
        count = sum(int((~torch.isfinite(o)).sum()) for o in out if o.is_floating_point())
        if count:
            bad.append(f"{count} non-finite outputs at {shape_text(shape)}")
    report.add("(d) PyTorch .half() overflow check", not bad, "; ".join(bad) or
               "outputs finite at " + "; ".join(shape_text(s) for s in spec.overflow_checks))


def _ranking_agreement(spec: ExportSpec, sessions: dict, report: Report) -> None:
    assert spec.ranking is not None
    feeds = spec.feeds(spec.ranking, seed=7, one_query=True)
    scores = {}
    for p in ("fp32", "fp16"):
        out = sessions[p].run(None, cast_feeds(feeds, p))[0].astype(np.float64)
        scores[p] = np.moveaxis(out, spec.ranking_axis, -1).reshape(-1, out.shape[spec.ranking_axis])[0]
    tau, overlap = kendall_tau(scores["fp32"], scores["fp16"]), top_overlap(scores["fp32"], scores["fp16"])
    report.add("(f) FP16 vs FP32 ranking agreement", tau >= 0.9 and overlap >= 0.8,
               f"Kendall tau {tau:.3f}, top-10 overlap {overlap:.0%} over a shortlist of {len(scores['fp32'])}")
