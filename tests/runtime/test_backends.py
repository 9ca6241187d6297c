"""Backends (ONNX Runtime, torch) behind one contract, and the re-rankers over them.

The graphs are exported from checkpoints with perturbed weights (tests/weights.py): with the released
random initialisation every pair gets nearly the same logit, the first-stage similarity alone would
decide each order, and two backends could agree while computing different things.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rerankrt.core.errors import InputError, ModelFileError, UnavailableError
from rerankrt.runtime.loops import architecture, released_settings, reranker_for
from rerankrt.runtime.ort_backend import OrtBackend
from rerankrt.runtime.request import open_backend
from rerankrt.runtime.rerankers import AmesReranker, LocoreReranker
from rerankrt.runtime.sliding import sliding_rerank

pytest.importorskip("torch")
from tiny import LOCORE_TINY  # noqa: E402

from rerankrt.models.torch_backend import TorchBackend  # noqa: E402


@pytest.fixture(scope="module")
def artifacts(perturbed_ames, tmp_path_factory):
    from safetensors.torch import save_file
    from weights import perturb

    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import load_model

    out = tmp_path_factory.mktemp("artifacts")
    for f in perturbed_ames.iterdir():
        shutil.copyfile(f, out / f.name)
    save_file(perturb(load_model("locore", **LOCORE_TINY), gain=1.5, spread=0.2).state_dict(),
              str(out / "locore.safetensors"))
    export_model("locore", out / "locore.safetensors", out_dir=out, precision="fp32", **LOCORE_TINY)
    return out


def ames_query(rng, s=23, q=40, t=12, d=768):
    from conftest import unit_descriptors

    q_desc, q_mask = unit_descriptors(rng, (q, d), np.array(q - 5))
    db_desc, db_mask = unit_descriptors(rng, (s, t, d), rng.integers(1, t + 1, s))
    return q_desc, q_mask, db_desc, db_mask, np.sort(rng.uniform(0.3, 0.9, s))[::-1]


def test_ames_reranker_ort_equals_torch(artifacts, rng):
    args = ames_query(rng)
    with OrtBackend(artifacts / "ames.onnx") as ort_backend, TorchBackend(artifacts / "ames.onnx") as torch_backend:
        ours = AmesReranker(ort_backend, 0.5, 0.2, batch=7).rerank(*args)  # 23 pairs in batches of 7
        ref = AmesReranker(torch_backend, 0.5, 0.2).rerank(*args)
        logits = AmesReranker(torch_backend, 0.5, 0.2).logits(*args[:4])
    assert np.ptp(logits) > 1.0  # the logits vary, and (below) change the first-stage order
    assert ours.order.tolist() == ref.order.tolist() != list(range(23))
    assert sorted(ours.order.tolist()) == list(range(23))
    np.testing.assert_allclose(ours.scores, ref.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.logits, ref.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ref.logits, logits[ref.order])  # aligned with `order`, like `scores`
    np.testing.assert_allclose(ours.scores, np.sort(ours.scores)[::-1])


def test_locore_reranker_ort_equals_torch_sliding_reference(artifacts, rng):
    import torch
    from conftest import unit_descriptors

    from rerankrt.models import load_model

    n, d, total = 5, 32, 60
    q_local, q_mask = unit_descriptors(rng, (n, d), np.array(4))
    g_local, g_mask = unit_descriptors(rng, (total, n, d), rng.integers(1, n + 1, total))
    q_global, g_global = unit_descriptors(rng, (1, d), np.array(1))[0][0], rng.standard_normal((total, d), np.float32)
    sims = np.sort(rng.uniform(0.2, 0.9, total))[::-1].copy()
    settings = {"shortlist": 40, "window": 17, "stride": 8, "alpha": 0.5, "temperature": 0.1}
    with OrtBackend(artifacts / "locore.onnx") as backend:
        ours = LocoreReranker(backend, **settings).rerank(q_global, q_local, q_mask, g_global, g_local, g_mask, sims)

    model = load_model("locore", artifacts / "locore.safetensors", **LOCORE_TINY)

    def torch_window(pos):
        args = [torch.from_numpy(np.ascontiguousarray(a))[None]
                for a in (q_global, q_local, q_mask, g_global[pos], g_local[pos], g_mask[pos])]
        with torch.no_grad():
            return model(*args)[0].numpy()

    ref = sliding_rerank(torch_window, sims, **settings)
    assert np.ptp(torch_window(np.arange(17))) > 1.0  # the windows' logits vary
    assert ours.starts == ref.starts == [23, 15, 7, 0]
    assert ours.order.tolist() == ref.order.tolist() != list(range(total))
    np.testing.assert_allclose(ours.scores[:40], ref.scores[:40], rtol=1e-5, atol=1e-5)


def ames_feeds(b=2, q=3, t=4):
    return {"q_desc": np.zeros((b, q, 768), np.float32), "q_mask": np.zeros((b, q), bool),
            "db_desc": np.zeros((b, t, 768), np.float32), "db_mask": np.zeros((b, t), bool)}


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.pop("db_mask"), "feeds: expected inputs ['q_desc', 'q_mask', 'db_desc', 'db_mask']; "
                                 "missing ['db_mask'], unexpected []"),
    (lambda f: f.update(extra=np.zeros(1)), "feeds: expected inputs ['q_desc', 'q_mask', 'db_desc', 'db_mask']; "
                                            "missing [], unexpected ['extra']"),
    (lambda f: f.update(q_desc=f["q_desc"].astype(np.float64)), "q_desc: expected dtype float32, got float64"),
    (lambda f: f.update(q_mask=f["q_mask"].astype(np.int64)), "q_mask: expected dtype bool, got int64"),
    (lambda f: f.update(db_desc=np.zeros((2, 4, 512), np.float32)),
     "db_desc: expected size 768 on axis 2, got shape [2, 4, 512]"),
    (lambda f: f.update(db_mask=np.zeros((2, 5), bool)),
     "db_mask: dimension db_descriptors is 5 here but 4 in an earlier input"),
    (lambda f: f.update(ames_feeds(b=401)), "q_desc: pairs=401 is outside the optimisation profile 1…400 (opt 100)"),
    (lambda f: f.update(q_desc=np.zeros((2, 3), np.float32)),
     "q_desc: expected 3 dimensions ['pairs', 'query_descriptors', 768], got shape [2, 3]"),
])
def test_bad_feeds(artifacts, change, message):
    feeds = ames_feeds()
    change(feeds)
    with OrtBackend(artifacts / "ames.onnx") as backend, pytest.raises(InputError) as e:
        backend.infer(feeds)
    assert str(e.value) == message


def test_same_feeds_same_outputs_on_every_backend(artifacts, rng):
    from rerankrt.models import spec_for

    feeds = spec_for("ames").feeds({"pairs": 6, "query_descriptors": 30, "db_descriptors": 9}, seed=4)
    with OrtBackend(artifacts / "ames.onnx") as a, TorchBackend(artifacts / "ames.onnx") as b:
        assert a.input_specs() == b.input_specs() and a.output_specs() == b.output_specs()
        assert a.profiles() == b.profiles() and a.meta["loop"] == b.meta["loop"] == "ames"
        assert a.config == b.config
        ours, ref = a.infer(feeds)["logits"], b.infer(feeds)["logits"]
    assert np.ptp(ref) > 0.1  # a thousand times the tolerance: the comparison can tell models apart
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_provider_must_really_be_active(artifacts, monkeypatch):
    with pytest.raises(UnavailableError, match=r"ONNX Runtime provider CUDAExecutionProvider is not available here"):
        with OrtBackend(artifacts / "ames.onnx", provider="cuda"):
            pass
    with pytest.raises(ValueError, match=r"provider: expected one of trt, cuda, cpu, got 'rocm'"):
        OrtBackend(artifacts / "ames.onnx", provider="rocm")


def test_a_silent_fallback_to_the_cpu_is_an_error(artifacts, monkeypatch):
    """ONNX Runtime lists the CUDA provider, is asked for it, and starts the CPU one without a word (a
    missing CUDA library does that): the backend refuses to run."""
    import onnxruntime as ort

    class FellBack:
        def __init__(self, path, options, providers):
            assert providers == ["CUDAExecutionProvider"]

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FellBack)
    backend = OrtBackend(artifacts / "ames.onnx", provider="cuda")
    with pytest.raises(UnavailableError) as e:
        backend.__enter__()
    assert str(e.value) == ("ONNX Runtime did not start CUDAExecutionProvider; active providers: "
                            "CPUExecutionProvider")
    assert not backend.entered


def test_unentered_backend_and_missing_sidecar(artifacts, tmp_path):
    for backend in (OrtBackend(artifacts / "ames.onnx"), TorchBackend("ames")):
        with pytest.raises(RuntimeError, match=r"^(ort-cpu|torch-cpu-float32): use the backend inside a `with` block"):
            backend.infer(ames_feeds())
    backend = OrtBackend(artifacts / "ames.onnx")
    with backend:
        assert backend.infer(ames_feeds())["logits"].shape == (2,)
    with pytest.raises(RuntimeError, match=r"ort-cpu: use the backend inside a `with` block"):
        backend.infer(ames_feeds())  # not after the block either
    (tmp_path / "lonely.onnx").write_bytes((artifacts / "ames.onnx").read_bytes())
    with pytest.raises(ModelFileError, match=r"lonely.onnx: its sidecar .*lonely.json is missing"):
        OrtBackend(tmp_path / "lonely.onnx")


def test_open_backend_says_what_it_chose(artifacts):
    said = []
    backend = open_backend(artifacts / "ames.onnx", log=said.append)
    assert isinstance(backend, OrtBackend) and backend.name == "ort-cpu"
    assert said == [f"backend auto: ONNX Runtime with CPUExecutionProvider for {artifacts / 'ames.onnx'}"]
    with pytest.raises(ValueError, match=r"backend: expected one of auto, trt, ort, got 'tvm'"):
        open_backend(artifacts / "ames.onnx", backend="tvm")
    with pytest.raises(ValueError, match=r"ames.pt: backend 'auto' runs an exported .onnx graph or a .plan engine"):
        open_backend(artifacts / "ames.pt")


def test_artifacts_resolve_names_and_say_how_to_make_what_is_missing(artifacts):
    from rerankrt.runtime.artifacts import Artifacts

    folder = Artifacts(artifacts)
    assert folder.find("ames", "fp32") == folder.find("ames", "fp32", "ort") == artifacts / "ames.ort.onnx"  # fused
    assert folder.find("ames", "fp32", "ort", fused=False) == artifacts / "ames.onnx"
    assert folder.plan("ames", "fp16") == artifacts / "ames.fp16.plan"
    assert sorted(folder.exported()) == ["ames", "locore"]
    with pytest.raises(ModelFileError, match=r"^no engine .*ames.plan: build it on this GPU with `rerankrt build "):
        folder.find("ames", "fp32", "trt")
    with pytest.raises(ModelFileError, match=r"^no graph .*ames.fp16.onnx: export it with `rerankrt export ames --out"):
        folder.find("ames", "fp16")


def test_released_settings_follow_the_sidecar(artifacts):
    """One rule for every loop: AMES in batches of the pairs profile's opt, LOCORE's window within the images
    profile (17 for the tiny position table) and its stride within the window."""
    with OrtBackend(artifacts / "ames.onnx") as ames, OrtBackend(artifacts / "locore.onnx") as locore:
        assert released_settings(ames.meta) == {"shortlist": 100, "lam": 0.5, "gamma": 0.2, "db_descriptors": 50,
                                                "batch": 100}
        assert released_settings(locore.meta) == {"shortlist": 400, "window": 17, "stride": 17,
                                                  "order": "end-to-start", "alpha": 0.5, "temperature": 0.1}
        reranker, shortlist = reranker_for(locore, weight=0.3, shortlist=40)
        assert (shortlist, reranker.shortlist, reranker.window, reranker.alpha, reranker.temperature) == (
            40, 40, 17, 0.3, 0.1)
        reranker, shortlist = reranker_for(ames, temperature=0.7)
        assert (shortlist, reranker.batch, reranker.lam, reranker.gamma) == (100, 100, 0.5, 0.7)


def test_run_settings_override_by_name_and_stay_out_of_the_architecture(artifacts):
    """Every run setting of a loop is overridden by name at run time (the graph unchanged); explicit fusion
    arguments win; a name the loop does not take, or a value of the wrong type, is refused by name; the
    architecture of a graph is its configuration without them."""
    with OrtBackend(artifacts / "ames.onnx") as ames, OrtBackend(artifacts / "locore.onnx") as locore:
        reranker, shortlist = reranker_for(locore, weight=0.2, settings={"window": 8, "stride": 4, "alpha": 0.9,
                                                                         "order": "start-to-end"})
        assert (shortlist, reranker.window, reranker.stride, reranker.order, reranker.alpha) == (
            400, 8, 4, "start-to-end", 0.2)
        reranker, _ = reranker_for(ames, settings={"batch": 7, "lam": 0.25})
        assert (reranker.batch, reranker.lam) == (7, 0.25)
        with pytest.raises(ValueError, match=r"^window: not a setting of the ames loop of ames \(its settings: "
                                             r"shortlist, lam, gamma, db_descriptors, batch\)$"):
            reranker_for(ames, settings={"window": 8})
        with pytest.raises(ValueError, match=r"^batch: expected a whole number, got 7.5$"):
            reranker_for(ames, settings={"batch": 7.5})
        # an encoder is the store scorer's query side: given to the whole model or to LOCORE, it is refused
        with pytest.raises(ValueError, match=r"^ames: the whole model takes no encoder and no encoded query$"):
            reranker_for(ames, encoder=locore)
        with pytest.raises(ValueError, match=r"^locore: LOCORE's windows take no encoder \(they read the gallery's "
                                             r"descriptors as they are\)$"):
            reranker_for(locore, encoder=ames)
        arch = architecture(ames.meta)
        assert set(ames.meta["config"]) - set(arch) == {"shortlist", "fusion_lambda", "fusion_gamma", "db_descriptors"}
        assert set(locore.meta["config"]) - set(architecture(locore.meta)) == {
            "shortlist", "window", "stride", "order", "fusion_alpha", "fusion_temperature"}


def test_reranker_settings_are_checked(artifacts):
    with OrtBackend(artifacts / "ames.onnx") as backend:
        with pytest.raises(ValueError, match=r"lambda: expected a weight in \[0, 1\], got 1.5"):
            AmesReranker(backend, 1.5, 0.2)
        with pytest.raises(ValueError, match=r"gamma: expected a positive temperature, got 0"):
            AmesReranker(backend, 0.5, 0)
        message = r"global_sim: expected shape \[2\] \(one per shortlist image\), got \[3\]"
        with pytest.raises(InputError, match=message):
            AmesReranker(backend, 0.5, 0.2).rerank(np.zeros((3, 768), np.float32), np.zeros(3, bool),
                                                   np.zeros((2, 4, 768), np.float32), np.zeros((2, 4), bool),
                                                   np.zeros(3))
    with OrtBackend(artifacts / "locore.onnx") as backend:
        with pytest.raises(ValueError, match=r"window: 100 images exceed the backend's profile \(images ≤ 17\)"):
            LocoreReranker(backend)


# --- rerankrt rerank over a dataset in the official layout -------------------------------------------

def write_dataset(root, rng, desc: str, dim: int, nq=3, ndb=30, k=20, q_topk=60, db_topk=8):
    from conftest import unit_descriptors

    from rerankrt.data.descriptors import write_global, write_local, write_nn

    for split, count, topk in (("query", nq, q_topk), ("gallery", ndb, db_topk)):
        d, m = unit_descriptors(rng, (count, topk, dim), rng.integers(1, topk + 1, count))
        write_local(root / f"{desc}_{split}_local.hdf5", d, m)
        global_ = unit_descriptors(rng, (count, 1, dim), np.ones(count))[0][:, 0]
        write_global(root / f"{desc}_{split}_global.pt", global_)
    idx = np.stack([rng.permutation(max(ndb, k))[:k] % ndb for _ in range(nq)])
    sims = np.sort(rng.uniform(0.1, 0.9, (nq, k)), axis=1)[:, ::-1]
    write_nn(root / "nn_superglobal.pkl", sims, idx)
    return sims, idx


def test_rerank_dataset_with_ames(artifacts, tmp_path, rng):
    from rerankrt.data.descriptors import LocalDescriptorFile, read_nn
    from rerankrt.search.rerank_dataset import rerank_dataset

    sims, idx = write_dataset(tmp_path, rng, "dinov2", 768)
    with OrtBackend(artifacts / "ames.onnx") as backend:
        out = rerank_dataset(backend, tmp_path, tmp_path / "out.pkl", shortlist=10)
        with LocalDescriptorFile(tmp_path / "dinov2_query_local.hdf5") as qf, \
                LocalDescriptorFile(tmp_path / "dinov2_gallery_local.hdf5") as gf:
            q, db = qf.read([1], n=60), gf.read(idx[1, :10], n=8)
            direct = AmesReranker(backend, 0.5, 0.2).rerank(q.desc[0], q.mask[0], db.desc, db.mask, sims[1, :10])
    new_sims, new_idx = read_nn(out)
    assert new_idx.shape == idx.shape == (3, 20)
    for row in range(3):
        assert sorted(new_idx[row, :10]) == sorted(idx[row, :10])  # the shortlist, re-ordered
        assert new_idx[row, 10:].tolist() == idx[row, 10:].tolist()  # the rest untouched
        np.testing.assert_allclose(new_sims[row, 10:], sims[row, 10:], rtol=1e-6)
    assert new_idx[1, :10].tolist() == idx[1, :10][direct.order].tolist()
    assert direct.order.tolist() != list(range(10))
    np.testing.assert_allclose(new_sims[1, :10], direct.scores, rtol=1e-6)  # stored as float32


def test_rerank_cli_with_locore(artifacts, tmp_path, rng, capsys):
    from rerankrt.cli import main
    from rerankrt.data.descriptors import read_nn

    sims, idx = write_dataset(tmp_path, rng, "tiny", 32, q_topk=5, db_topk=5)
    out = tmp_path / "locore.pkl"
    assert main(["rerank", "--model", "locore", "--backend", "ort", "--artifacts", str(artifacts), "--data",
                 str(tmp_path), "--desc", "tiny", "--shortlist", "12", "--out", str(out)]) == 0
    assert "re-ranked 3/3 queries" in capsys.readouterr().err
    new_sims, new_idx = read_nn(out)
    assert all(sorted(new_idx[r, :12]) == sorted(idx[r, :12]) for r in range(3))
    assert new_idx[:, 12:].tolist() == idx[:, 12:].tolist()
    np.testing.assert_allclose(new_sims[:, 12:], sims[:, 12:], rtol=1e-6)
    from rerankrt.data.descriptors import LocalDescriptorFile, read_global

    with OrtBackend(artifacts / "locore.onnx") as backend, \
            LocalDescriptorFile(tmp_path / "tiny_query_local.hdf5") as qf, \
            LocalDescriptorFile(tmp_path / "tiny_gallery_local.hdf5") as gf:
        q, db = qf.read([2], n=5), gf.read(idx[2, :12], n=5)
        q_global, g_global = read_global(tmp_path / "tiny_query_global.pt", 32), read_global(
            tmp_path / "tiny_gallery_global.pt", 32)
        direct = LocoreReranker(backend, shortlist=12, window=17, stride=17).rerank(
            q_global[2], q.desc[0], q.mask[0], g_global[idx[2, :12]], db.desc, db.mask, sims[2, :12])
    assert new_idx[2, :12].tolist() == idx[2, :12][direct.order].tolist()
    np.testing.assert_allclose(new_sims[2, :12], direct.scores, rtol=1e-6)


def test_rerank_bad_input(artifacts, tmp_path, rng):
    from rerankrt.core.errors import DescriptorFileError
    from rerankrt.search.rerank_dataset import rerank_dataset

    write_dataset(tmp_path, rng, "dinov2", 768)
    with OrtBackend(artifacts / "ames.onnx") as backend:
        with pytest.raises(InputError, match=r"shortlist: expected 1 … 20 \(the neighbours in nn_superglobal.pkl\)"):
            rerank_dataset(backend, tmp_path, tmp_path / "o.pkl", shortlist=21)
    import types

    with pytest.raises(ValueError, match=r"^rrt: not a re-ranker a loop drives \(AMES or LOCORE\)$"):
        rerank_dataset(types.SimpleNamespace(meta={"model": "rrt", "loop": None}), tmp_path, tmp_path / "o.pkl")
    small = tmp_path / "small"
    small.mkdir()
    write_dataset(small, rng, "dinov2", 768, ndb=15, k=20)
    with OrtBackend(artifacts / "ames.onnx") as backend:
        with pytest.raises(DescriptorFileError, match=r"small/nn_superglobal.pkl: query 0 lists database image \d+ "
                                                      r"more than once"):  # 20 neighbours of 15 images
            rerank_dataset(backend, small, tmp_path / "o.pkl", shortlist=18)
    with OrtBackend(artifacts / "locore.onnx") as backend:
        with pytest.raises(DescriptorFileError, match=r"expected descriptors of dimension 32, the file has 768"):
            rerank_dataset(backend, tmp_path, tmp_path / "o.pkl", shortlist=5)
    assert not (tmp_path / "o.pkl").exists()


def test_torch_backend_checks_nan_on_the_host_and_graphs_need_cuda():
    feeds = ames_feeds()
    feeds["db_desc"][0, 1, 2] = np.nan
    with TorchBackend("ames") as backend, pytest.raises(InputError, match=r"^db_desc: contains 1 NaN or infinite"):
        backend.infer(feeds)
    with pytest.raises(ValueError, match=r"cuda_graphs: CUDA graphs need a CUDA device, got device 'cpu'"):
        TorchBackend("ames", cuda_graphs=True)


def test_prechecked_skips_the_models_own_checks():
    import torch

    from rerankrt.models import load_model
    from rerankrt.models.checks import checking, prechecked

    model = load_model("raml")
    tiny = torch.zeros(1, 3, 16, 16)  # below the backbone's stride: the model's own check refuses it
    with pytest.raises(InputError, match=r"images: expected H, W ≥ 32"):
        model(tiny)
    with prechecked(), torch.no_grad():
        assert not checking()
        assert model(tiny).shape == (1, 512)
    assert checking()


def test_one_request_resolves_every_auto_rule(tmp_path):
    """`runtime.request.resolve` is the one owner of `auto`: weights mean torch, an engine built means TensorRT,
    else ONNX Runtime on the fused form the sidecar lists, and an INT8 request of a model no loop drives runs
    its FP32 graph."""
    import json as json_

    from rerankrt.runtime.request import BackendRequest, resolve

    for name in ("ames.onnx", "ames.ort.onnx", "ames.int8.onnx", "ames-encoder.onnx", "first-stage.plan"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "ames.json").write_text(json_.dumps({"loop": "ames", "fused": {"fp32": {"file": "ames.ort.onnx"}}}))
    (tmp_path / "ames-encoder.json").write_text(json_.dumps({"loop": None, "fused": {}}))
    ckpt = tmp_path / "ames.pt"
    assert resolve("ames", BackendRequest(checkpoint=ckpt)).kind == "torch"  # weights, no artifacts: torch
    with pytest.raises(ValueError, match=r"^checkpoint: the torch backend's; an exported graph or engine carries"):
        resolve("ames", BackendRequest("ort", tmp_path, checkpoint=ckpt))
    ort = resolve("ames", BackendRequest("ort", tmp_path))
    assert (ort.kind, ort.path, ort.provider) == ("ort", tmp_path / "ames.ort.onnx", "cpu")  # the fused form
    assert resolve("ames", BackendRequest("ort", tmp_path, "int8")).path == tmp_path / "ames.int8.onnx"
    assert resolve("ames-encoder", BackendRequest("ort", tmp_path, "int8")).path == tmp_path / "ames-encoder.onnx"
    assert resolve("first-stage", BackendRequest("auto", tmp_path)).kind == "trt"  # an engine built: TensorRT
    assert BackendRequest("auto", tmp_path).runs_engine("first-stage")
    assert not BackendRequest("auto", tmp_path).runs_engine("ames")
    explicit = resolve("ames", BackendRequest("ort", engine=tmp_path / "ames.onnx"))
    assert explicit.path == tmp_path / "ames.onnx"
    with pytest.raises(ModelFileError, match=r"no engine .*ames\.plan: build it on this GPU with `rerankrt build"):
        resolve("ames", BackendRequest("trt", tmp_path))
    with pytest.raises(ValueError, match=r"^backend: expected one of auto, trt, ort, torch, got 'tvm'$"):
        BackendRequest("tvm")
    with pytest.raises(ValueError, match=r"^precision: expected fp32, fp16 or int8, got 'int4'$"):
        BackendRequest(precision="int4")
