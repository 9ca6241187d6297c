"""`--first-stage auto` within a byte budget: candidates priced before training as faiss builds them, the
choice the fastest that reaches the target on held-out queries and fits, its table in the manifest; an
index of globals alone; recall never counts an image finding itself; the landmark-like generator; every
refusal in one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rerankrt.bench.store_scale import synthesize_store
from rerankrt.bench.synth import Clustered
from rerankrt.cli.main import main
from rerankrt.core.errors import InputError, TargetNotMetError
from rerankrt.search.exact import global_shortlist
from rerankrt.search.first_stage import RecallProbe, faiss_module, without_polysemous
from rerankrt.search.first_stage_choice import (
    Selection,
    candidates,
    choose,
    confirm,
    estimated_bytes,
    pick,
    training_rows,
)
from rerankrt.search.index import SearchIndex, index_info, write_index
from rerankrt.search.store import entry_bytes

faiss = pytest.importorskip("faiss", reason="faiss-cpu (the search extra) is not installed")

N, D = 3000, 64
GEN = Clustered(dim=D, latent=16, clusters=40, queries=20, positives=3)


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    return GEN.gallery(N)


def test_clustered_generator_plants_positives_queries_are_not_gallery_images(gallery):
    landmarks = Clustered(clusters=50)  # the scale bench's 768-d defaults
    images = landmarks.gallery(5000)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, rtol=1e-5)
    queries = landmarks.query_vectors()
    assert queries.shape == (100, 768) and images.shape == (5000, 768)
    top = global_shortlist(queries, images, 10)[1]
    found = np.mean([np.isin(landmarks.positives_of(q), top[q]).mean() for q in range(100)])
    assert found >= 0.95  # the planted positives are among each query's ten nearest images
    assert (queries @ images.T).max() < 0.99  # no query is a gallery image
    np.testing.assert_array_equal(GEN.gallery(N), gallery)  # the same blocks for the same arguments
    # clustered: an image's nearest neighbours are far nearer than a random image's
    sims = gallery[:200] @ gallery.T
    assert np.median(np.sort(sims, axis=1)[:, -11]) > np.median(sims) + 0.3


@pytest.mark.parametrize("factory", ["IVF64,PQ16", "IVF64,PQ32x4fs", "IVF64,PQ16x4fs,Refine(PQ32)", "HNSW32"])
def test_estimated_bytes_are_what_faiss_stores_per_image(gallery, factory):
    index = without_polysemous(faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT))
    index.train(gallery)
    empty = faiss.serialize_index(index).nbytes
    index.add(gallery)
    measured = (faiss.serialize_index(index).nbytes - empty) / N
    assert estimated_bytes(factory, D, N) == pytest.approx(measured, rel=0.1)


def test_candidates_divide_their_dimension():
    at_768 = candidates(1_000_000, 768)
    assert "IVF4096,PQ64x4fs" in at_768 and "OPQ32_128,IVF4096,PQ32" in at_768 and "HNSW32" in at_768
    assert any("Refine(" in c for c in at_768)
    for factory in candidates(N, D):  # every one is a factory faiss accepts at this dimension
        faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT)


@pytest.mark.parametrize(("factory", "rows"), [
    ("IVF32,PQ8", 256), ("IVF32,PQ8x4fs", 32), ("IVF300,PQ8x4fs", 300), ("PCAR48,IVF16,PQ8x4fs", 48),
    ("OPQ8_32,IVF16,PQ8", 256), ("IVF16,PQ8x4fs,Refine(PQ16)", 256), ("IVF16,PQ8x4fs,Refine(SQ8)", 16),
    ("PCAR32,IVF16,RQ4x8", 256), ("HNSW16", 1), ("HNSW16_SQ8", 1)])
def test_training_rows_are_what_faiss_needs(factory, rows, gallery):
    """The fewest vectors each factory trains on; faiss refuses one fewer where a k-means or PCA needs them."""
    assert training_rows(factory, D) == rows
    if rows > 1:
        index = faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT)
        with pytest.raises(RuntimeError):
            index.train(np.ascontiguousarray(gallery[:rows - 1]))


def test_a_small_gallery_drops_what_it_cannot_train_before_training(gallery):
    """A gallery (or a shard) of 120 images: the 8-bit PQ's 256 centroids are not tried, named with the
    vectors it needs; the 4-bit fast-scan one and HNSW are measured; with nothing trainable, one line."""
    small = np.ascontiguousarray(gallery[:120])
    choice = choose(small, 10, None, 0.5, among=("IVF8,PQ8", "IVF8,PQ8x4fs", "HNSW16"))
    notes = {t["factory"]: t["note"] for t in choice.table()}
    assert notes["IVF8,PQ8"] == "needs 256 training vectors, the gallery gives 108 (held-out queries aside)"
    assert {t["factory"] for t in choice.table() if t["recall"] is not None} == {"IVF8,PQ8x4fs", "HNSW16"}
    assert choice.factory in ("IVF8,PQ8x4fs", "HNSW16")
    none = choose(small, 10, 200.0, 0.5, among=("IVF8,PQ8", "IVF8,PQ16"))
    assert (none.factory, none.reason) == ("", "no candidate within 200 B per image trains on 108 vectors")


def test_recall_probe_never_counts_an_image_finding_itself(gallery):
    probe = RecallProbe(gallery, 10, count=50)
    assert probe.measure(lambda q, k: global_shortlist(q, gallery, k)[1])["value"] == 1.0
    # a stage that returns each query's own image and then the exact rest: still exact once it is removed
    assert probe.measure(lambda q, k: global_shortlist(q, gallery, k)[1])["held_out"] == \
        "gallery images, each removed from its own ground truth"
    for truth, row in zip(probe.truth, probe.rows, strict=True):
        assert row not in truth and len(truth) == 10


def test_choice_is_the_fastest_fitting_candidate_that_reaches_the_target(gallery):
    logs: list[str] = []
    choice = choose(gallery, 20, budget=100.0, target=0.5, queries=GEN.query_vectors(), log=logs.append)
    table = choice.table()
    assert {t["factory"] for t in table} == set(candidates(N, D))
    chosen = [t for t in table if t["note"].startswith("chosen")]
    assert len(chosen) == 1 and chosen[0]["factory"] == choice.factory and choice.reaches
    fits = [t for t in table if t["recall"] is not None and t["bytes_per_image"] <= 100]
    reaching = [t for t in fits if t["recall"] >= 0.5]
    assert chosen[0]["ms_per_query"] == min(t["ms_per_query"] for t in reaching)
    for t in table:  # priced out before training, or measured within the budget
        assert t["recall"] is not None or t["note"].startswith("over budget before training")
    assert any(t["note"].startswith("over budget before training") for t in table)
    assert logs[0].startswith(f"tuning {len(table) - sum(t['recall'] is None for t in table)} first stages on ")
    assert choose(gallery, 20, budget=4 * D, target=0.99).factory == "exact"  # exact fits: it reaches any target


def test_budget_builds_within_it_and_records_the_choice(tmp_path, gallery, capsys):
    store = entry_bytes({"db_descriptors": 50, "binarized": True, "model_dim": 128})
    assert store == 50 * 16 + 7
    selection = Selection(store + 120, 0.6)
    out = write_index(tmp_path / "index", gallery, lambda path: synthesize_store(path, N, "ames-dist"),
                      selection=selection, store_bytes=store)
    info = index_info(out)
    assert info["bytes_per_image"] <= store + 120
    choice = info["choice"]
    assert (choice["budget_bytes"], choice["target_recall"], choice["recall_queries"]) == (store + 120, 0.6, "gallery")
    assert choice["reaches_target"] and choice["reason"].startswith(info["first_stage"]["factory"] + ": the fastest")
    assert info["recall"]["value"] >= 0.6 and info["recall"]["held_out"].startswith("gallery images, each removed")
    index = SearchIndex(out)
    assert set(index.first_stage.params) <= {"nprobe", "efSearch", "k_factor_rf"}
    assert main(["index", "info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"choice                   {choice['reason']}" in printed and "ms/query" in printed


def test_auto_above_the_exact_size_without_a_budget_is_measured(tmp_path, gallery, monkeypatch):
    """Above `EXACT_UP_TO` images `auto` measures even without a budget: the fastest candidate reaching the
    target, any size; the reason names no budget (it said "within inf B per image")."""
    import rerankrt.search.index as index_module

    monkeypatch.setattr(index_module, "EXACT_UP_TO", N - 1)
    out = write_index(tmp_path / "index", gallery, None, selection=Selection(None, 0.5, candidates=(
        "IVF64,PQ8x4fs", "HNSW16")))
    choice = index_info(out)["choice"]
    assert choice["budget_bytes"] is None and choice["reaches_target"]
    assert choice["reason"].startswith(f"{index_info(out)['first_stage']['factory']}: the fastest of ")
    assert " reaching recall 0.5 (" in choice["reason"] and "B per image" not in choice["reason"]
    assert {t["factory"] for t in choice["tried"]} == {"IVF64,PQ8x4fs", "HNSW16"}


def test_budget_below_the_store_is_refused_before_training(tmp_path, gallery):
    with pytest.raises(InputError) as e:
        write_index(tmp_path / "index", gallery, lambda path: synthesize_store(path, N, "ames-dist"),
                    selection=Selection(800), store_bytes=807.0)
    assert str(e.value).startswith("budget_bytes: 800 B per image leaves nothing for a first stage: the re-ranker's "
                                   "store alone takes 807 B per image (and the names and manifest ")
    assert list(tmp_path.iterdir()) == []


def test_a_target_no_candidate_reaches_is_refused_unless_allowed(tmp_path, gallery):
    with pytest.raises(TargetNotMetError) as e:
        write_index(tmp_path / "index", gallery, None, selection=Selection(100, 0.999))
    assert str(e.value).startswith("target_recall: ") and "; tried: " in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing written
    logs: list[str] = []
    out = write_index(tmp_path / "index", gallery, None, selection=Selection(100, 0.999, allow_below_target=True),
                      log=logs.append)
    info = index_info(out)
    assert not info["choice"]["reaches_target"] and "none within" in info["choice"]["reason"]
    assert any("below target" in t["note"] for t in info["choice"]["tried"] if t["note"].startswith("chosen"))


def test_below_the_target_the_best_recall_is_taken_up_to_one_shortlist_image():
    """A front that flattens short of the target: its highest recall is bought with ever more time; within 1/S of
    it (less than one image per query of an S-long shortlist) the fastest point is taken."""
    front = [(0.70, 0.001, {"nprobe": 64}), (0.733, 0.002, {"nprobe": 128}), (0.738, 0.004, {"nprobe": 256}),
             (0.741, 0.008, {"nprobe": 512})]
    assert pick(front, 0.9, 100) == (0.733, 0.002, {"nprobe": 128}, False)  # 0.741 - 0.733 ≤ 1/100
    assert pick(front, 0.9, 1000) == (0.741, 0.008, {"nprobe": 512}, False)  # 1/1000: only the highest
    assert pick(front, 0.735, 100) == (0.738, 0.004, {"nprobe": 256}, True)  # reaching: the cheapest that does


def test_confirm_on_the_whole_gallery_keeps_the_same_rule(gallery):
    index = without_polysemous(faiss.index_factory(D, "IVF64,PQ8", faiss.METRIC_INNER_PRODUCT))
    index.train(gallery)
    index.add(gallery)
    probe = RecallProbe(gallery, 10, count=50)
    front = [(0.0, 1e-4 * n, {"nprobe": n}) for n in (1, 2, 4, 8, 16, 32, 64)]
    recalls = {}
    for n in (1, 2, 4, 8, 16, 32, 64):
        index.nprobe = n
        recalls[n] = probe.measure(lambda q, k: index.search(q, k)[1])["value"]
    params, recall = confirm(index, probe, front, target=1.01)  # none reaches: the rule of `pick`
    expected = min(n for n in recalls if recalls[n] >= max(recalls.values()) - 1 / probe.at)
    assert params == {"nprobe": expected} and recall["value"] == recalls[expected] and index.nprobe == expected
    assert confirm(index, probe, front, target=recalls[4])[0] == {"nprobe": min(n for n in recalls
                                                                                if recalls[n] >= recalls[4])}


@pytest.mark.parametrize("target", [0.0, 1.5, -1])
def test_target_outside_zero_one_is_refused(target):
    with pytest.raises(InputError) as e:
        Selection(1000, target)
    assert str(e.value) == f"target_recall: expected a recall in (0, 1], got {target}"


def test_index_of_globals_alone_over_the_cli(tmp_path, capsys):
    from rerankrt.bench.synth import synthesize

    data = synthesize(tmp_path / "data", queries=4, database=64, dim=32, query_locals=8, db_locals=8)
    assert main(["index", "build", "--data", str(data), "--out", str(tmp_path / "index"),
                 "--recall-queries", str(data)]) == 0
    info = index_info(tmp_path / "index")
    assert (info["model"], info["bytes_per_image_by_part"]["store"], info["first_stage"]["kind"]) == (None, 0, "exact")
    from rerankrt.search.searcher import Searcher, query_descriptors

    queries, _ = query_descriptors(data)
    with Searcher(tmp_path / "index") as searcher:
        result = searcher.search(queries[0], top=5)
    sims = np.fromfile(data / "dinov2_gallery_global.pt", np.float32).reshape(64, 32)
    expected = global_shortlist(queries[0].global_[None] / np.linalg.norm(queries[0].global_),
                                sims / np.linalg.norm(sims, axis=1, keepdims=True), 5)[1][0]
    assert [hit.index for hit in result.hits] == expected.tolist()
    capsys.readouterr()
    assert main(["index", "build", "--data", str(data), "--out", str(tmp_path / "other"), "--budget-bytes", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("rerankrt index: error: --budget-bytes: 10 B per image leaves nothing for a first stage: the names "
                   f"and manifest take {(len(json.dumps([None] * 64)) + 16_384) / 64:,.0f} B per image")
    assert not (tmp_path / "other").exists()


def test_recall_queries_of_the_user_are_the_held_out_set(tmp_path, gallery):
    queries = GEN.query_vectors()
    selection = Selection(100, 0.3, queries, "their queries", allow_below_target=True)
    out = write_index(tmp_path / "index", gallery, None, selection=selection)
    recall = json.loads((out / "manifest.json").read_text())["first_stage"]["recall"]
    assert (recall["queries"], recall["held_out"]) == (20, "their queries")
    index = SearchIndex(out)
    found = index.first_stage.search(queries, recall["at"])[1]
    exact = global_shortlist(queries, gallery, recall["at"])[1]
    independent = np.mean([len(np.intersect1d(e, f)) for e, f in zip(exact, found, strict=True)]) / recall["at"]
    assert independent == pytest.approx(recall["value"], rel=1e-9)
    assert faiss_module().downcast_index(index.first_stage.index) is not None


def test_a_shard_set_within_a_budget_chooses_per_shard_and_fits_it(tmp_path, capsys):
    """`index build --shards 2 --budget-bytes B`: each shard (60 of the synthetic set's 120 images) chooses its
    own first stage, among what trains on its rows, within B; the set fits B per image; a budget in which
    nothing fits a shard is refused on --budget-bytes (exit 1, after the table) and writes nothing."""
    from rerankrt.search.shards import shards_info

    data = tmp_path / "synth"
    assert main(["data", "synth", str(data)]) == 0
    build = ["index", "build", "--model", "ames-dist", "--backend", "torch", "--data", str(data), "--shards", "2",
             "--target-recall", "0.9"]
    out = tmp_path / "set"
    assert main([*build, "--budget-bytes", "2500", "--out", str(out)]) == 0
    info = shards_info(out)
    assert (info["images"], info["shards"]) == (120, 2) and info["bytes_per_image"] <= 2500
    for shard in ("shard-000", "shard-001"):
        choice = index_info(out / shard)["choice"]
        assert choice["budget_bytes"] == 2500 and choice["reaches_target"]
        assert any(t["note"].startswith("needs 256 training vectors, the gallery gives 54") for t in choice["tried"])
    capsys.readouterr()
    assert main([*build, "--budget-bytes", "1500", "--out", str(tmp_path / "small")]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the table of what it tried
    assert last.startswith("rerankrt index: --budget-bytes: no candidate fits 414 B per image as built; tried: ")
    assert not (tmp_path / "small").exists()
