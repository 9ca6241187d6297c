"""INT8 export (`rerankrt export NAME --precision int8 --calibration DATA`): Q/DQ graphs that ONNX Runtime
runs, kept by ranking agreement on the calibration data's held-out queries; refused, with the figures and
nothing written, where a calibration cannot keep the ranking."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from rerankrt.bench.synth import synthesize
from rerankrt.cli import main
from rerankrt.data.descriptors import write_global, write_local, write_nn
from rerankrt.export.quantize import SPEARMAN, TOP10, Agreement, agreement, quantized
from rerankrt.runtime.ort_backend import OrtBackend

pytest.importorskip("torch")

#: AMES at 2 layers: its architecture, exported and calibrated in seconds
SMALL = {"num_layers": 2}


def _synth(folder, **sizes):
    return synthesize(folder, **{"queries": 6, "database": 60, "query_locals": 20, "db_locals": 10,
                                 "neighbours": 20, **sizes})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Small AMES exported FP32, then INT8 calibrated on a synthetic dataset with planted matches."""
    from rerankrt.bench.profile import _graph_folder
    from rerankrt.export.onnx_export import export_model

    root = tmp_path_factory.mktemp("int8")
    data = _synth(root / "data")
    out = _graph_folder(root / "art", "ames", SMALL, {}).root  # where the profiler looks for this configuration
    export_model("ames", out_dir=out, precision="fp32", **SMALL)
    export_model("ames", out_dir=out, precision="int8", calibration=data, **SMALL)
    return out, data


def test_int8_graph_holds_qdq_and_ort_runs_it(exported):
    out, _ = exported
    side = json.loads((out / "ames.json").read_text())
    assert side["files"] == {"fp32": "ames.onnx", "int8": "ames.int8.onnx"}
    assert side["fused"]["int8"]["file"] == "ames.int8.ort.onnx"
    graph = onnx.load(str(out / "ames.int8.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") >= 2 * ops.count("QuantizeLinear")
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)  # standard operators: what TensorRT parses
    for n in graph.graph.node:  # symmetric INT8, weights per output channel (TensorRT's explicit quantization)
        if n.op_type == "DequantizeLinear" and n.input[0].endswith("_rrt_w"):
            assert next(a.i for a in n.attribute if a.name == "axis") == 1
    zeros = [i for i in graph.graph.initializer if i.name.endswith("_zero")]
    assert zeros and all(not onnx.numpy_helper.to_array(z).any() for z in zeros)
    q = side["quantization"]
    assert q["method"] == "minmax" and q["thresholds"] == {"spearman": SPEARMAN, "top10": TOP10}
    assert q["calibration"]["queries"] == [0, 2, 4] and q["held_out"] == [1, 3, 5]  # never the same queries
    assert Agreement.from_dict(q["agreement"]).ok and q["agreement"]["map_fp32"] is not None
    # the form ONNX Runtime runs, held to the same agreement on the same held-out queries
    assert q["fused"]["fusions"] == side["fused"]["int8"]["fusions"]
    assert Agreement.from_dict(q["fused"]["agreement"]).ok and q["fused"]["agreement"]["queries"] == 3
    rng = np.random.default_rng(0)
    feeds = {"q_desc": rng.standard_normal((4, 20, 768)).astype(np.float32), "q_mask": np.zeros((4, 20), bool),
             "db_desc": rng.standard_normal((4, 10, 768)).astype(np.float32), "db_mask": np.zeros((4, 10), bool)}
    with OrtBackend(out / "ames.int8.onnx") as int8, OrtBackend(out / "ames.onnx") as fp32:
        a, b = int8.infer(feeds)["logits"], fp32.infer(feeds)["logits"]
    assert a.shape == (4,) and np.isfinite(a).all()
    assert np.abs(a - b).max() < 0.05 * max(np.abs(b).max(), 1e-3)  # quantized, not another function


def test_the_fused_int8_graph_runs_every_quantized_product_as_an_integer_product(exported, tmp_path):
    """ONNX Runtime merges the Q nodes of an activation two products share (AMES's q and kv projections);
    with int8 activations such a product stayed DequantizeLinear → float MatMul, with the fused form's uint8
    ones every product is a MatMulIntegerToFloat."""
    import onnxruntime as ort

    out, _ = exported
    side = json.loads((out / "ames.json").read_text())
    standard = onnx.load(str(out / "ames.int8.onnx")).graph
    products = sum(n.op_type == "DequantizeLinear" and n.input[0].endswith("_rrt_w") for n in standard.node)
    fused = onnx.load(str(out / "ames.int8.ort.onnx")).graph
    activations = sum(n.op_type == "QuantizeLinear" for n in fused.node)
    assert side["fused"]["int8"]["fusions"]["Uint8Activations"] == activations > 0
    zeros = {i.name: onnx.numpy_helper.to_array(i) for i in fused.initializer}
    for n in fused.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not n.input[0].endswith("_rrt_w"):
            assert zeros[n.input[2]].dtype == np.uint8 and zeros[n.input[2]] == 128
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(str(out / "ames.int8.ort.onnx"), options, providers=["CPUExecutionProvider"])
    loaded = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert products > 0 and loaded.count("MatMulIntegerToFloat") == products
    assert "DequantizeLinear" not in loaded


def test_the_ladder_checks_every_graph_of_the_sidecar(exported):
    from rerankrt.export.validate import validate

    out, _ = exported
    report = validate(out / "ames.onnx")
    checks = {c.name: c for c in report.checks}
    assert report.ok, report.table()
    for name in ("(e) TensorRT parser lint [int8]", "(a) onnx checker + shape inference [fp32 fused]",
                 "(b) ONNX Runtime fused FP32 vs PyTorch FP32", "(g) INT8 graph: Q/DQ, runs on ONNX Runtime",
                 "(g) INT8 fused graph vs INT8 graph", "(g) INT8 ranking agreement (at export)",
                 "(g) INT8 fused ranking agreement (at export)"):
        assert checks[name].status == "pass", report.table()
    assert "(e) TensorRT parser lint [fp32 fused]" not in checks  # ONNX Runtime's operators: not TensorRT's


def test_a_fused_int8_graph_further_from_it_than_quantization_fails_the_ladder(exported, tmp_path):
    from rerankrt.export.validate import validate

    out, _ = exported
    copy = tmp_path / "art"
    shutil.copytree(out, copy)
    fused = onnx.load(str(copy / "ames.int8.ort.onnx"))
    scales = [i for i in fused.graph.initializer if i.name.endswith("_rrt_w_scale")]
    assert scales
    for scale in scales:  # every weight half as large again: a wrong fusion the logits show
        scale.CopyFrom(onnx.numpy_helper.from_array(1.5 * onnx.numpy_helper.to_array(scale), scale.name))
    onnx.save(fused, str(copy / "ames.int8.ort.onnx"))
    checks = {c.name: c for c in validate(copy / "ames.onnx").checks}
    assert checks["(g) INT8 fused graph vs INT8 graph"].status == "fail"
    assert checks["(g) INT8 graph: Q/DQ, runs on ONNX Runtime"].status == "pass"


def test_ort_loads_the_fused_graph_when_present(exported, tmp_path):
    from rerankrt.runtime.artifacts import Artifacts

    out, _ = exported
    folder = Artifacts(out)
    assert folder.find("ames", "fp32", "ort") == out / "ames.ort.onnx"
    assert folder.find("ames", "int8", "auto") == out / "ames.int8.ort.onnx"
    copy = tmp_path / "art"
    shutil.copytree(out, copy)
    side = json.loads((copy / "ames.json").read_text())
    side["fused"] = {}  # a fused file its sidecar does not list is not run
    (copy / "ames.json").write_text(json.dumps(side))
    assert Artifacts(copy).find("ames", "fp32", "ort") == copy / "ames.onnx"


def _refused(data, out):
    """The INT8 export's refusal: one line with the figures, and nothing written."""
    from rerankrt.core.errors import QuantizationError
    from rerankrt.export.onnx_export import export_model

    with pytest.raises(QuantizationError) as e:
        export_model("ames", out_dir=out, precision="int8", calibration=data, **SMALL)
    assert "\n" not in str(e.value)
    assert not out.exists() or not any(out.iterdir())
    return str(e.value)


def test_all_zero_descriptors_cannot_calibrate(tmp_path):
    data = _synth(tmp_path / "data")
    for split, n, k in (("query", 6, 20), ("gallery", 60, 10)):
        write_local(data / f"dinov2_{split}_local.hdf5", np.zeros((n, k, 768), np.float32), np.zeros((n, k), bool))
    line = _refused(data, tmp_path / "art")
    assert line.startswith("precision: int8: no quantization of ames keeps the FP32 ranking on ")
    assert "Spearman n/a" in line and "needed Spearman ≥ 0.98 and top-10 ≥ 0.9); nothing written" in line


def test_one_gallery_image_cannot_calibrate(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    q = rng.standard_normal((4, 20, 768)).astype(np.float32)
    g = rng.standard_normal((1, 10, 768)).astype(np.float32)
    write_local(data / "dinov2_query_local.hdf5", q, np.zeros((4, 20), bool))
    write_local(data / "dinov2_gallery_local.hdf5", g, np.zeros((1, 10), bool))
    write_global(data / "dinov2_query_global.pt", q.mean(1))
    write_global(data / "dinov2_gallery_global.pt", g.mean(1))
    write_nn(data / "nn_superglobal.pkl", np.ones((4, 1), np.float32), np.zeros((4, 1), np.int64))
    line = _refused(data, tmp_path / "art")
    assert "no quantization of ames keeps the FP32 ranking" in line and "Spearman n/a" in line


def test_a_refused_int8_export_exits_1_with_its_one_line(tmp_path, capsys, monkeypatch):
    from rerankrt.core.errors import QuantizationError

    def refuse(*args, **kwargs):
        raise QuantizationError("--precision int8: no quantization of ames keeps the FP32 ranking on D (…)")

    monkeypatch.setattr("rerankrt.export.pipeline.export_and_validate", refuse)
    assert main(["export", "ames", "--precision", "int8", "--calibration", str(tmp_path), "--out",
                 str(tmp_path / "a")]) == 1
    assert capsys.readouterr().err == ("rerankrt export: --precision int8: no quantization of ames keeps the FP32 "
                                       "ranking on D (…)\n")


def test_int8_needs_calibration_and_a_loop(tmp_path, capsys):
    assert main(["export", "ames", "--precision", "int8", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.strip() == ("rerankrt export: error: --precision: int8 needs --calibration "
                                               "(a dataset folder in the official layout)")
    assert main(["export", "raml", "--precision", "int8", "--calibration", str(tmp_path), "--out",
                 str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.strip() == (
        "rerankrt export: error: --precision: int8: INT8 graphs are calibrated through a re-ranking loop; raml has "
        "none (INT8 takes ames, ames-dist, ames-scorer, ames-dist-scorer, locore, locore-small)")
    assert main(["export", "ames", "--calibration", str(tmp_path), "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.strip() == "rerankrt export: error: --calibration: only --precision int8 is " \
                                              "calibrated"
    assert not (tmp_path / "a").exists()


def test_torch_runs_no_int8(tmp_path, capsys):
    data = _synth(tmp_path / "data")
    assert main(["rerank", "--model", "ames", "--backend", "torch", "--precision", "int8", "--data", str(data),
                 "--out", str(tmp_path / "nn.pkl")]) == 2
    assert capsys.readouterr().err.strip() == (
        "rerankrt rerank: error: --precision: int8 runs an exported INT8 graph (ONNX Runtime) or engine (TensorRT); "
        "the torch backend runs fp32 or fp16")


def test_agreement_figures():
    ref = [np.arange(10.0), np.arange(10.0)]
    assert agreement(ref, [np.arange(10.0), np.arange(10.0)]).ok
    reversed_ = agreement(ref, [np.arange(10.0)[::-1], np.arange(10.0)])
    assert reversed_.spearman == pytest.approx(0.0) and reversed_.spearman_min == pytest.approx(-1.0)
    assert not reversed_.ok
    flat = agreement(ref, [np.zeros(10), np.arange(10.0)])
    assert np.isnan(flat.spearman) and not flat.ok and "Spearman n/a" in flat.text()


def test_quantized_products_share_one_scale_per_activation():
    from onnx import helper, numpy_helper

    from rerankrt.export.quantize import Product

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32) * np.array([1, 2, 3, 4], np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="a"), helper.make_node("MatMul", ["x", "w"], ["z"],
                                                                                        name="b")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 4]) for n in "yz"], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    q = quantized(model, [Product("a", "x", "w", "a", 32), Product("b", "x", "w", "b", 32)], {"x": 2.54})
    scales = [i for i in q.graph.initializer if i.name == "x_rrt_scale"]
    assert len(scales) == 1 and float(numpy_helper.to_array(scales[0])) == pytest.approx(0.02)
    assert [n.op_type for n in q.graph.node].count("QuantizeLinear") == 2  # a pair per product: ORT fuses each
    w_scale = numpy_helper.to_array(next(i for i in q.graph.initializer if i.name == "a_rrt_w_scale"))
    np.testing.assert_allclose(w_scale, np.array([1, 2, 3, 4]) / 127, rtol=1e-6)


def test_the_profiler_times_every_deployed_form(exported, tmp_path):
    pytest.importorskip("matplotlib")
    from rerankrt.bench.profile import run_bench

    out, _ = exported
    artifacts = out.parents[1]
    results = run_bench(["ames"], ["torch", "ort", "ort-fused"], ["fp32", "int8"], [6], repeat=1, out=tmp_path,
                        artifacts=artifacts, configs={"ames": SMALL}, log=lambda message: None)
    rows = {(r["backend"], r["precision"]): r for r in results["results"]}
    # INT8 in the form ONNX Runtime runs (fused), never on torch
    assert set(rows) == {("torch", "fp32"), ("ort", "fp32"), ("ort-fused", "fp32"), ("ort-fused", "int8")}
    assert rows["ort-fused", "int8"]["graph"].endswith("ames.int8.ort.onnx")
    assert rows["ort", "fp32"]["graph"].endswith("ames.onnx")
    # the form it times: the fused graph's agreement, with its mAP
    fused = json.loads((out / "ames.json").read_text())["quantization"]["fused"]["agreement"]
    assert rows["ort-fused", "int8"]["agreement"] == fused and fused["map_int8"] is not None
    assert set(results["roofs"]) == {"torch fp32", "ort fp32", "ort int8"}
    int8 = rows["ort-fused", "int8"]
    assert 0 < int8["fp32_roof_fraction"] and int8["roofline_fraction"] < int8["fp32_roof_fraction"]
    assert "MultiHeadAttention" in dict(rows["ort-fused", "fp32"]["ops"]["ops"])
    text = (tmp_path / "results.md").read_text()
    assert "| ort fp32 | ort-fused fp32 | ort-fused int8 | INT8 agreement |" in text
