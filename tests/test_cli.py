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


@pytest.mark.parametrize("answer", ["error", "raise", "zero"])
def test_cuda_bindings_without_a_device_means_no_device(monkeypatch, answer):
    """cuda.bindings imports without a GPU and answers cudaGetDeviceCount with an error code (or raises when
    the driver library is missing, or counts zero devices): each is reported as no device, and the torch
    fallback is not consulted."""
    calls = []

    def count():
        calls.append("cudaGetDeviceCount")
        if answer == "raise":
            raise RuntimeError("libcuda.so.1: cannot open shared object file")
        return (35, 0) if answer == "error" else (0, 0)  # cudaErrorInsufficientDriver, or success with 0

    runtime = types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=0), cudaGetDeviceCount=count)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    monkeypatch.setitem(sys.modules, "torch", None)  # a fallback to torch would raise ImportError
    assert environment.cuda_device() is None
    assert calls == ["cudaGetDeviceCount"]


def test_models_lists_released_configurations(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["ames", "ames-dist", "ames-encoder", "ames-scorer", "ames-dist-encoder", "ames-dist-scorer",
                          "raml", "rrt", "cvnet-rerank", "cvnet-backbone", "r2former", "locore", "locore-small",
                          "dinov2-extractor"]
    assert {n: (r["kind"], r["loop"], r["baseline"]) for n, r in rows.items()} == {
        "ames": ("pair-wise", "ames", False), "ames-dist": ("pair-wise", "ames", False),
        "ames-encoder": ("encoder", None, False), "ames-scorer": ("pair-wise", "ames-store", False),
        "ames-dist-encoder": ("encoder", None, False), "ames-dist-scorer": ("pair-wise", "ames-store", False),
        "raml": ("image", None, False), "rrt": ("pair-wise", None, True), "cvnet-rerank": ("pair-wise", None, True),
        "cvnet-backbone": ("image", None, True), "r2former": ("pair-wise", None, True),
        "locore": ("list-wise", "locore", False), "locore-small": ("list-wise", "locore", False),
        "dinov2-extractor": ("extractor", None, False)}
    assert rows["rrt"]["parameters"] == "2,243,201"
    assert rows["cvnet-rerank"]["parameters"] == "7,486,114" and rows["r2former"]["parameters"] == "135,171"
    assert rows["cvnet-backbone"]["parameters"] == "8,543,296"  # ResNet-50's 23,508,032 less stage 4's 14,964,736
    assert rows["ames"]["parameters"] == "2,079,745"
    assert rows["ames-dist"]["parameters"] == "2,096,129"
    assert rows["ames-dist-encoder"]["parameters"] == rows["ames-dist-scorer"]["parameters"] == "2,096,129"  # shared
    assert rows["raml"]["parameters"] == "24,557,121"
    assert rows["locore"]["parameters"] == "110,257,154"
    assert rows["locore-small"]["parameters"] == "57,099,266"
    # ViT-B/14-reg4's 86,583,552 + the detector's 1×1 conv (590,592), BatchNorm (1,536) and 1×1 conv (769)
    assert rows["dinov2-extractor"]["parameters"] == "87,176,449"
    assert rows["ames"]["released_config"]["local_dim"] == 768
    assert rows["raml"]["released_config"]["output_dim"] == 512
    assert "{'state': state_dict}" in rows["ames"]["checkpoint"]
    assert rows["locore-small"]["released_config"]["keep_layers"] == 6


def test_unknown_command_fails_with_usage():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice: 'frobnicate'" in out.stderr
