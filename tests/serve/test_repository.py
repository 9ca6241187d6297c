"""`rerankrt triton`: the repository generated from exported graphs validates against Triton's schema and
the sidecars; broken configs are reported with file and field; the BLS loop models, run through a
stand-in for Triton's `triton_python_backend_utils`, give the runtime's own results."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tiny import LOCORE_TINY

from rerankrt.cli import main
from rerankrt.core.errors import ModelFileError
from rerankrt.runtime import AmesReranker, LocoreReranker, OrtBackend
from rerankrt.serve.check import check_repository
from rerankrt.serve.repository import write_repository

pytest.importorskip("torch")
pytest.importorskip("tritonclient.grpc", reason="Triton configs need tritonclient[grpc] (rerankrt[serve])")



@pytest.fixture(scope="module")
def artifacts(released_ames, tmp_path_factory):
    from rerankrt.export.onnx_export import export_model

    out = tmp_path_factory.mktemp("artifacts")
    for f in released_ames.iterdir():
        shutil.copyfile(f, out / f.name)
    export_model("locore", out_dir=out, **LOCORE_TINY)
    (out / "eval_ames.json").write_text("{}")  # other JSON files in the folder are not models
    return out


@pytest.fixture(scope="module")
def repo(artifacts, tmp_path_factory):
    return write_repository(artifacts, tmp_path_factory.mktemp("serve") / "repo")


def test_repository_layout_and_configs(repo):
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    assert files == [".rerankrt-repository", "ames/1/model.json", "ames/1/model.onnx", "ames/config.pbtxt",
                     "ames_rerank/1/model.py", "ames_rerank/1/target.json", "ames_rerank/config.pbtxt",
                     "locore/1/model.json", "locore/1/model.onnx", "locore/config.pbtxt",
                     "locore_rerank/1/model.py", "locore_rerank/1/target.json", "locore_rerank/config.pbtxt"]
    assert check_repository(repo) == []
    ames, locore = _config(repo, "ames"), _config(repo, "locore")
    assert (ames.platform, ames.max_batch_size, locore.max_batch_size) == ("onnxruntime_onnx", 400, 4)
    assert [(t.name, list(t.dims)) for t in ames.input] == [("q_desc", [-1, 768]), ("q_mask", [-1]),
                                                            ("db_desc", [-1, 768]), ("db_mask", [-1])]
    assert [t.data_type for t in ames.input] == [_dtype("TYPE_FP16"), _dtype("TYPE_BOOL")] * 2
    logits = ames.output[0]
    assert (logits.name, list(logits.dims), logits.HasField("reshape"), list(logits.reshape.shape)) == \
        ("logits", [1], True, [])
    assert list(ames.dynamic_batching.preferred_batch_size) == [100] and not locore.HasField("dynamic_batching")
    assert ames.dynamic_batching.max_queue_delay_microseconds == 100
    warm = ames.model_warmup[0]
    assert warm.batch_size == 100 and list(warm.inputs["q_desc"].dims) == [600, 768]
    assert warm.inputs["q_mask"].zero_data and warm.inputs["q_desc"].zero_data  # finite: random bytes hold NaN
    assert [(g.kind, g.count, list(g.profile)) for g in ames.instance_group] == [(_kind("KIND_GPU"), 1, [])]
    loop = _config(repo, "ames_rerank")
    assert (loop.backend, loop.max_batch_size) == ("python", 0)
    assert {k: v.string_value for k, v in loop.parameters.items()} == \
        {"loop": "ames", "target_model": "ames", "lambda": "0.5", "gamma": "0.2", "batch": "100",
         "max_shortlist": "1600"}
    params = {k: v.string_value for k, v in _config(repo, "locore_rerank").parameters.items()}
    assert params == {"loop": "locore", "target_model": "locore", "shortlist": "400", "window": "17",
                      "stride": "17", "order": "end-to-start", "alpha": "0.5", "temperature": "0.1",
                      "max_shortlist": "1600"}
    adapter = (repo / "ames_rerank/1/model.py").read_text()
    assert "from rerankrt.serve.triton_bls import AmesRerankModel as TritonPythonModel" in adapter


def test_options_precision_and_engines(artifacts, tmp_path):
    out = write_repository(artifacts, tmp_path / "r", precision="fp32", models=["ames"], max_batch=64, instances=2)
    assert sorted(p.name for p in out.iterdir()) == [".rerankrt-repository", "ames", "ames_rerank"]
    config = _config(out, "ames")
    assert config.max_batch_size == 64 and config.input[0].data_type == _dtype("TYPE_FP32")
    assert [(g.count) for g in config.instance_group] == [2] and config.model_warmup[0].batch_size == 64
    assert _config(out, "ames_rerank").parameters["batch"].string_value == "64"
    # An engine of the chosen precision is served instead of its graph, on the engine's profile 0.
    # (The plan's bytes are not read: only the repository's file selection is tested here.)
    engines = tmp_path / "engines"
    shutil.copytree(artifacts, engines)
    (engines / "ames.fp16.plan").write_bytes(b"engine")
    (engines / "ames.fp16.plan.json").write_text(json.dumps(
        {"format": "rerankrt-plan/2", "model": "ames", "precision": "fp16", "profiles": [{}], "tensorrt": "10.3.0",
         "onnx": {"sidecar": json.loads((artifacts / "ames.json").read_text())}}))
    out = write_repository(engines, tmp_path / "trt", models=["ames"])
    config = _config(out, "ames")
    assert (config.platform, list(config.instance_group[0].profile)) == ("tensorrt_plan", ["0"])
    assert (out / "ames/1/model.plan").read_bytes() == b"engine" and (out / "ames/1/model.plan.json").is_file()


def test_bad_requests_are_refused_and_nothing_is_half_written(artifacts, tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match=r"^models: no fp16 graph or engine in .* for raml \(export them"):
        write_repository(artifacts, tmp_path / "r", models=["ames", "raml"])
    with pytest.raises(ModelFileError, match=r"^artifacts: no exported fp16 models in "):
        write_repository(tmp_path, tmp_path / "r")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match=r"exists and is not empty \(pass `force` to replace it\)"):
        write_repository(artifacts, tmp_path / "full")
    monkeypatch.setattr("rerankrt.serve.repository.check_repository", lambda repo: ["a/config.pbtxt: broken"])
    with pytest.raises(ModelFileError, match="does not validate:\n  a/config.pbtxt: broken"):
        write_repository(artifacts, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no repository, no staging folder


def test_broken_configs_are_reported_with_file_and_field(repo, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    ames = broken / "ames/config.pbtxt"
    ames.write_text(ames.read_text().replace("max_batch_size: 400", "max_batch: 400"))
    locore = broken / "locore/config.pbtxt"
    text = locore.read_text().replace("dims: 5\n", "dims: 7\n", 1).replace("max_batch_size: 4", "max_batch_size: 8")
    locore.write_text(text)
    (broken / "locore_rerank/1/model.py").unlink()
    assert check_repository(broken) == [
        f'{ames}: not a readable ModelConfig in text format (3:1 : Message type "inference.ModelConfig" has no '
        f'field named "max_batch".)',
        f"{broken / 'ames_rerank/config.pbtxt'}: parameters target_model: 'ames' has no valid config.pbtxt",
        f"{locore}: max_batch_size: 8, expected 1…4 (the profile's maximum)",
        f"{locore}: input q_local: dims [7, 32], the sidecar says [5, 32]",
        f"{broken / 'locore_rerank/config.pbtxt'}: {broken / 'locore_rerank/1/model.py'} is missing",
    ]
    assert main(["triton", "--check", str(broken)]) == 1
    assert main(["triton", "--check", str(repo)]) == 0


def test_the_python_form_has_the_production_forms_name_io_and_batching(repo, artifacts, tmp_path):
    """`--platform python` (and what serve makes of a production repository for a server without an
    onnxruntime backend): the same configs but the backend, model.py beside the graph; both forms check."""
    from rerankrt.serve.repository import python_form

    written = write_repository(artifacts, tmp_path / "py", platform="python")
    converted = python_form(repo, tmp_path / "converted")
    assert converted is not None and python_form(written, tmp_path / "again") is None  # nothing left to convert
    for form in (written, converted):
        assert check_repository(form) == []
        for name in ("ames", "locore"):
            production, python = _config(repo, name), _config(form, name)
            assert (python.platform, python.backend) == ("", "python")
            assert [g.kind for g in python.instance_group] == [_kind("KIND_CPU")]
            for field in ("name", "max_batch_size", "input", "output", "dynamic_batching", "model_warmup"):
                assert getattr(python, field) == getattr(production, field), (name, field)
            assert (form / name / "1/model.onnx").is_file()
            assert "import GraphModel as TritonPythonModel" in (form / name / "1/model.py").read_text()
    side = json.loads((repo / "ames/1/model.json").read_text())
    assert (side["files"], side["precisions"]) == ({"fp16": "model.onnx"}, ["fp16"])  # the served file's alone
    with pytest.raises(ValueError, match=r"platform: expected one of production, python, got 'onnx'"):
        write_repository(artifacts, tmp_path / "x", platform="onnx")


def test_check_validates_the_warm_up_against_the_inputs(repo, tmp_path):
    """A warm-up sample of the wrong dims, type or inputs is reported: Triton would refuse to load the model."""
    from google.protobuf import text_format

    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    path = broken / "ames/config.pbtxt"
    config = _config(broken, "ames")
    warm = config.model_warmup[0]
    warm.inputs["q_desc"].dims[:] = [600, 512]  # another descriptor dimension
    warm.inputs["db_desc"].dims[:] = [2000, 768]  # past the profile's 1024 database descriptors
    warm.inputs["q_mask"].data_type = _dtype("TYPE_FP32")
    path.write_text(text_format.MessageToString(config))
    assert check_repository(broken) == [
        f"{path}: model_warmup 'opt_shapes' input q_desc: dims [600, 512], expected ['query_descriptors 1…1024', 768]",
        f"{path}: model_warmup 'opt_shapes' input q_mask: data_type TYPE_FP32, expected TYPE_BOOL",
        f"{path}: model_warmup 'opt_shapes' input db_desc: dims [2000, 768], expected ['db_descriptors 1…1024', 768]",
    ]


def test_check_reads_the_precision_from_the_sidecar(repo, artifacts, tmp_path):
    """A graph of the other precision under a sidecar that says fp16 is named, not guessed around."""
    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    shutil.copyfile(artifacts / "ames.onnx", broken / "ames/1/model.onnx")
    side = broken / "ames/1/model.onnx"
    assert check_repository(broken) == [
        f"{broken / 'ames/config.pbtxt'}: {side}: input types ['float32', 'bool', 'float32', 'bool'], but its "
        f"sidecar's fp16 inputs are ['float16', 'bool', 'float16', 'bool']"]


def test_outputs_are_conformed_to_their_declared_shape_never_broadcast():
    """What a BLS call hands back: Triton's [batch, 1] for a [batch]-only tensor is the config's; any other
    shape is an error naming the tensor and both shapes."""
    from rerankrt.runtime.feeds import IOSpec
    from rerankrt.serve.triton_bls import conform

    logits = IOSpec("logits", np.dtype(np.float32), ("pairs",))
    assert conform("logits", np.zeros((20, 1), np.float32), logits, {"pairs": 20}, "ames").shape == (20,)
    assert conform("logits", np.zeros(20, np.float32), logits, {"pairs": 20}, "ames").shape == (20,)
    with pytest.raises(RuntimeError, match=r"^ames: logits came back with shape \[20, 20\], expected \[20\] "):
        conform("logits", np.zeros((20, 20), np.float32), logits, {"pairs": 20}, "ames")
    with pytest.raises(RuntimeError, match=r"^ames: logits came back with shape \[19\], expected \[20\]"):
        conform("logits", np.zeros(19, np.float32), logits, {"pairs": 20}, "ames")
    tokens = IOSpec("tokens", np.dtype(np.float32), ("batch", "tokens", 4))
    sizes = {"batch": 1}
    conform("tokens", np.zeros((1, 6, 4), np.float32), tokens, sizes, "x")
    with pytest.raises(RuntimeError, match=r"^x: tokens came back with shape \[1, 7, 4\], expected \[1, 6, 4\]"):
        conform("tokens", np.zeros((1, 7, 4), np.float32), tokens, sizes, "x")


def test_cli_writes_and_checks(artifacts, tmp_path, capsys):
    assert main(["triton", "--artifacts", str(artifacts), "--out", str(tmp_path / "r"), "--models", "locore"]) == 0
    assert f"{tmp_path / 'r'}: the repository validates" in capsys.readouterr().out
    assert main(["triton", "--out", str(tmp_path / "r")]) == 2
    assert "expected --artifacts DIR --out REPO (to write a repository) or --check REPO" in capsys.readouterr().err


# --- the loop models, through a stand-in for Triton's Python backend --------------------------------------

class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _Error:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"  # pb_utils.TritonError's codes (the real stub's names)

    def __init__(self, message, code=None):
        self._message, self.code = message, code

    def message(self):
        return self._message


class _Response:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self._error = output_tensors, error

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


def fake_pb_utils(repo, calls):
    """Triton's `triton_python_backend_utils`, with BLS requests run by ONNX Runtime on the repository's
    own model.onnx files; `calls` records (model, batch size) per request."""
    sessions = {}

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs, preferred_memory):
            self.model_name, self.outputs, self.inputs = model_name, requested_output_names, inputs
            assert preferred_memory == ("TRITONSERVER_MEMORY_CPU", 0)  # host outputs, readable by as_numpy

        def exec(self):
            if self.model_name not in sessions:
                sessions[self.model_name] = ort.InferenceSession(str(repo / self.model_name / "1/model.onnx"),
                                                                 providers=["CPUExecutionProvider"])
            feeds = {t.name(): t.as_numpy() for t in self.inputs}
            calls.append((self.model_name, len(next(iter(feeds.values())))))
            out = sessions[self.model_name].run(self.outputs, feeds)
            return _Response([_Tensor(n, a) for n, a in zip(self.outputs, out, strict=True)])

    def by_name(holder, name):
        tensors = holder.inputs if isinstance(holder, _Request) else holder.output_tensors
        return next((t for t in tensors if t.name() == name), None)

    return types.SimpleNamespace(Tensor=_Tensor, InferenceRequest=InferenceRequest, InferenceResponse=_Response,
                                 TritonError=_Error, get_input_tensor_by_name=by_name,
                                 get_output_tensor_by_name=by_name, PreferredMemory=lambda kind, device: (kind, device),
                                 TRITONSERVER_MEMORY_CPU="TRITONSERVER_MEMORY_CPU")


class _Request:
    def __init__(self, arrays):
        self.inputs = [_Tensor(k, v) for k, v in arrays.items()]


def _loop_model(repo, name, pb_utils, monkeypatch):
    """The generated model.py, loaded as Triton's Python backend loads it, and initialised."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    spec = importlib.util.spec_from_file_location(f"{name}_model", repo / name / "1/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    from google.protobuf import json_format

    config = json_format.MessageToDict(_config(repo, name), preserving_proto_field_name=True)
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repo / name), "model_version": "1"})
    return model


def test_ames_loop_model_gives_the_runtime_result(repo, artifacts, rng, monkeypatch):
    calls = []
    model = _loop_model(repo, "ames_rerank", fake_pb_utils(repo, calls), monkeypatch)
    model.reranker.batch = 4  # several BLS requests per query
    q = {"q_desc": rng.standard_normal((12, 768)).astype(np.float32), "q_mask": np.arange(12) >= 10,
         "db_desc": rng.standard_normal((10, 7, 768)).astype(np.float32), "db_mask": np.zeros((10, 7), bool),
         "global_sim": rng.uniform(0.2, 0.9, 10).astype(np.float32)}
    [response] = model.execute([_Request(q)])
    assert not response.has_error()
    out = {t.name(): t.as_numpy() for t in response.output_tensors}
    assert calls == [("ames", 4), ("ames", 4), ("ames", 2)]
    with OrtBackend(artifacts / "ames.fp16.onnx") as backend:
        expected = AmesReranker(backend, 0.5, 0.2).rerank(q["q_desc"], q["q_mask"], q["db_desc"], q["db_mask"],
                                                          q["global_sim"])
    assert out["order"].dtype == np.int64 and out["scores"].dtype == np.float32
    np.testing.assert_array_equal(out["order"], expected.order)
    np.testing.assert_allclose(out["scores"], expected.scores, rtol=1e-6)
    bad = {**q, "q_desc": q["q_desc"][:, :512]}
    [response] = model.execute([_Request(bad)])
    assert response.has_error() and response.output_tensors == []
    assert response.error().message() == "q_desc: expected shape [-1, 768] (-1: any size), got [12, 512]"


def test_locore_loop_model_gives_the_runtime_result(repo, artifacts, rng, monkeypatch):
    calls = []
    model = _loop_model(repo, "locore_rerank", fake_pb_utils(repo, calls), monkeypatch)
    n = 40
    q = {"q_global": rng.standard_normal(32).astype(np.float32),
         "q_local": rng.standard_normal((5, 32)).astype(np.float32), "q_mask": np.arange(5) >= 4,
         "g_global": rng.standard_normal((n, 32)).astype(np.float32),
         "g_local": rng.standard_normal((n, 5, 32)).astype(np.float32), "g_mask": np.zeros((n, 5), bool),
         "global_sim": np.sort(rng.uniform(0.2, 0.9, n))[::-1].astype(np.float32)}
    [response] = model.execute([_Request(q)])
    assert not response.has_error(), response.error().message()
    out = {t.name(): t.as_numpy() for t in response.output_tensors}
    assert [c[0] for c in calls] == ["locore"] * 3  # windows of 17, stride 17 over 40: starts 23, 6, 0
    with OrtBackend(artifacts / "locore.fp16.onnx") as backend:
        expected = LocoreReranker(backend, window=17, stride=17).rerank(*(q[k] for k in q))
    np.testing.assert_array_equal(out["order"], expected.order)
    np.testing.assert_allclose(out["scores"], expected.scores, rtol=1e-6)


def _config(repo, name):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _dtype(name):
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Value(name)


def _dtype_name(value):
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(value)


def _kind(name):
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.ModelInstanceGroup.Kind.Value(name)


def test_readme_client_example_reranks_through_the_loop_model(repo, artifacts, monkeypatch):
    """The serving guide's client code, run as written against the generated `ames_rerank` (its BLS calls served
    by ONNX Runtime) through a stand-in for the gRPC client that decodes the real `InferInput`s."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import triton_to_np_dtype

    readme = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    example = readme.split("Re-rank one query")[1].split("```python\n")[1].split("```")[0]
    model = _loop_model(repo, "ames_rerank", fake_pb_utils(repo, []), monkeypatch)
    config = _config(repo, "ames_rerank")
    seen = {}

    class Client:
        def __init__(self, url):
            assert url == "localhost:8001"

        def infer(self, model_name, inputs, outputs):
            assert model_name == "ames_rerank"
            assert [(i.name(), i.datatype()) for i in inputs] == \
                [(t.name, _dtype_name(t.data_type).removeprefix("TYPE_")) for t in config.input]
            arrays = {i.name(): np.frombuffer(i._get_content(), triton_to_np_dtype(i.datatype())).reshape(i.shape())
                      for i in inputs}
            seen.update(arrays)
            [response] = model.execute([_Request(arrays)])
            assert not response.has_error(), response.error().message()
            got = {t.name(): t.as_numpy() for t in response.output_tensors}
            assert [o._get_tensor().name for o in outputs] == ["order", "scores"]
            return types.SimpleNamespace(as_numpy=got.__getitem__)

    monkeypatch.setattr(grpcclient, "InferenceServerClient", Client)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert sorted(scope["order"]) == list(range(100)) and scope["scores"].shape == (100,)
    with OrtBackend(artifacts / "ames.fp16.onnx") as backend:
        expected = AmesReranker(backend, 0.5, 0.2).rerank(*(seen[k] for k in ("q_desc", "q_mask", "db_desc",
                                                                             "db_mask", "global_sim")))
    np.testing.assert_array_equal(scope["order"], expected.order)


def test_store_loop_reranks_from_the_store(tmp_path, rng, monkeypatch):
    """`--store`: `ames-dist_rerank` takes image indices, encodes the query once through the encoder model and
    scores batches of stored entries through the scorer model, as the runtime does."""
    import torch
    from weights import perturb

    from rerankrt.data.descriptors import write_local
    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import load_model
    from rerankrt.models.torch_backend import TorchBackend
    from rerankrt.search.store import AmesStore, build_store

    art = tmp_path / "art"
    art.mkdir()
    torch.save({"state": perturb(load_model("ames-dist", num_layers=2), gain=2.0, spread=0.1).state_dict()},
               art / "dist.pt")
    for part in ("encoder", "scorer"):
        export_model(f"ames-dist-{part}", art / "dist.pt", out_dir=art, precision="fp32")
    desc = rng.standard_normal((30, 50, 768)).astype(np.float32)
    write_local(tmp_path / "gallery.hdf5", desc, np.arange(50) >= rng.integers(1, 51, 30)[:, None])
    with TorchBackend("ames-dist-encoder", checkpoint=art / "dist.pt") as encoder:
        store = build_store(encoder, tmp_path / "gallery.hdf5", tmp_path / "store")
    with pytest.raises(ModelFileError, match=r"store: .*store is a store of ames-dist; its loop needs "
                                             r"ames-dist-encoder \(export them"):
        write_repository(art, tmp_path / "nope", precision="fp32", models=["ames-dist-scorer"], stores=[str(store)])
    repo = write_repository(art, tmp_path / "repo", precision="fp32", stores=[str(store)])
    assert sorted(p.name for p in repo.iterdir()) == [".rerankrt-repository", "ames-dist-encoder", "ames-dist-scorer",
                                                     "ames-dist_rerank"]
    params = {k: v.string_value for k, v in _config(repo, "ames-dist_rerank").parameters.items()}
    assert params == {"loop": "ames-store", "target_model": "ames-dist-scorer", "encoder_model": "ames-dist-encoder",
                      "store": str(store.resolve()), "lambda": "0.35", "gamma": "0.1", "batch": "100",
                      "max_shortlist": "1600"}
    assert [t.name for t in _config(repo, "ames-dist_rerank").input] == ["q_desc", "q_mask", "shortlist",
                                                                         "global_sim"]
    assert check_repository(repo) == []
    calls = []
    model = _loop_model(repo, "ames-dist_rerank", fake_pb_utils(repo, calls), monkeypatch)
    model.reranker.batch = 8
    shortlist = rng.permutation(30)[:20].astype(np.int64)
    q = {"q_desc": rng.standard_normal((40, 768)).astype(np.float32), "q_mask": np.arange(40) >= 35,
         "shortlist": shortlist, "global_sim": np.linspace(0.9, 0.5, 20, dtype=np.float32)}
    [response] = model.execute([_Request(q)])
    assert not response.has_error(), response.error().message()
    out = {t.name(): t.as_numpy() for t in response.output_tensors}
    assert [c[0] for c in calls] == ["ames-dist-encoder"] + ["ames-dist-scorer"] * 3  # query once, 8 + 8 + 4
    with OrtBackend(art / "ames-dist-scorer.onnx") as scorer, OrtBackend(art / "ames-dist-encoder.onnx") as enc:
        db, db_mask = AmesStore(store).entries(shortlist)
        expected = AmesReranker(scorer, 0.35, 0.1, encoder=enc).rerank(q["q_desc"], q["q_mask"], db, db_mask,
                                                                       q["global_sim"])
    np.testing.assert_array_equal(out["order"], expected.order)
    np.testing.assert_allclose(out["scores"], expected.scores, rtol=1e-6)
    [response] = model.execute([_Request({**q, "shortlist": np.array([3, 30], np.int64),
                                          "global_sim": q["global_sim"][:2]})])
    assert response.error().message() == f"store {store}: image indices must be in [0, 30), got [30]"
    config = repo / "ames-dist_rerank/config.pbtxt"
    config.write_text(config.read_text().replace(str(store.resolve()), str(tmp_path / "moved")))
    assert check_repository(repo) == [f"{config}: parameters store: index {tmp_path / 'moved'}: no such folder"]


def test_int8_serves_the_store_encoder_at_fp32(tmp_path):
    """`--precision int8` with a store: the scorer serves its INT8 graph (the form ONNX Runtime runs), the
    encoder (no loop drives it, no INT8 graph) its FP32 graph, as the runtime runs them."""
    from rerankrt.bench.synth import synthesize
    from rerankrt.export.onnx_export import export_model
    from rerankrt.models.torch_backend import TorchBackend
    from rerankrt.runtime.artifacts import Artifacts
    from rerankrt.search.store import build_store

    small = {"num_layers": 2}
    data = synthesize(tmp_path / "data", queries=6, database=60, query_locals=20, db_locals=10, neighbours=20)
    art = tmp_path / "art"
    for part in ("encoder", "scorer"):
        export_model(f"ames-{part}", out_dir=art, precision="fp32", **small)
    export_model("ames-scorer", out_dir=art, precision="int8", calibration=data, **small)
    with TorchBackend("ames-encoder", **small) as encoder:
        store = build_store(encoder, data / "dinov2_gallery_local.hdf5", tmp_path / "store", descriptors=10)
    repo = write_repository(art, tmp_path / "repo", precision="int8", stores=[str(store)])
    assert sorted(p.name for p in repo.iterdir()) == [".rerankrt-repository", "ames-encoder", "ames-scorer",
                                                     "ames_rerank"]
    served = {name: json.loads((repo / name / "1" / "model.json").read_text()) for name in ("ames-encoder",
                                                                                           "ames-scorer")}
    assert list(served["ames-encoder"]["files"]) == ["fp32"] and list(served["ames-scorer"]["files"]) == ["int8"]
    folder = Artifacts(art)  # what the runtime runs at int8: the encoder's FP32 graph, the scorer's INT8 one
    assert folder.find("ames-encoder", "int8") == art / "ames-encoder.onnx"
    for name in ("ames-encoder", "ames-scorer"):
        assert (repo / name / "1/model.onnx").read_bytes() == folder.find(name, "int8").read_bytes()
    assert check_repository(repo) == []
