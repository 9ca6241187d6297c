"""AMES's database store: split encoder/scorer against the published-style reference, the byte budgets,
the query fed once, and every bad input named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rerankrt.core.errors import InputError, ModelFileError
from rerankrt.search.store import AmesStore, build_store, store_info

torch = pytest.importorskip("torch")
from conftest import unit_descriptors  # noqa: E402
from literal.ames import PublishedStyle  # noqa: E402
from weights import perturb  # noqa: E402

from rerankrt.data.descriptors import write_local  # noqa: E402
from rerankrt.models import load_model, spec_for  # noqa: E402
from rerankrt.models.torch_backend import TorchBackend  # noqa: E402
from rerankrt.runtime.rerankers import AmesReranker  # noqa: E402

VARIANTS = ["ames", "ames-dist"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Perturbed weights per variant at 2 of the released 12 layers (the store, the encoder and the scorer
    read their depth off the checkpoint; the released random initialisation gives every pair the same logit)."""
    out = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for name in VARIANTS:
        paths[name] = out / f"{name}.pt"
        torch.save({"state": perturb(load_model(name, num_layers=2), gain=2.0, spread=0.1).state_dict()}, paths[name])
    return paths


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """60 database images of 64 descriptors, padded to between 1 and all of them."""
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("data") / "dinov2_gallery_local.hdf5"
    desc, mask = unit_descriptors(rng, (60, 64, 768), rng.integers(1, 65, 60))
    write_local(path, desc, mask)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory, checkpoints, gallery):
    out = tmp_path_factory.mktemp("stores")
    for name in VARIANTS:
        with TorchBackend(f"{name}-encoder", checkpoint=checkpoints[name]) as encoder:
            build_store(encoder, gallery, out / name)
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_store_path_equals_the_published_model(name, checkpoints, gallery, stores, rng):
    """Query encoded once, database entries from the store (packed bits or fp16 tokens), scored in
    batches: the published-style dense model on the raw descriptors gives the same logits and order."""
    from rerankrt.data.descriptors import LocalDescriptorFile

    q_desc, q_mask = unit_descriptors(rng, (600, 768), np.array(571))
    shortlist = rng.permutation(60)[:37]
    sims = np.sort(rng.uniform(0.3, 0.9, 37))[::-1].copy()
    store = AmesStore(stores / name)
    with TorchBackend(f"{name}-encoder", checkpoint=checkpoints[name]) as encoder, \
            TorchBackend(f"{name}-scorer", checkpoint=checkpoints[name]) as scorer:
        store.check_scorer(scorer.meta)
        db, db_mask = store.entries(shortlist)
        ours = AmesReranker(scorer, 0.5, 0.2, batch=16, encoder=encoder).rerank(q_desc, q_mask, db, db_mask, sims)
    with LocalDescriptorFile(gallery) as f:
        local = f.read(shortlist, n=50)
    model = PublishedStyle(torch.load(checkpoints[name])["state"], binarized=name == "ames-dist")
    ref_logits = model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (
        np.broadcast_to(q_desc, (37, 600, 768)), np.broadcast_to(q_mask, (37, 600)), local.desc,
        local.mask))).numpy().astype(np.float64)
    assert np.ptp(ref_logits) > 0.1  # a thousand times the tolerance
    np.testing.assert_allclose(ours.logits, ref_logits[ours.order], rtol=1e-4, atol=1e-4)
    fused = 0.5 * sims + 0.5 / (1 + np.exp(-0.2 * ref_logits))
    assert ours.order.tolist() == np.argsort(-fused, kind="stable").tolist() != list(range(37))


@pytest.mark.parametrize(("name", "budget"), [("ames-dist", 1024), ("ames", 12_900)])
def test_bytes_per_image_within_budget(name, budget, stores):
    """Every file counted, the manifest included: 16 B a descriptor (or 256 B) × 50, the packed mask."""
    info = store_info(stores / name)
    assert (info["model"], info["images"], info["descriptors_per_image"]) == (name, 60, 50)
    per_image = 50 * (16 if name == "ames-dist" else 256) + 7
    files = sum(p.stat().st_size for p in (stores / name).iterdir())
    assert info["bytes"] == files and info["bytes_per_image"] == files / 60
    assert per_image < info["bytes_per_image"] <= per_image + (stores / name / "manifest.json").stat().st_size / 60
    assert info["bytes_per_image"] <= budget


def test_the_query_is_fed_once_per_call_and_encoded_once_per_query(checkpoints, stores, rng):
    """No scorer input carries both `pairs` and `query_descriptors`; the encoder runs once per query."""
    for name in ("ames-scorer", "ames-dist-scorer"):
        for t in spec_for(name).inputs:
            assert not {"pairs", "query_descriptors"} <= set(t.shape), t
    calls = []
    with TorchBackend("ames-dist-encoder", checkpoint=checkpoints["ames-dist"]) as encoder, \
            TorchBackend("ames-dist-scorer", checkpoint=checkpoints["ames-dist"]) as scorer:
        counted = encoder.infer
        encoder.infer = lambda feeds: calls.append(feeds["desc"].shape) or counted(feeds)  # type: ignore[method-assign]
        db, db_mask = AmesStore(stores / "ames-dist").entries(np.arange(30))
        q_desc, q_mask = unit_descriptors(rng, (40, 768), np.array(40))
        AmesReranker(scorer, 0.35, 0.1, batch=8, encoder=encoder).rerank(q_desc, q_mask, db, db_mask, np.zeros(30))
    assert calls == [(1, 40, 768)]  # 4 scorer calls, 1 encoding


@pytest.mark.parametrize("name", VARIANTS)
def test_a_query_encoded_once_for_several_stores_reranks_as_the_encoder_does(name, checkpoints, stores, rng):
    """The search front encodes the query once and sends its stored form to every shard (`encoded`): the same
    fused scores as a re-ranker that encodes it itself; the whole model takes no encoded query, a scorer not
    both an encoder and one."""
    from rerankrt.runtime.rerankers import encode_query

    with TorchBackend(f"{name}-encoder", checkpoint=checkpoints[name]) as encoder, \
            TorchBackend(f"{name}-scorer", checkpoint=checkpoints[name]) as scorer:
        db, db_mask = AmesStore(stores / name).entries(np.arange(30))
        q_desc, q_mask = unit_descriptors(rng, (40, 768), np.array(33))
        sims = rng.random(30)
        own = AmesReranker(scorer, 0.35, 0.1, batch=8, encoder=encoder).rerank(q_desc, q_mask, db, db_mask, sims)
        encoded = encode_query(encoder, q_desc, q_mask)
        assert encoded.shape == (40, 128) and (encoded.dtype == np.bool_) == (name == "ames-dist")
        sent = AmesReranker(scorer, 0.35, 0.1, batch=8, encoded=True).rerank(encoded, q_mask, db, db_mask, sims)
        np.testing.assert_array_equal(sent.order, own.order)
        np.testing.assert_allclose(sent.scores, own.scores, rtol=1e-6, atol=0)
        with pytest.raises(ValueError, match=rf"^{name}-scorer: a scorer takes the encoder of the query side or the "
                                             r"encoded query, not both$"):
            AmesReranker(scorer, 0.35, 0.1, encoder=encoder, encoded=True)
    with TorchBackend(name, num_layers=2) as whole, pytest.raises(
            ValueError, match=rf"^{name}: the whole model takes no encoder and no encoded query$"):
        AmesReranker(whole, 0.35, 0.1, encoded=True)


def test_a_store_refuses_another_scorer(checkpoints, stores):
    store = AmesStore(stores / "ames-dist")
    with TorchBackend("ames-dist-scorer") as random_weights, TorchBackend("ames-scorer") as fp, \
            TorchBackend("ames-dist-scorer", local_dim=1024) as cvnet:
        with pytest.raises(ModelFileError) as e:
            store.check_scorer(random_weights.meta)
        assert str(e.value) == (
            f"store {stores / 'ames-dist'} does not fit scorer ames-dist-scorer:\n  checkpoint: the store was encoded "
            f"with sha256 {store.manifest['checkpoint_sha256']}, the scorer holds None (null: the released "
            f"configuration's random weights)")
        with pytest.raises(ModelFileError, match=r"variant: the store holds dist entries \(ames-dist\), the scorer "
                                                 r"ames-scorer fp"):
            store.check_scorer(fp.meta)
        with pytest.raises(ModelFileError, match=r"dimension: the store encodes 768-d descriptors into 128-d tokens, "
                                                 r"the scorer 1024-d into 128-d"):
            store.check_scorer(cvnet.meta)
        narrow = {**random_weights.meta, "profiles": {"db_descriptors": {"min": 1, "opt": 32, "max": 32}}}
        with pytest.raises(ModelFileError, match=r"descriptors: the store keeps 50 per image, the scorer takes 1…32"):
            store.check_scorer(narrow)


def test_damaged_stores_and_bad_indices(stores, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(stores / "ames-dist", copy)
    with pytest.raises(InputError, match=r"image indices must be in \[0, 60\), got \[60, -1\]"):
        AmesStore(copy).entries([3, 60, -1])
    codes = copy / "codes.u8"
    codes.write_bytes(codes.read_bytes()[:-16])
    with pytest.raises(ModelFileError, match=r"codes.u8 holds 47984 bytes, expected 48000 \(60 × 50 × 16 uint8\): "
                                             r"truncated or foreign"):
        AmesStore(copy)
    (copy / "masks.u8").unlink()
    codes.write_bytes(b"\0" * 48000)
    with pytest.raises(ModelFileError, match=r"masks.u8 is missing"):
        AmesStore(copy)
    (copy / "manifest.json").write_text(json.dumps({"format": "rerankrt-ames-store/0"}))
    with pytest.raises(ModelFileError, match=r"expected format 'rerankrt-ames-store/1', got 'rerankrt-ames-store/0'"):
        AmesStore(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ModelFileError, match=r"no manifest.json \(not a store, or an unfinished build\)"):
        AmesStore(copy)
    with pytest.raises(ModelFileError, match=r"store .*nowhere: no such folder"):
        AmesStore(tmp_path / "nowhere")


def test_bad_builds_leave_nothing(checkpoints, gallery, stores, tmp_path, monkeypatch):
    with TorchBackend("ames-dist-encoder", checkpoint=checkpoints["ames-dist"]) as encoder:
        with pytest.raises(InputError, match=r"db_descriptors: expected 1 … 64 \(the file's topk\), got 65"):
            build_store(encoder, gallery, tmp_path / "s", descriptors=65)
        with pytest.raises(FileExistsError, match=r"out: .*ames-dist exists \(pass `force` to replace it\)"):
            build_store(encoder, gallery, stores / "ames-dist")
        (tmp_path / "mine").mkdir()
        with pytest.raises(FileExistsError, match=r"exists and is not a store; refusing to replace it"):
            build_store(encoder, gallery, tmp_path / "mine", force=True)
        calls = []

        def dies(feeds):  # killed half-way through the images
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return type(encoder).infer(encoder, feeds)

        monkeypatch.setattr(encoder, "infer", dies)
        monkeypatch.setattr("rerankrt.search.store.CHUNK", 32)
        with pytest.raises(KeyboardInterrupt):
            build_store(encoder, gallery, tmp_path / "s")
    with TorchBackend("ames-encoder", local_dim=1024) as cvnet:
        with pytest.raises(Exception, match=r"expected descriptors of dimension 1024, the file has 768"):
            build_store(cvnet, gallery, tmp_path / "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no store, no staging folder


def test_rebuild_with_force_swaps_the_store(checkpoints, gallery, stores, tmp_path):
    import shutil

    target = tmp_path / "store"
    shutil.copytree(stores / "ames-dist", target)
    before = (target / "codes.u8").read_bytes()
    with TorchBackend("ames-dist-encoder", checkpoint=checkpoints["ames-dist"]) as encoder:
        build_store(encoder, gallery, target, descriptors=20, force=True)
    info = store_info(target)
    assert info["descriptors_per_image"] == 20 and (target / "codes.u8").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_cli_builds_describes_and_reranks_from_a_store(checkpoints, tmp_path, capsys):
    """One `export ames-dist` writes the whole model, its encoder and its scorer; `index build` through ONNX
    Runtime, `index info`, then `rerank` and `eval` with --index: the gallery HDF5 is gone, the database side
    comes from the store; the same order as the torch store path, which `--backend auto` picks for a
    --checkpoint without --artifacts."""
    from rerankrt.bench.synth import synthesize
    from rerankrt.cli import main
    from rerankrt.data.descriptors import read_nn
    from rerankrt.search.shards import open_store

    data = synthesize(tmp_path / "data", queries=3, database=40)
    art = tmp_path / "art"
    assert main(["export", "ames-dist", "--checkpoint", str(checkpoints["ames-dist"]), "--out", str(art),
                 "--precision", "fp32"]) == 0
    assert capsys.readouterr().out.count("all checks passed") == 3
    assert sorted(p.name for p in art.iterdir()) == [
        "ames-dist-encoder.json", "ames-dist-encoder.onnx", "ames-dist-scorer.json", "ames-dist-scorer.onnx",
        "ames-dist-scorer.ort.onnx", "ames-dist.json", "ames-dist.onnx", "ames-dist.ort.onnx"]
    store = tmp_path / "store"
    common = ["--backend", "ort", "--artifacts", str(art), "--data", str(data)]
    assert main(["rerank", "--model", "ames-dist", *common, "--shortlist", "20",
                 "--out", str(tmp_path / "pairs.pkl")]) == 0
    assert main(["index", "build", "--model", "ames-dist", *common, "--out", str(store)]) == 0
    assert f"wrote {store}: 40 images, " in capsys.readouterr().err
    by_torch = tmp_path / "torch-store"
    assert main(["index", "build", "--model", "ames-dist", "--data", str(data), "--checkpoint",
                 str(checkpoints["ames-dist"]), "--out", str(by_torch)]) == 0
    codes = [open_store(s).entries(np.arange(40))[0] for s in (store, by_torch)]
    assert (codes[0] == codes[1]).mean() > 0.999  # the same weights; bits within rounding of 0 may flip
    assert main(["index", "info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["model"], info["images"], info["descriptors_per_image"]) == ("ames-dist", 40, 50)
    assert info["bytes_per_image_by_part"]["store"] <= 1024  # the first stage's raw globals: 3072 B beside it
    pair_sims, pair_idx = read_nn(tmp_path / "pairs.pkl")  # the whole model over descriptor pairs
    for setting in (["batch=7"], ["db_descriptors=20"]):  # run settings, the same graph
        assert main(["rerank", "--model", "ames-dist", *common, "--shortlist", "20", "--out", str(tmp_path / "s.pkl"),
                     "--force", *(a for value in setting for a in ("--setting", value))]) == 0
        sims, idx = read_nn(tmp_path / "s.pkl")
        if setting == ["batch=7"]:  # other pair batches: the same scores to rounding
            assert idx.tolist() == pair_idx.tolist()
            np.testing.assert_allclose(sims, pair_sims, rtol=1e-5, atol=1e-6)
        else:  # the first 20 of each image's 50 descriptors: other scores
            assert np.abs(sims[:, :20] - pair_sims[:, :20]).max() > 1e-3
    capsys.readouterr()
    assert main(["rerank", "--model", "ames-dist", *common, "--setting", "window=8",
                 "--out", str(tmp_path / "x.pkl")]) == 2
    assert ("rerankrt rerank: error: window: not a setting of the ames loop of ames-dist (its settings: shortlist, "
            "lam, gamma, db_descriptors, batch)") in capsys.readouterr().err
    assert main(["rerank", "--model", "ames-dist", *common, "--setting", "lam=0.5",
                 "--out", str(tmp_path / "x.pkl")]) == 2
    assert "rerankrt rerank: error: --setting lam: set by --lambda, not --setting" in capsys.readouterr().err
    (data / "dinov2_gallery_local.hdf5").unlink()
    assert main(["rerank", "--model", "ames-dist", *common, "--index", str(store), "--shortlist", "20",
                 "--out", str(tmp_path / "ort.pkl")]) == 0
    assert main(["rerank", "--model", "ames-dist", "--checkpoint", str(checkpoints["ames-dist"]),
                 "--data", str(data), "--index", str(store), "--shortlist", "20",
                 "--out", str(tmp_path / "pt.pkl")]) == 0
    assert "backend auto" not in capsys.readouterr().err  # torch, from --checkpoint: no graph was opened
    (ort_sims, ort_idx), (pt_sims, pt_idx) = read_nn(tmp_path / "ort.pkl"), read_nn(tmp_path / "pt.pkl")
    first_sims, first = read_nn(data / "nn_superglobal.pkl")
    assert ort_idx.tolist() == pt_idx.tolist() and ort_idx[:, :20].tolist() != first[:, :20].tolist()
    np.testing.assert_allclose(ort_sims, pt_sims, rtol=1e-5, atol=1e-6)
    assert pair_idx[:, :20].tolist() != first[:, :20].tolist() and pair_idx[:, 20:].tolist() == first[:, 20:].tolist()
    np.testing.assert_array_equal(pair_sims[:, 20:], first_sims[:, 20:])
    assert main(["rerank", "--model", "ames-dist", *common, "--checkpoint", str(checkpoints["ames-dist"]),
                 "--index", str(store), "--out", str(tmp_path / "x.pkl")]) == 2
    assert ("rerankrt rerank: error: --checkpoint: the torch backend's; an exported graph or engine carries its "
            "own weights") in capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", "--dataset", "synth", "--model", "ames-dist", *common, "--index", str(store),
                 "--shortlist", "20"]) == 0
    assert "synth      ames-dist fp32 reranked     mAP  E " in capsys.readouterr().out
    assert main(["rerank", "--model", "ames", *common, "--index", str(store), "--out", str(tmp_path / "x.pkl")]) == 2
    assert f"rerankrt rerank: error: --index: {store} is a store of ames-dist, --model is ames" in \
        capsys.readouterr().err
    assert main(["rerank", "--model", "locore", *common, "--index", str(store), "--out", str(tmp_path / "x.pkl")]) == 2
    assert "--index: locore has no database store (ames and ames-dist have)" in capsys.readouterr().err
    assert not (tmp_path / "x.pkl").exists()
