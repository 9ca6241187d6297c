"""The rerankrt command and the torch-free import promise."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from rerankrt import environment
from rerankrt.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rerankrt", *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("module", ["rerankrt", "rerankrt.runtime", "rerankrt.models"])
def test_import_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"python", "platform", "rerankrt", "numpy", "torch", "onnx", "onnxruntime", "tensorrt",
                         "cuda-python", "onnxruntime_providers", "cuda_device"}
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]
    import numpy

    assert info["numpy"] == numpy.__version__


def test_info_text_through_python_m():
    out = run("info")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines())
    assert lines["rerankrt"].strip() and lines["onnxruntime_providers"].startswith(("CPU", "Azure", "CUDA", "Tensorrt"))
    if environment.cuda_device() is None:
        assert lines["cuda_device"] == "no CUDA device"


def test_cuda_bindings_error_means_no_device(monkeypatch):
    """cuda.bindings imports without a GPU and returns an error from cuInit: reported as no device."""
    class CUresult:
        CUDA_SUCCESS = 0
        CUDA_ERROR_NO_DEVICE = 100

    driver = types.SimpleNamespace(CUresult=CUresult, cuInit=lambda flags: (CUresult.CUDA_ERROR_NO_DEVICE,))
    bindings = types.ModuleType("cuda.bindings")
    bindings.driver = driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    assert environment.cuda_device() is None


def test_models_lists_released_configurations(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["ames", "ames-dist", "raml", "rrt", "cvnet-rerank", "cvnet-backbone", "r2former", "locore",
                          "locore-small"]
    assert rows["rrt"]["parameters"] == "2,243,201"
    assert rows["cvnet-rerank"]["parameters"] == "7,486,114" and rows["r2former"]["parameters"] == "135,171"
    assert rows["cvnet-backbone"]["parameters"] == "8,543,296"  # ResNet-50's 23,508,032 less stage 4's 14,964,736
    assert rows["ames"]["parameters"] == "2,079,745"
    assert rows["ames-dist"]["parameters"] == "2,096,129"
    assert rows["raml"]["parameters"] == "24,557,121"
    assert rows["locore"]["parameters"] == "110,257,154"
    assert rows["locore-small"]["parameters"] == "57,099,266"
    assert rows["ames"]["released_config"]["local_dim"] == 768
    assert rows["raml"]["released_config"]["output_dim"] == 512
    assert "{'state': state_dict}" in rows["ames"]["checkpoint"]
    assert rows["locore-small"]["released_config"]["keep_layers"] == 6


def test_unknown_command_fails_with_usage():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice: 'frobnicate'" in out.stderr
