"""ONNX export: every model in both precisions through the validation ladder; lint; bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rerankrt.cli import main
from rerankrt.core.errors import CheckpointError, ModelFileError
from rerankrt.export.onnx_export import export_model, parse_profile
from rerankrt.export.validate import lint, outputs, validate
from rerankrt.models import Profile, spec_for
from rerankrt.runtime.agreement import kendall_tau, top_overlap
from rerankrt.runtime.sidecar import sidecar_path

pytest.importorskip("torch")

#: LOCORE's architecture at a size CI exports in seconds: 5 locals per image, K ≤ 17 (position table 130).
LOCORE_TINY = {"hidden_size": 32, "num_heads": 4, "intermediate_size": 64, "attention_window": 8,
               "max_positions": 130, "local_dim": 32, "global_dim": 32, "local_descriptors": 5}
CONFIGS = {
    # AMES at its released configuration (the session's export); ames-dist, its binarized sibling, at 2 layers
    "ames": {}, "ames-dist": {"num_layers": 2}, "raml": {}, "rrt": {"num_layers": 2},
    # the store's two halves; the scorers at 2 layers and 60 query descriptors (the ladder's largest shape)
    "ames-encoder": {}, "ames-dist-encoder": {}, "ames-scorer": {"num_layers": 2, "query_descriptors": 60},
    "ames-dist-scorer": {"num_layers": 2, "query_descriptors": 60},
    "locore": {**LOCORE_TINY, "num_layers": 2},
    "locore-small": {**LOCORE_TINY, "num_layers": 2, "keep_layers": 2},  # the first layers of a deeper one
    "r2former": {"tokens": 40}, "cvnet-rerank": {"feature_dim": 32, "conv_dim": 16, "map_height": 6, "map_width": 8},
    "cvnet-backbone": {"image_height": 64, "image_width": 96},
    "dinov2-extractor": {"embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_dim": 128},
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tmp_path_factory):
    name = request.param
    if name == "ames":  # the released configuration, exported once for the session
        out = request.getfixturevalue("released_ames")
        return name, out, out / "ames.json"
    out = tmp_path_factory.mktemp(name)
    meta = export_model(name, out_dir=out, **CONFIGS[name])
    return name, out, meta


#: the models where onnxscript's ONNX Runtime fusions apply (attention, skip-LayerNorm): a fused graph beside
FUSES = {"ames", "ames-dist", "ames-scorer", "ames-dist-scorer", "rrt", "locore", "locore-small", "r2former",
         "dinov2-extractor"}


def test_export_writes_both_graphs_and_the_sidecar(exported):
    name, out, meta = exported
    fused = [f"{name}.ort.onnx"] if name in FUSES else []
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{name}.onnx", f"{name}.fp16.onnx", f"{name}.json",
                                                            *fused])
    side = json.loads(meta.read_text())
    assert {p: e["file"] for p, e in side["fused"].items()} == ({"fp32": fused[0]} if fused else {})
    if fused:
        import onnx as onnx_

        ops = {n.op_type for n in onnx_.load(str(out / fused[0])).graph.node if n.domain == "com.microsoft"}
        assert "MultiHeadAttention" in ops and side["fused"]["fp32"]["fusions"]["sdpa"] > 0
    spec = spec_for(name, _config(name))
    assert side["model"] == name and side["opset"] == 20 and side["checkpoint"] is None
    assert side["files"] == {"fp32": f"{name}.onnx", "fp16": f"{name}.fp16.onnx"}
    assert [i["name"] for i in side["inputs"]] == [t.name for t in spec.inputs]
    assert side["profiles"] == {d: {"min": p.min, "opt": p.opt, "max": p.max} for d, p in spec.profiles.items()}
    assert set(side["versions"]) == {"rerankrt", "torch", "onnx", "onnxruntime"}
    for precision, float_type in (("fp32", "tensor(float)"), ("fp16", "tensor(float16)")):
        session = ort.InferenceSession(str(out / side["files"][precision]), providers=["CPUExecutionProvider"])
        types = {i.name: i.type for i in session.get_inputs()} | {o.name: o.type for o in session.get_outputs()}
        kinds = {"float": float_type, "half": "tensor(float16)", "bool": "tensor(bool)"}
        expected = {t.name: kinds[t.dtype] for t in spec.inputs + spec.outputs}
        assert types == expected
        shapes = {i.name: i.shape for i in session.get_inputs()}
        assert shapes == {t.name: list(t.shape) for t in spec.inputs}  # only the spec's symbolic dims


def _config(name):
    import dataclasses

    from rerankrt.models.registry import get_info

    return dataclasses.replace(get_info(name).config, **CONFIGS[name])


def test_ladder_passes(exported):
    name, out, _ = exported
    report = validate(out / f"{name}.onnx")
    names = [c.name for c in report.checks]
    assert report.ok, report.table()
    assert all(c.status == "pass" for c in report.checks), report.table()
    expected = {"(a) onnx checker + shape inference [fp32]", "(a) onnx checker + shape inference [fp16]",
                "(e) TensorRT parser lint [fp32]", "(e) TensorRT parser lint [fp16]",
                "(b) ONNX Runtime FP32 vs PyTorch FP32", "(c) FP16 graph vs FP32 graph (ONNX Runtime)",
                "(d) PyTorch .half() overflow check"}
    if name not in ("raml", "cvnet-backbone", "ames-encoder", "ames-dist-encoder"):
        expected.add("(f) FP16 vs FP32 ranking agreement")  # the re-rankers, the baselines included
    if name in FUSES:  # the fused graph through the same ladder
        expected |= {"(a) onnx checker + shape inference [fp32 fused]", "(b) ONNX Runtime fused FP32 vs PyTorch FP32"}
    assert set(names) == expected


def test_validation_shapes_are_distinct_and_inside_the_profiles(exported):
    name = exported[0]
    spec = spec_for(name, _config(name))
    assert len(spec.checks) >= 3 and len({tuple(s.values()) for s in spec.checks}) == len(spec.checks)
    assert spec.trace not in spec.checks or len(spec.checks) > 3  # not only the traced shape
    for shape in spec.checks:
        assert all(spec.profiles[d].covers(v) for d, v in shape.items())


def test_fp32_graph_matches_torch_at_an_untraced_shape(exported):
    """Independent of Polygraphy: ORT on a shape away from the trace, against the eager model."""
    import torch

    from rerankrt.models import load_model

    name, out, _ = exported
    spec = spec_for(name, _config(name))
    shape = spec.checks[-1]
    feeds = spec.feeds(shape, seed=42)
    session = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    model = load_model(name, **CONFIGS[name])
    with torch.no_grad():
        refs = outputs(model(*[torch.from_numpy(feeds[t.name]) for t in spec.inputs]))
    got = session.run([t.name for t in spec.outputs], feeds)
    assert len(got) == len(refs) == len(spec.outputs)
    for t, value, ref in zip(spec.outputs, got, refs, strict=True):
        np.testing.assert_allclose(value, ref.numpy(), atol=spec.fp32.atol_for(float(ref.float().abs().max())),
                                   rtol=spec.fp32.rtol, err_msg=t.name)


# --- lint ---------------------------------------------------------------------------------------------

def _tiny_graph(op: str = "Relu", input_type: int = TensorProto.FLOAT, dims=("pairs", 4)):
    x = helper.make_tensor_value_info("x", input_type, list(dims))
    y = helper.make_tensor_value_info("y", input_type, list(dims))
    node = helper.make_node(op, ["x"], ["y"])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 20)])


def test_lint_catches_unsupported_ops_int64_inputs_and_stray_dims():
    spec = spec_for("ames")
    assert lint(_tiny_graph(), spec) == []
    assert lint(_tiny_graph("NonZero"), spec) == ["ops TensorRT parses badly or not at all: NonZero"]
    assert lint(_tiny_graph("Frobnicate"), spec) == ["ops not in TensorRT's ONNX operator matrix: Frobnicate"]
    assert lint(_tiny_graph(input_type=TensorProto.INT64), spec) == [
        "input x: int64 (TensorRT wants float/bool graph inputs)"]
    assert lint(_tiny_graph(dims=("batch_size", 4)), spec) == [
        "x: symbolic dim 'batch_size' is not one of ['db_descriptors', 'pairs', 'query_descriptors']",
        "y: symbolic dim 'batch_size' is not one of ['db_descriptors', 'pairs', 'query_descriptors']"]
    model = _tiny_graph()
    model.opset_import[0].version = 23
    assert lint(model, spec) == ["opset 23: TensorRT 10.x parses opsets 9–20"]


@pytest.mark.parametrize("exported", ["ames-encoder"], indirect=True)  # a small graph: the ladder runs whole
def test_injected_op_fails_validate(exported, tmp_path, capsys):
    name, out, _ = exported
    model = onnx.load(str(out / f"{name}.onnx"))
    first = model.graph.node[0]
    model.graph.node.insert(1, helper.make_node("NonZero", [first.output[0]], ["injected"]))
    for f in out.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    onnx.save(model, str(tmp_path / f"{name}.onnx"))
    assert main(["validate", str(tmp_path / f"{name}.onnx")]) == 1
    table = capsys.readouterr().out
    assert _row(table, "(e) TensorRT parser lint [fp32]") == "FAIL    ops TensorRT parses badly or not at all: NonZero"
    assert _row(table, "(e) TensorRT parser lint [fp16]").startswith("PASS")
    assert table.rstrip().endswith("1 check(s) FAILED")


def _row(table: str, check: str) -> str:
    """The result and detail of one check's row of a ladder's table (the columns padded to the widest name)."""
    line = next(line for line in table.splitlines() if line.startswith(check + " "))
    return line[len(check):].strip()


# --- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("exported", ["ames"], indirect=True)
def test_a_sidecar_whose_dims_differ_from_the_graph_fails_before_any_runner(exported, tmp_path, capsys):
    """The sidecar's first two 768s (the configuration's local_dim and q_desc's last dim) edited to 384: a FAIL
    row names each input, the sidecar's and the graph's dims, and nothing is fed to a runner."""
    name, out, _ = exported
    for f in out.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    text = (tmp_path / "ames.json").read_text()
    (tmp_path / "ames.json").write_text(text.replace("768", "384", 2))
    assert main(["validate", str(tmp_path / "ames.onnx")]) == 1
    table = capsys.readouterr().out
    row = ("FAIL    input q_desc: the sidecar's dims [pairs, query_descriptors, 384], the graph's "
           "[pairs, query_descriptors, 768]; input db_desc: the sidecar's configuration makes dims "
           "[pairs, db_descriptors, 384], the graph's are [pairs, db_descriptors, 768]")
    for graph in ("fp32", "fp16", "fp32 fused"):  # every graph of the sidecar, the fused form among them
        assert _row(table, f"(a) graph I/O = sidecar I/O [{graph}]") == row
    assert _row(table, "(b)–(f) comparisons").startswith("SKIP    not run: the graph and its sidecar disagree")
    assert not any(line.startswith(("(b) ONNX", "(c)", "(d)", "(f)")) for line in table.splitlines())
    assert table.rstrip().endswith("3 check(s) FAILED")


@pytest.mark.parametrize("exported", ["raml"], indirect=True)
def test_corrupt_and_truncated_files(tmp_path, exported):
    name, out, _ = exported
    data = (out / "raml.onnx").read_bytes()
    (tmp_path / "raml.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "raml.json").write_bytes((out / "raml.json").read_bytes())
    with pytest.raises(ModelFileError, match=r"raml.onnx: not a readable ONNX model \(truncated or corrupt\?\)"):
        validate(tmp_path / "raml.onnx")
    (tmp_path / "other.onnx").write_bytes(data)
    with pytest.raises(ModelFileError, match=r"its sidecar .*other.json is missing"):
        validate(tmp_path / "other.onnx")
    with pytest.raises(ModelFileError, match=r"missing.onnx: no such file"):
        validate(tmp_path / "missing.onnx")


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    from rerankrt.export import onnx_export

    calls = []

    def fail_on_fp16(model, spec, path, precision, opset):
        calls.append(precision)
        path.write_bytes(b"partial")
        if precision == "fp16":
            raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "export_onnx", fail_on_fp16)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_model("ames", out_dir=tmp_path)
    assert calls == ["fp32", "fp16"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"opset": 16}, ValueError, "opset: expected 17–20 (or 23), got 16"),
    ({"precision": "int4"}, ValueError, "precision: expected fp32, fp16, int8 or both, got 'int4'"),
    ({"precision": "int8"}, ValueError, "precision: int8 needs `calibration` (a dataset folder in the official "
                                        "layout)"),
    ({"profiles": {"pairs": Profile(10, 5, 20)}}, ValueError,
     "profile pairs: expected 1 ≤ min ≤ opt ≤ max, got 10/5/20"),
    ({"profiles": {"pairs": Profile(5, 10, 20)}}, ValueError,
     "profile pairs: 5/10/20 does not cover the traced size 3"),
    ({"profiles": {"batch": Profile(1, 1, 2)}}, ValueError,
     "profile: unknown dimension ['batch'] for ames; known: ['db_descriptors', 'pairs', 'query_descriptors']"),
])
def test_bad_export_arguments(tmp_path, kwargs, error, message):
    with pytest.raises(error) as e:
        export_model("ames", out_dir=tmp_path, **kwargs)
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []


def test_out_dir_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(OSError, match=r"out: .*file: is a file, expected a folder"):
        export_model("ames", out_dir=target)


def test_checkpoint_of_another_model(tmp_path):
    import torch

    from rerankrt.models import load_model

    path = tmp_path / "ames.pt"
    torch.save({"state": load_model("ames").state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"looks like a checkpoint of ames"):
        export_model("raml", path, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cli_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["export", "bert"])
    assert e.value.code == 2
    assert "invalid choice: 'bert'" in capsys.readouterr().err
    assert main(["export", "ames", "--out", str(tmp_path), "--profile", "pairs=1,2,3"]) == 2
    assert "profile 'pairs=1,2,3': expected NAME:min,opt,max, e.g. pairs:1,100,400" in capsys.readouterr().err


def test_helpers():
    assert parse_profile("pairs:1,100,400") == ("pairs", Profile(1, 100, 400))
    assert sidecar_path("d/ames.fp16.onnx").name == "ames.json" and sidecar_path("d/ames.onnx").name == "ames.json"
    a = np.arange(10.0)
    assert kendall_tau(a, a) == 1.0 and kendall_tau(a, -a) == -1.0
    swapped = a.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # one discordant pair of 45
    assert kendall_tau(a, swapped) == pytest.approx(43 / 45, rel=1e-12)
    tied = np.array([0.0, 0.0, 1.0, 2.0])  # tau-b: (5 − 0) / sqrt(5 · 6)
    assert kendall_tau(tied, np.arange(4.0)) == pytest.approx(5 / np.sqrt(30), rel=1e-12)
    assert np.isnan(kendall_tau(np.ones(10), a))  # every pair tied: no order to compare
    assert top_overlap(a, a) == 1.0 and top_overlap(np.arange(20.0), -np.arange(20.0)) == 0.0


def test_exporting_the_other_precision_keeps_the_first(tmp_path):
    """fp32 now, fp16 later (the profiler does that): the sidecar lists both graphs; a graph of another
    configuration is not kept."""
    export_model("ames-encoder", out_dir=tmp_path, precision="fp32")
    said = []
    meta = export_model("ames-encoder", out_dir=tmp_path, precision="fp16", log=said.append)
    side = json.loads(meta.read_text())
    assert side["files"] == {"fp32": "ames-encoder.onnx", "fp16": "ames-encoder.fp16.onnx"}
    assert side["precisions"] == ["fp32", "fp16"] and side["inputs"][0]["dtype"] == {"fp32": "float32",
                                                                                    "fp16": "float16"}
    assert said[0] == f"keeping {tmp_path / 'ames-encoder.onnx'} (same model, configuration, profiles)"
    assert validate(tmp_path / "ames-encoder.onnx").ok
    export_model("ames-encoder", out_dir=tmp_path, precision="fp16", db_descriptors=20)
    assert json.loads(meta.read_text())["files"] == {"fp16": "ames-encoder.fp16.onnx"}
