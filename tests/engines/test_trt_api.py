"""TensorRT code against the real bindings of 10.3, the newest 10.x and 11.x (stub libraries, no GPU),
and the profile logic that needs no TensorRT."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerankrt.cli import main
from rerankrt.engines.profiles import profile_shapes

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("trt_conformance", ROOT / "scripts" / "trt_conformance.py")
assert _spec and _spec.loader
conformance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conformance)

META = {
    "format": "rerankrt-onnx/2", "model": "ames", "kind": "pair-wise", "config": {}, "opset": 20, "checkpoint": None,
    "files": {"fp32": "ames.onnx", "fp16": "ames.fp16.onnx"},
    "inputs": [
        {"name": "q_desc", "dtype": {"fp32": "float32", "fp16": "float16"},
         "shape": ["pairs", "query_descriptors", 768]},
        {"name": "q_mask", "dtype": {"fp32": "bool", "fp16": "bool"}, "shape": ["pairs", "query_descriptors"]},
    ],
    "outputs": [{"name": "logits", "dtype": {"fp32": "float32", "fp16": "float16"}, "shape": ["pairs"]}],
    "profiles": {"pairs": {"min": 1, "opt": 100, "max": 400}, "query_descriptors": {"min": 1, "opt": 600, "max": 1024}},
}


def test_profile_shapes_from_the_sidecar_and_overrides():
    assert profile_shapes(META) == {
        "q_desc": ((1, 1, 768), (100, 600, 768), (400, 1024, 768)),
        "q_mask": ((1, 1), (100, 600), (400, 1024)),
    }
    shapes = profile_shapes(META, {"pairs": (8, 8, 8)})
    assert shapes["q_mask"] == ((8, 1), (8, 600), (8, 1024))
    with pytest.raises(ValueError, match=r"profile: unknown dimension 'batch'; the graph's symbolic dims are "
                                         r"\['pairs', 'query_descriptors'\]"):
        profile_shapes(META, {"batch": (1, 1, 1)})
    with pytest.raises(ValueError, match=r"profile pairs: expected 1 ≤ min ≤ opt ≤ max, got 9/8/8"):
        profile_shapes(META, {"pairs": (9, 8, 8)})


@pytest.fixture(scope="module", params=conformance.RELEASES, ids=[v for v, _ in conformance.RELEASES])
def release(request, tmp_path_factory):
    version, flavour = request.param
    try:
        conformance.prepare(version, flavour)
    except RuntimeError as e:  # no route to PyPI or no C compiler
        pytest.skip(f"TensorRT {version} bindings could not be prepared: {str(e).splitlines()[0]}")
    return version


PROBE = """
import json, sys
from rerankrt.engines import trt_api
from rerankrt.core.errors import UnavailableError
out = {"version": trt_api.version(), "weak": trt_api.has_weak_typing(), "flags": trt_api.network_flags()}
import tensorrt as trt
out["strongly_typed_bit"] = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
try:
    trt_api.builder(trt_api.logger())
except UnavailableError as e:
    out["builder"] = str(e)
if len(sys.argv) > 1:
    from rerankrt.engines.build import build_engine
    try:
        build_engine(sys.argv[1])
    except UnavailableError as e:
        out["build"] = str(e)
print(json.dumps(out))
"""


def probe(version: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                            env=conformance.env(version))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_feature_detection_on_real_bindings(release):
    out = probe(release)
    assert out["version"] == release
    if release.startswith("10."):
        assert out["weak"] is True and out["flags"] == out["strongly_typed_bit"]  # the flag is set on 10.x
    else:
        assert out["weak"] is False and out["flags"] == 0  # 11.x: strongly typed always, no flag
    assert out["builder"].startswith(f"TensorRT {release} could not create a Builder: no usable CUDA device")


def test_build_fails_clearly_without_a_gpu_and_writes_nothing(release, tmp_path):
    (tmp_path / "ames.json").write_text(json.dumps(META))
    (tmp_path / "ames.fp16.onnx").write_bytes(b"")
    out = probe(release, str(tmp_path / "ames.fp16.onnx"))
    assert out["build"].startswith(f"TensorRT {release} could not create a Builder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ames.fp16.onnx", "ames.json"]


BACKEND_PROBE = """
import json, sys
from rerankrt.core.errors import ModelFileError, UnavailableError
from rerankrt.runtime.request import open_backend
out = {}
for plan in sys.argv[1:]:
    try:
        with open_backend(plan, log=lambda m: None):
            pass
    except (ModelFileError, UnavailableError) as e:
        out[plan] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def test_trt_backend_refuses_foreign_engines_and_needs_a_gpu(release, tmp_path):
    plans = []
    for built_by in ("9.9.9", release):
        plan = tmp_path / f"built-by-{built_by}.plan"
        plan.write_bytes(b"not an engine")
        sidecar = {"format": "rerankrt-plan/2", "tensorrt": built_by, "precision": "fp16",
                   "gpu": {"name": "H100", "compute_capability": "9.0"}, "onnx": {"sidecar": META}}
        plan.with_name(plan.name + ".json").write_text(json.dumps(sidecar))
        plans.append(str(plan))
    result = subprocess.run([sys.executable, "-c", BACKEND_PROBE, *plans], capture_output=True, text=True,
                            env=conformance.env(release))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out[plans[0]] == (f"ModelFileError: {plans[0]}: built by TensorRT 9.9.9, this is TensorRT {release}; "
                             f"rebuild it here with `rerankrt build`")
    assert out[plans[1]] == f"UnavailableError: {plans[1]}: no CUDA device to run the engine on"


def test_type_check_against_each_release(release):
    """The conformance check itself: mypy over the TensorRT-facing modules with this release's stubs."""
    flavour = dict(conformance.RELEASES)[release]
    ok, output = conformance.check(release, flavour, conformance.DEFAULT_CACHE)
    assert ok, output


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_cli_without_tensorrt(capsys, tmp_path):
    assert main(["build", str(tmp_path / "ames.fp16.onnx")]) == 2
    assert "rerankrt build: error: building a TensorRT engine needs tensorrt, which is not available here (" \
        in capsys.readouterr().err


def test_inspector_json_of_both_schemas():
    from rerankrt.engines.inspector_json import io_names, layer_rows

    fp16, fp32 = "Row major linear FP16", "Row major linear FP32"
    v10 = {"Layers": [{"Name": "mm", "LayerType": "MatrixMultiply", "TacticName": "sm90_xmma",
                       "Inputs": [{"Name": "a", "Dimensions": [100, 600, 64], "Format/Datatype": fp16}],
                       "Outputs": [{"Name": "b", "Dimensions": [100, 600, 600], "Format/Datatype": fp32}]}],
           "Bindings": ["q_desc", "logits"]}
    v11 = {"Layers": [{"Name": "mm", "LayerType": "MatrixMultiply", "TacticName": "sm90_xmma",
                       "Inputs": [{"Name": "a", "Dimensions": [100, 600, 64], "Format": "Row major linear",
                                   "DataType": "FP16"}],
                       "Outputs": [{"Name": "b", "Dimensions": [100, 600, 600], "Format": "Row major linear",
                                    "DataType": "FP32"}]}],
           "I/O Tensors": ["q_desc", "logits"]}
    rows10, rows11 = layer_rows(json.dumps(v10)), layer_rows(v11)
    assert rows10[0]["inputs"] == ["a [100, 600, 64] Row major linear FP16"]
    assert rows11[0]["inputs"] == ["a [100, 600, 64] FP16 Row major linear"]
    assert [r["type"] for r in rows10 + rows11] == ["MatrixMultiply"] * 2
    assert io_names(v10) == io_names(v11) == ["q_desc", "logits"]
    assert layer_rows({"Layers": ["only", "names"]})[1] == {"name": "names", "type": "", "inputs": [], "outputs": [],
                                                            "tactic": ""}


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_inspect_cli_without_tensorrt(capsys, tmp_path):
    assert main(["inspect", str(tmp_path / "ames.plan")]) == 2
    assert "rerankrt inspect: error: inspecting a TensorRT engine needs tensorrt, which is not available here (" \
        in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_validate_engine_without_tensorrt(capsys, tmp_path):
    plan = tmp_path / "ames.plan"
    plan.write_bytes(b"engine")
    plan.with_name("ames.plan.json").write_text(json.dumps({"format": "rerankrt-plan/2", "tensorrt": "10.3.0"}))
    assert main(["validate", str(plan)]) == 2
    assert "rerankrt validate: error: validating a TensorRT engine needs tensorrt, which is not available here (" \
        in capsys.readouterr().err
