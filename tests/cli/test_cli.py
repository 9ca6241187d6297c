"""The rerankrt command and the torch-free import promise."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from rerankrt.cli import main
from rerankrt.core import environment


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rerankrt", *args], capture_output=True, text=True, check=False)


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"python", "platform", "cpu", "rerankrt", "numpy", "torch", "onnx", "onnxruntime",
                         "tensorrt", "cuda-python", "onnxruntime_providers", "cuda_device"}
    assert set(info["cpu"]) == {"model", "cpus", "isa"} and set(info["cpu"]["isa"]) <= set(environment.ISA)
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
                          "dinov2-extractor", "first-stage"]
    assert {n: (r["kind"], r["loop"], r["baseline"]) for n, r in rows.items()} == {
        "ames": ("pair-wise", "ames", False), "ames-dist": ("pair-wise", "ames", False),
        "ames-encoder": ("encoder", None, False), "ames-scorer": ("pair-wise", "ames-store", False),
        "ames-dist-encoder": ("encoder", None, False), "ames-dist-scorer": ("pair-wise", "ames-store", False),
        "raml": ("image", None, False), "rrt": ("pair-wise", None, True), "cvnet-rerank": ("pair-wise", None, True),
        "cvnet-backbone": ("image", None, True), "r2former": ("pair-wise", None, True),
        "locore": ("list-wise", "locore", False), "locore-small": ("list-wise", "locore", False),
        "dinov2-extractor": ("extractor", None, False), "first-stage": ("first-stage", None, False)}
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
    assert rows["first-stage"]["parameters"] == "0"  # a product and a top-k
    assert rows["ames"]["released_config"]["local_dim"] == 768
    assert rows["raml"]["released_config"]["output_dim"] == 512
    assert "{'state': state_dict}" in rows["ames"]["checkpoint"]
    assert rows["locore-small"]["released_config"]["keep_layers"] == 6


def test_unknown_command_fails_with_usage():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice: 'frobnicate'" in out.stderr


# --- path flags: every one declared as what the command reads or writes --------------------------------

def _commands(parser, prefix=()):
    """(sub-command words, its parser) for every runnable sub-command."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*prefix, name))


def test_every_string_flag_is_declared_an_input_an_output_or_a_value():
    """A string-valued flag (no choices, not a number) names a path or not: each is declared either way, so
    the check that an output is never an input reads every path the command takes."""
    import argparse

    from rerankrt.cli import build_parser
    from rerankrt.cli.paths import ROLES

    undeclared, paths = [], {}
    for words, parser in _commands(build_parser()):
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction) or a.nargs == 0 or a.choices is not None or \
                    a.type not in (None, str):
                continue
            role = getattr(a, "role", None)
            flag = a.option_strings[0] if a.option_strings else a.dest
            if role not in ROLES:
                undeclared.append(f"{' '.join(words)} {flag}")
            paths[(" ".join(words), flag)] = role
    assert undeclared == []
    assert len({w for w, _ in paths}) == 15  # every sub-command but info and models takes one
    for command in ("rerank", "eval"):
        for flag in ("--checkpoint", "--artifacts", "--data", "--nn", "--index"):
            assert paths[(command, flag)] == "input", (command, flag)
        assert paths[(command, "--out")] == "output" and paths[(command, "--desc")] == "value"
    assert paths[("eval", "--engine")] == "input" and paths[("bench", "--compare")] == "input"
    for flag in ("--index", "--images", "--queries", "--artifacts", "--checkpoint", "--detector",
                 "--rerank-checkpoint"):
        assert paths[("search", flag)] == "input", flag  # the query sources, though exclusive, are declared too
    assert paths[("index build", "--out")] == paths[("triton", "--out")] == paths[("data synth", "out")] == "output"


@pytest.mark.parametrize(("argv", "message"), [
    (["rerank", "--model", "ames", "--backend", "torch", "--checkpoint", "X.pt", "--data", "d", "--out", "X.pt",
      "--force"], "rerankrt rerank: error: --out: X.pt is an input of this run (X.pt); choose another output"),
    (["eval", "--data", "d", "--dataset", "synth", "--model", "ames", "--engine", "G.onnx", "--out", "G.onnx",
      "--force"], "rerankrt eval: error: --out: G.onnx is an input of this run (G.onnx); choose another output"),
    (["rerank", "--model", "ames", "--data", "d", "--nn", "nn.pkl", "--out", "d/nn.pkl", "--force"],
     "rerankrt rerank: error: --out: d/nn.pkl is an input of this run (d/nn.pkl); choose another output"),
    (["index", "build", "--model", "ames", "--data", "d", "--checkpoint", "d/ck.pt", "--out", "d", "--force"],
     "rerankrt index: error: --out: d holds an input of this run (d/dinov2_gallery_local.hdf5); choose another "
     "output"),
    (["triton", "--artifacts", "art", "--store", "art/s", "--out", "art/s", "--force"],
     "rerankrt triton: error: --out: art/s is an input of this run (art/s); choose another output"),
])
def test_an_output_is_never_an_input(argv, message, tmp_path, monkeypatch, capsys):
    """Checked from the parser's declarations before the command runs, --force or not; nothing is touched."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    for name in ("X.pt", "G.onnx", "d/nn.pkl"):
        (tmp_path / name).write_bytes(b"the user's file")
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message
    assert all((tmp_path / n).read_bytes() == b"the user's file" for n in ("X.pt", "G.onnx", "d/nn.pkl"))


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "raml", "--parts", "encoder"], "--parts: raml has no encoder (only ames, ames-dist serve a store)"),
    (["export", "ames", "--parts", "whole,decoder"], "--parts: expected some of whole, encoder, scorer, got decoder"),
    (["export", "ames", "--parts", "encoder", "--profile", "pairs:1,10,20"],
     "--profile: no graph of ames-encoder has a dimension pairs; known: descriptors, images"),
])
def test_export_parts(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "art")]) == 2
    assert capsys.readouterr().err.strip() == f"rerankrt export: error: {message}"
    assert not (tmp_path / "art").exists()
