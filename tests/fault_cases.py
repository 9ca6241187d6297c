"""Hostile and careless input, as a new user gives it: one case per way of losing data, being silently
wrong, ending in a traceback or misleading, each a `rerankrt` command on copies of a prepared dataset,
exported graph and Triton repository.

`run_case` classifies what happened the way the robustness issue counted it: "data lost" (a file that
existed before changed or vanished), "traceback" (an exception `main` did not turn into one error
line), "silently wrong" (exit 0 where the input is bad), "misleading" (an error, but not one that names
the problem), else "clear"; "no such option" where the rerankrt run lacks the command or flag (an older
one). The cases use only numpy, h5py, pickle, json and torch to make their files,
so `scripts/fault_survey.py` runs them against any rerankrt, an older one included.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

#: the dataset every case starts from (small: 3 queries, 40 database images)
SYNTH = ["--queries", "3", "--database", "40"]


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    message: str  #: a regular expression the error output must match
    setup: Callable[[Path], None] = lambda w: None
    code: int = 2  #: the exit code expected (validate and triton --check report failures with 1)
    writes: tuple[str, ...] = field(default=())  #: files the command is meant to (re)write
    cuda_free: bool = False  #: a bad input only where torch sees no CUDA device


def prepare_base(base: Path, cli: list[str], env: dict | None = None, ames: Path | None = None) -> None:
    """The dataset, the exported AMES graphs (`rerankrt export ames`, or the files of such an export in
    `ames`) and their Triton repository (FP32) every case copies."""
    if ames is not None:
        shutil.copytree(ames, base / "art")
    exports = [] if ames is not None else [["export", "ames", "--out", "art"]]
    for argv in (["data", "synth", "data", *SYNTH], *exports,
                 ["triton", "--artifacts", "art", "--out", "repo", "--precision", "fp32", "--models", "ames"]):
        subprocess.run([*cli, *argv], cwd=base, check=True, capture_output=True, env=env)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_case(case: Case, base: Path, work: Path, main: Callable[[list[str]], int]) -> tuple[str, int, str]:
    """(class, exit code, error output) of `case` run in-process by `main` in a copy of `base`."""
    shutil.copytree(base, work)
    case.setup(work)
    before = snapshot(work)
    err = io.StringIO()  # stdout too: validate and triton --check print their reports there
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            try:
                code = main(case.argv)
            except SystemExit as e:  # argparse
                code = int(e.code or 0)
            except Exception as e:  # noqa: BLE001  (what the classification is for)
                return "traceback", -1, f"{type(e).__name__}: {e}"
    finally:
        os.chdir(cwd)
    after = snapshot(work)
    changed = [k for k, v in before.items() if after.get(k) != v and k not in case.writes]
    text = err.getvalue()
    if re.search(r"error: (unrecognized arguments|argument COMMAND: invalid choice)", text):
        return "no such option", code, text
    if changed:
        return "data lost", code, f"changed or removed: {changed[:3]}"
    if code == 0 and case.code != 0:
        return "silently wrong", code, text
    if code != case.code or not re.search(case.message, text):
        return "misleading", code, text
    return "clear", code, text


# --- file surgery ------------------------------------------------------------------------------------

def _one(w: Path, pattern: str) -> Path:
    return next(w.glob(pattern))


def _nn(w: Path, edit: Callable[[np.ndarray], None]) -> None:
    path = w / "data" / "nn_superglobal.pkl"
    arr = np.asarray(pickle.loads(path.read_bytes()), dtype=np.float64)
    edit(arr)
    path.write_bytes(pickle.dumps(arr.astype(np.float32 if np.abs(arr).max() < 1e30 else np.float64)))


def _gnd(w: Path, edit: Callable[[dict], None]) -> None:
    path = w / "data" / "gnd_synth.pkl"
    data = pickle.loads(path.read_bytes())
    edit(data)
    path.write_bytes(pickle.dumps(data))


def _sidecar(w: Path, edit: Callable[[dict], None], path: str = "art/ames.json") -> None:
    meta = json.loads((w / path).read_text())
    edit(meta)
    (w / path).write_text(json.dumps(meta))


def _config(w: Path, model: str, edit: Callable[[str], str]) -> None:
    path = w / "repo" / model / "config.pbtxt"
    path.write_text(edit(path.read_text()))


def _ames_checkpoint(w: Path, edit: Callable[[dict], None]) -> None:
    import torch

    from rerankrt.models import load_model

    sd = load_model("ames").state_dict()
    edit(sd)
    torch.save({"state": sd}, w / "ames.pt")


def _features_group(w: Path) -> None:
    path = w / "data" / "dinov2_query_local.hdf5"
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_group("features")


def _nan_descriptor(w: Path) -> None:
    with h5py.File(w / "data" / "dinov2_query_local.hdf5", "r+") as f:
        f["features"][1, 0, 5] = np.nan  # columns 5…: the descriptor


def _shorter_globals(w: Path) -> None:
    path = _one(w / "data", "*gallery_global.pt")
    path.write_bytes(path.read_bytes()[: 30 * 768 * 4])


def _version_ten(w: Path) -> None:
    model = w / "repo" / "ames"
    shutil.copytree(model / "1", model / "9")
    (model / "10").mkdir()


RERANK = ["rerank", "--model", "ames", "--backend", "ort", "--artifacts", "art", "--data", "data", "--shortlist", "20"]
EVAL = ["eval", "--model", "ames", "--backend", "ort", "--artifacts", "art", "--data", "data", "--dataset", "synth",
        "--shortlist", "20"]
TORCH_AMES = ["rerank", "--model", "ames", "--backend", "torch", "--data", "data", "--out", "o.pkl",
              "--shortlist", "20"]

CASES = [
    # --- nothing the user has is destroyed -----------------------------------------------------------
    Case("triton --out is the artifacts folder",
         ["triton", "--artifacts", "art", "--out", "art", "--force", "--precision", "fp32"],
         r"--out: art (is not a repository rerankrt wrote|is an input)"),
    Case("triton --out . (the working folder)", ["triton", "--artifacts", "art", "--out", ".", "--force",
                                                 "--precision", "fp32"],
         r"--out: \. (is not a repository rerankrt wrote|holds an input)"),
    Case("triton --out holds the artifacts", ["triton", "--artifacts", "repo/art", "--out", "repo", "--force",
                                              "--precision", "fp32"],
         r"--out: repo holds an input of this run", setup=lambda w: shutil.copytree(w / "art", w / "repo" / "art")),
    Case("triton --force over its own repository", ["triton", "--artifacts", "art", "--out", "repo", "--force",
                                                    "--precision", "fp32", "--models", "ames"],
         r"", code=0, writes=("repo/.rerankrt-repository", "repo/ames/config.pbtxt", "repo/ames/1/model.json",
                              "repo/ames/1/model.onnx", "repo/ames_rerank/config.pbtxt",
                              "repo/ames_rerank/1/model.py", "repo/ames_rerank/1/target.json")),
    Case("triton --force over its repository holding a file of the user's",
         ["triton", "--artifacts", "art", "--out", "repo", "--force", "--precision", "fp32", "--models", "ames"],
         r"--out: repo holds what is not a model folder with a config.pbtxt \(notes.txt\); refusing",
         setup=lambda w: (w / "repo" / "notes.txt").write_text("mine")),
    Case("rerank --out is the gallery descriptors", [*RERANK, "--out", "data/dinov2_gallery_local.hdf5", "--force"],
         r"--out: data/dinov2_gallery_local.hdf5 is an input of this run"),
    Case("rerank --out exists", [*RERANK, "--out", "o.pkl"], r"--out: o.pkl exists \(pass --force",
         setup=lambda w: (w / "o.pkl").write_bytes(b"an earlier run")),
    Case("eval --out is the ground truth", [*EVAL, "--out", "data/gnd_synth.pkl", "--force"],
         r"--out: data/gnd_synth.pkl is an input of this run"),
    Case("data synth over a dataset", ["data", "synth", "data", *SYNTH], r"data exists and is not empty"),
    Case("export over earlier graphs", ["export", "ames", "--out", "art", "--precision", "fp32"],
         r"--out: art/ames.onnx exists \(pass --force"),
    Case("index build --out holds its input", ["index", "build", "--model", "ames", "--data", "data", "--out", "data",
                                               "--artifacts", "art", "--backend", "ort", "--force"],
         r"--out: data holds an input of this run"),
    Case("shortlist --out is a global file", ["shortlist", "--data", "data", "--out", "dinov2_query_global.pt",
                                              "--force"], r"is an input of this run"),
    Case("bench --out holds an earlier run", ["bench", "--models", "raml", "--out", "b"],
         r"--out: b/results.json exists \(pass --force",
         setup=lambda w: (w / "b").mkdir() or (w / "b" / "results.json").write_text("{}")),
    # --- nothing silently wrong ------------------------------------------------------------------------
    Case("shortlist repeats one image", [*RERANK, "--out", "o.pkl"], r"lists database image \d+ more than once",
         setup=lambda w: _nn(w, lambda a: a[1].__setitem__(..., 3))),
    Case("shortlist similarity NaN", [*RERANK, "--out", "o.pkl"], r"similarity \(row 0\) of query 0 is nan",
         setup=lambda w: _nn(w, lambda a: a[0].__setitem__((0, 2), np.nan))),
    Case("shortlist index 1e20", [*RERANK, "--out", "o.pkl"], r"database index 1\d{20} is out of range",
         setup=lambda w: _nn(w, lambda a: a[1].__setitem__((0, 0), 1e20))),
    Case("ground truth float index", [*EVAL], r"query 0 'easy' holds 1.5, expected whole image indices",
         setup=lambda w: _gnd(w, lambda g: g["gnd"][0].__setitem__("easy", [1.5, 2.0]))),
    Case("ground truth entry is a list", [*EVAL], r"query 1 is a list, expected a dict",
         setup=lambda w: _gnd(w, lambda g: g["gnd"].__setitem__(1, [1, 2]))),
    Case("sidecar dimension without a profile", [*RERANK, "--out", "o.pkl"],
         r"ames.json: inputs q_desc: dimension 'foo' has no profile",
         setup=lambda w: _sidecar(w, lambda m: m["inputs"][0].__setitem__("shape", ["foo", "query_descriptors", 768]))),
    Case("sidecar unknown dtype", [*RERANK, "--out", "o.pkl"], r"dtype at fp32 'float64'",
         setup=lambda w: _sidecar(w, lambda m: m["inputs"][0]["dtype"].__setitem__("fp32", "float64"))),
    Case("sidecar without profiles", [*RERANK, "--out", "o.pkl"], r"profiles: missing",
         setup=lambda w: _sidecar(w, lambda m: m.pop("profiles"))),
    Case("sidecar without inputs", [*RERANK, "--out", "o.pkl"], r"inputs: empty",
         setup=lambda w: _sidecar(w, lambda m: m.__setitem__("inputs", []))),
    Case("sidecar of another export", [*RERANK, "--out", "o.pkl"], r"the graph's inputs .* are not its sidecar's",
         setup=lambda w: _sidecar(w, lambda m: m["inputs"][0].__setitem__("name", "query"))),
    Case("validate: the FP16 graph is missing", ["validate", "art/ames.onnx"],
         r"ames.fp16.onnx: listed in the sidecar, missing", code=1,
         setup=lambda w: (w / "art" / "ames.fp16.onnx").unlink()),
    Case("validate --checkpoint that does not exist", ["validate", "art/ames.onnx", "--checkpoint", "nope.pt"],
         r"--checkpoint nope.pt: the graphs were exported with random weights", code=1,
         setup=lambda w: (w / "art" / "ames.fp16.onnx").unlink()),  # FP32 alone: quicker, the same check
    Case("triton --check preferred batch above max", ["triton", "--check", "repo"],
         r"preferred_batch_size: 9999, expected 1…400", code=1,
         setup=lambda w: _config(w, "ames", lambda t: t.replace("preferred_batch_size: 100",
                                                                "preferred_batch_size: 9999"))),
    Case("triton --check instance count 0", ["triton", "--check", "repo"], r"instance_group 0: count 0", code=1,
         setup=lambda w: _config(w, "ames", lambda t: t.replace("count: 1", "count: 0"))),
    Case("triton --check loop batch -7", ["triton", "--check", "repo"], r"parameters batch: '-7'", code=1,
         setup=lambda w: _config(w, "ames_rerank", lambda t: re.sub(r'(key: "batch"\s+value \{\s+string_value: )"\d+"',
                                                                     r'\1"-7"', t))),
    Case("triton --check serves version 10 after 9", ["triton", "--check", "repo"], r"ames/10/model.onnx is missing",
         code=1, setup=_version_ten),
    Case("LOCORE globals shorter than the gallery", ["rerank", "--model", "locore-small", "--backend", "torch",
                                                     "--data", "data", "--out", "o.pkl", "--shortlist", "20"],
         r"30 global vectors for the 40 images", setup=_shorter_globals),
    Case("checkpoint with NaN weights", [*TORCH_AMES, "--checkpoint", "ames.pt"],
         r"NaN or infinite values in 1 tensor\(s\): mtc_token",
         setup=lambda w: _ames_checkpoint(w, lambda sd: sd["mtc_token"].__setitem__(0, float("nan")))),
    # --- one clear error, no traceback ---------------------------------------------------------------
    Case("truncated graph", [*RERANK, "--out", "o.pkl"], r"art/ames.ort.onnx: ONNX Runtime cannot load it",
         setup=lambda w: (w / "art/ames.ort.onnx").write_bytes((w / "art/ames.ort.onnx").read_bytes()[:5000])),
    Case("missing graph", [*RERANK, "--out", "o.pkl"], r"no graph art/ames.onnx: export it",
         setup=lambda w: (w / "art/ames.onnx").unlink()),
    Case("sidecar without config", [*RERANK, "--out", "o.pkl"], r"config: missing",
         setup=lambda w: _sidecar(w, lambda m: m.pop("config"))),
    Case("checkpoint missing a key its dimensions come from", [*TORCH_AMES, "--checkpoint", "ames.pt"],
         r"missing keys \(1\): decoder.layers.0.linear1.weight",
         setup=lambda w: _ames_checkpoint(w, lambda sd: sd.pop("decoder.layers.0.linear1.weight"))),
    Case("triton --check binary config", ["triton", "--check", "repo"], r"not a readable ModelConfig", code=1,
         setup=lambda w: (w / "repo/ames/config.pbtxt").write_bytes(bytes(range(256)))),
    Case("features is a group", [*RERANK, "--out", "o.pkl"], r"expected a dataset 'features' .*found a group",
         setup=_features_group),
    Case("NaN in a query descriptor, through ONNX Runtime", [*RERANK, "--out", "o.pkl"],
         r"dinov2_query_local.hdf5: NaN or infinite descriptors in images \[1\]", setup=_nan_descriptor),
    Case("torch --device cuda on a machine without one", [*TORCH_AMES, "--device", "cuda"],
         r"device cuda: torch .* sees no CUDA device here", cuda_free=True),
    Case("torch --device nosuch", [*TORCH_AMES, "--device", "nosuch"], r"device: expected cpu or cuda"),
    Case("data synth --database 5", ["data", "synth", "new", "--database", "5"], r"--database: .* at least 48"),
    # --- misleading before ----------------------------------------------------------------------------
    Case("checkpoint missing a key in layer 1", [*TORCH_AMES, "--checkpoint", "ames.pt"],
         r"missing keys \(1\): decoder.layers.1.norm1.weight",
         setup=lambda w: _ames_checkpoint(w, lambda sd: sd.pop("decoder.layers.1.norm1.weight"))),
    Case("eval --out in a folder that does not exist yet", [*EVAL, "--out", "new/eval.json"], r"", code=0),
]


#: `python -c KILLER FUNCTION ARGV…` runs rerankrt's CLI with FUNCTION (e.g. `os.replace`) replaced by a
#: SIGKILL of the process: a kill in mid-write, at the first call
KILLER = """
import importlib, os, signal, sys
module, name = sys.argv[1].rsplit(".", 1)
setattr(importlib.import_module(module), name, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
from rerankrt.cli import main
sys.exit(main(sys.argv[2:]))
"""


def main_in(path: Path | None = None) -> Callable[[list[str]], int]:
    """rerankrt's `main`, from the installed package or from `path` (an older rerankrt installed with
    `pip install --no-deps --target`)."""
    if path is not None:
        sys.path.insert(0, str(path))
    from rerankrt.cli import main

    return main
