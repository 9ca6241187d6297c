"""The exact first stage as a graph (`first-stage`): exported and validated like the other models, equal to
the numpy scan on ONNX Runtime (rows, equal images in gallery order), FP16 within its tolerance, and what a
Searcher runs for an exact index where asked; its bad inputs in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rerankrt.bench.store_scale import synthesize_store  # noqa: E402
from rerankrt.bench.synth import low_rank_globals  # noqa: E402
from rerankrt.core.errors import InputError  # noqa: E402
from rerankrt.runtime.request import BackendRequest, open_backend  # noqa: E402
from rerankrt.search.exact import global_shortlist  # noqa: E402
from rerankrt.search.first_stage import GraphFirstStage  # noqa: E402
from rerankrt.search.index import write_index  # noqa: E402
from rerankrt.search.searcher import QueryDescriptors, Searcher  # noqa: E402

N, D = 2000, 64


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Both precisions exported with the ladder's report; `rerankrt export` runs the same."""
    from rerankrt.export.onnx_export import export_model
    from rerankrt.export.validate import validate

    out = tmp_path_factory.mktemp("first-stage")
    sidecar = export_model("first-stage", out_dir=out)
    report = validate(out / "first-stage.onnx")
    assert report.ok, report.table()
    return out, json.loads(sidecar.read_text())


@pytest.fixture(scope="module")
def gallery():
    vectors = low_rank_globals(N, D, latent=16, seed=5)
    vectors[[3, 900, 1999]] = vectors[1500]  # four equal images
    return vectors


def test_the_sidecar_describes_a_weightless_top_k(graphs):
    _, meta = graphs
    assert (meta["model"], meta["kind"], meta["checkpoint"], meta["config"]) == (
        "first-stage", "first-stage", None, {"k": 1000, "dim": 768})
    assert [(t["name"], t["dtype"], t["shape"]) for t in meta["inputs"]] == [
        ("query", {"fp32": "float32", "fp16": "float16"}, ["batch", "dim"]),
        ("database", {"fp32": "float32", "fp16": "float16"}, ["images", "dim"])]
    assert [(t["name"], t["dtype"]) for t in meta["outputs"]] == [
        ("scores", {"fp32": "float32", "fp16": "float32"}), ("indices", {"fp32": "int64", "fp16": "int64"})]
    assert meta["profiles"]["images"] == {"min": 1, "opt": 100_000, "max": 4_194_304}


def test_the_fp32_graph_on_onnx_runtime_equals_numpy(graphs, gallery):
    out, _ = graphs
    queries = np.concatenate([gallery[[1500]], low_rank_globals(20, D, latent=16, seed=6)])
    want_sims, want_idx = global_shortlist(queries, gallery, 100)
    with open_backend(out / "first-stage.onnx", backend="ort") as backend:
        stage = GraphFirstStage(backend, gallery)
        sims, idx = stage.search(queries, 100)
        assert idx[0, :4].tolist() == [3, 900, 1500, 1999]  # equal similarities in gallery order
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_allclose(sims, want_sims, rtol=1e-5, atol=1e-6)
        few_sims, few_idx = GraphFirstStage(backend, gallery[:7]).search(queries[:2], 100)  # fewer images than k
        assert few_idx.shape == (2, 7) and sorted(few_idx[1].tolist()) == list(range(7))
        with pytest.raises(InputError, match=r"^first-stage graph: returns at most 1000 neighbours, 1001 were asked"):
            stage.search(queries, 1001)
        with pytest.raises(InputError, match=r"^nprobe: the index's first stage is exact"):
            stage.search(queries, 10, nprobe=4)


def test_the_fp16_graph_keeps_the_fp16_vectors_top_k(graphs, gallery):
    """FP16 vectors and product, FP32 top-k: the similarities of the rounded vectors within FP16's rounding of
    the product, and nearly the same top 100 as the FP32 scan (near-equal images may swap)."""
    out, _ = graphs
    queries = low_rank_globals(16, D, latent=16, seed=7)
    half = (queries.astype(np.float16).astype(np.float32), gallery.astype(np.float16).astype(np.float32))
    _, want_idx = global_shortlist(queries, gallery, 100)
    with open_backend(out / "first-stage.fp16.onnx", backend="ort") as backend:
        sims, idx = GraphFirstStage(backend, gallery).search(queries, 100)
    assert sims.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_allclose(sims, np.take_along_axis(half[0] @ half[1].T, idx, 1), rtol=0, atol=2e-3)
    assert min(len(np.intersect1d(a, b)) for a, b in zip(idx, want_idx, strict=True)) >= 95


def test_a_searcher_runs_the_exact_first_stage_through_the_graph(graphs, gallery, tmp_path):
    out, _ = graphs
    index = write_index(tmp_path / "index", gallery, lambda path: synthesize_store(path, N), first_stage="exact")
    queries = [QueryDescriptors(v, np.zeros((0, 0), np.float32), np.zeros(0, bool), f"q{i}")
               for i, v in enumerate(low_rank_globals(3, D, latent=16, seed=8))]
    logs: list[str] = []
    results = {}
    for graph in (False, True):
        with Searcher(index, BackendRequest("ort", out), rerank=None, exact_graph=graph, log=logs.append) as s:
            assert isinstance(s.index.first_stage, GraphFirstStage) is graph
            results[graph] = [[(h.index, h.global_) for h in r.hits] for r in s.search_many(queries, top=20)]
    assert [[i for i, _ in q] for q in results[True]] == [[i for i, _ in q] for q in results[False]]
    np.testing.assert_allclose([[g for _, g in q] for q in results[True]],
                               [[g for _, g in q] for q in results[False]], rtol=1e-5, atol=1e-6)
    assert logs == ["first stage: the exact scan through the first-stage graph on ort-cpu fp32 (1 gallery buffer(s))"]
    pytest.importorskip("faiss", reason="faiss-cpu (the search extra) is not installed")
    hnsw = write_index(tmp_path / "hnsw", gallery, lambda path: synthesize_store(path, N), first_stage="HNSW16")
    with pytest.raises(InputError, match=rf"^exact_graph: the first stage of {hnsw} is approximate \(faiss\); the "
                                         r"first-stage graph scans an exact one$"):
        Searcher(hnsw, BackendRequest("ort", out), rerank=None, exact_graph=True)


def test_a_gallery_outside_the_profile_is_refused(graphs, tmp_path):
    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import Profile

    export_model("first-stage", out_dir=tmp_path, precision="fp32", profiles={"images": Profile(1, 1500, 1600)})
    with open_backend(tmp_path / "first-stage.onnx", backend="ort") as backend, pytest.raises(
            InputError, match=r"^first-stage graph: the index holds 1601 images, the graph's profile takes 1…1600 "
                              r"\(build it with `profile` images:…\)$"):
        GraphFirstStage(backend, low_rank_globals(1601, D, latent=16, seed=9))
