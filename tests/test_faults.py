"""Fault injection: every hostile or careless case of `fault_cases` ends in one clear error (or, where
the input is fine, in success) with every file that existed before byte-identical; random corruptions
of the file formats raise rerankrt's own errors and nothing else; a process killed while writing leaves
the previous outputs intact, and the next run clears its staging files."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from fault_cases import CASES, KILLER, prepare_base, run_case, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerankrt.cli import main
from rerankrt.core.atomic import SUFFIX
from rerankrt.core.errors import DescriptorFileError, ModelFileError
from rerankrt.data.descriptors import LocalDescriptorFile, read_gnd, read_nn
from rerankrt.runtime.sidecar import check_sidecar

pytest.importorskip("torch")
pytest.importorskip("tritonclient", reason="the Triton cases need tritonclient (rerankrt[serve], in the dev extra)")

CLI = [sys.executable, "-m", "rerankrt"]


@pytest.fixture(scope="module")
def base(released_ames, tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    prepare_base(root, CLI, ames=released_ames)
    return root


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, base, tmp_path):
    if case.cuda_free:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is here: the command is right")
    kind, code, text = run_case(case, base, tmp_path / "w", main)
    assert (kind, code) == ("clear", case.code), text


# --- the formats under random corruption ------------------------------------------------------------

FORMAT_ERRORS = (DescriptorFileError,)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 50)),
                         min_size=1, max_size=4), min_size=2, max_size=2),
       st.integers(1, 40))
def test_shortlists(tmp_path, rows, num_db):
    """[2, 1, K] files of any numbers: read exactly when the similarities are finite and the indices whole,
    in range and distinct, else a DescriptorFileError naming the file."""
    k = min(len(r) for r in rows)
    arr = np.array([[r[:k]] for r in rows], dtype=np.float64)
    path = tmp_path / "nn.pkl"
    path.write_bytes(pickle.dumps(arr))
    sims, idx = arr[0, 0], arr[1, 0]
    valid = ((np.abs(sims) <= np.finfo(np.float32).max).all() and np.isfinite(idx).all()
             and (idx == np.round(idx)).all() and (idx >= 0).all() and (idx < num_db).all()
             and len(set(idx.tolist())) == k)
    if valid:
        got_sims, got_idx = read_nn(path, num_db=num_db)
        np.testing.assert_array_equal(got_idx[0], idx.astype(np.int64))
        np.testing.assert_allclose(got_sims[0], sims.astype(np.float32), rtol=0)
    else:
        with pytest.raises(DescriptorFileError, match=str(path)):
            read_nn(path, num_db=num_db)


index_lists = st.one_of(st.lists(st.one_of(st.integers(-2, 12), st.floats(-2, 12)), max_size=4),
                        st.text(max_size=3), st.none(), st.integers())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.dictionaries(st.sampled_from(["easy", "hard", "junk", "bbx", "x"]), index_lists, max_size=4),
                 st.lists(st.integers(), max_size=3), st.none()))
def test_ground_truth_entries(tmp_path, entry):
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps({"gnd": [entry], "imlist": [f"i{n}" for n in range(10)], "qimlist": ["q"]}))
    try:
        gnd = read_gnd(path)["gnd"][0]
    except FORMAT_ERRORS as e:
        assert str(path) in str(e)
        return
    for key in ("easy", "hard", "junk"):
        if key in gnd:
            assert gnd[key].dtype == np.int64 and ((gnd[key] >= 0) & (gnd[key] < 10)).all()
            assert np.array_equal(gnd[key], np.asarray(entry[key], dtype=np.float64))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["dataset", "group", "int", "2d", "narrow", "virtual-missing"]))
def test_descriptor_files(tmp_path, kind):
    path = tmp_path / f"{kind}.hdf5"
    with h5py.File(path, "w") as f:
        if kind == "dataset":
            f["features"] = np.zeros((2, 3, 9), np.float32)
        elif kind == "group":
            f.create_group("features")
        elif kind == "int":
            f["features"] = np.zeros((2, 3, 9), np.int32)
        elif kind == "2d":
            f["features"] = np.zeros((2, 9), np.float32)
        elif kind == "narrow":
            f["features"] = np.zeros((2, 3, 5), np.float32)
        else:
            layout = h5py.VirtualLayout((2, 3, 9), np.float32)
            layout[:] = h5py.VirtualSource(str(tmp_path / "gone.hdf5"), "features", (2, 3, 9))
            f.create_virtual_dataset("features", layout)
    if kind == "dataset":
        with LocalDescriptorFile(path, dim=4) as local:
            assert (local.num_images, local.topk, local.dim) == (2, 3, 4)
        return
    with pytest.raises(DescriptorFileError, match=str(path)):
        LocalDescriptorFile(path)


SIDECAR = {"format": "rerankrt-onnx/2", "model": "ames", "kind": "pair-wise", "loop": "ames", "config": {},
           "files": {"fp32": "ames.onnx"}, "opset": 20, "checkpoint": None,
           "inputs": [{"name": "x", "dtype": {"fp32": "float32"}, "shape": ["pairs", 4]}],
           "outputs": [{"name": "y", "dtype": {"fp32": "float32"}, "shape": ["pairs"]}],
           "profiles": {"pairs": {"min": 1, "opt": 2, "max": 3}}}


def _paths(meta, prefix=()):
    for key, value in (meta.items() if isinstance(meta, dict) else enumerate(meta)):
        yield (*prefix, key)
        if isinstance(value, (dict, list)):
            yield from _paths(value, (*prefix, key))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_sidecar_edits(data):
    """A sidecar with any one value replaced or removed: accepted, or a ModelFileError; never a KeyError."""
    meta = json.loads(json.dumps(SIDECAR))
    path = data.draw(st.sampled_from(list(_paths(meta))))
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(st.one_of(st.none(), st.integers(-2, 5), st.text(max_size=3),
                                               st.lists(st.integers(), max_size=2)))
    try:
        check_sidecar(meta, "x.json")
    except ModelFileError as e:
        assert str(e).startswith("x.json: ")


# --- outputs ------------------------------------------------------------------------------------------

def test_outputs_get_the_umask_mode(tmp_path):
    import os

    from rerankrt.core.atomic import atomic_output

    previous = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640


def test_every_backend_refuses_a_nan_it_made():
    """Finite feeds, a NaN logit (weights, an FP16 overflow): OutputError naming the model and precision."""
    from rerankrt.core.errors import OutputError
    from rerankrt.runtime.feeds import Backend

    class Broken(Backend):
        def infer_impl(self, feeds):
            return {"y": np.array([0.5, np.nan, np.inf], np.float32)}

    with Broken("broken", SIDECAR, "fp32") as backend, pytest.raises(OutputError) as e:
        backend.infer({"x": np.zeros((3, 4), np.float32)})
    assert str(e.value) == ("ames (fp32) returned 2 NaN or infinite values in y for finite inputs (its weights, or an "
                            "FP16 overflow)")


# --- killed while writing ----------------------------------------------------------------------------

@pytest.mark.parametrize(("function", "argv"), [
    ("os.replace", ["export", "ames-encoder", "--out", "art", "--precision", "fp32"]),
    ("shutil.copyfile", ["triton", "--artifacts", "art", "--out", "repo", "--force", "--precision", "fp32",
                         "--models", "ames"]),
    ("os.fsync", ["index", "build", "--model", "ames-dist", "--data", "data", "--out", "store", "--backend", "torch",
                  "--force"]),
    ("os.replace", ["rerank", "--model", "ames", "--backend", "ort", "--artifacts", "art", "--data", "data",
                    "--out", "data/nn_ames.pkl", "--shortlist", "20", "--force"]),
])
def test_a_kill_in_mid_write_loses_nothing(base, tmp_path, function, argv):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(base, work)
    if argv[0] == "index":  # a store to replace
        assert main_in(work, ["index", "build", "--model", "ames-dist", "--data", "data", "--out", "store",
                              "--backend", "torch"]) == 0
    if argv[0] == "rerank":
        (work / "data" / "nn_ames.pkl").write_bytes(b"an earlier run")
    before = snapshot(work)
    killed = subprocess.run([sys.executable, "-c", KILLER, function, *argv], cwd=work, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    after = snapshot(work)
    assert {k: v for k, v in after.items() if SUFFIX not in k} == before  # every earlier output as it was
    leftovers = list(work.rglob(f"*{SUFFIX}"))
    assert leftovers, "the killed run left no staging files: the kill came too early to test anything"
    if argv[0] == "export":
        return  # the next export would clear them as the other writers' next runs do; it takes half a minute
    done = subprocess.run([*CLI, *argv], cwd=work, capture_output=True)
    assert done.returncode in (0, 1), done.stderr.decode()  # validate may report an FP16-less export
    assert not [p for p in work.rglob(f"*{SUFFIX}")]  # the next run cleared them


def main_in(work: Path, argv: list[str]) -> int:
    import os

    cwd = os.getcwd()
    os.chdir(work)
    try:
        return main(argv)
    finally:
        os.chdir(cwd)
