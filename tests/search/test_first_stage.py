"""An index's first stage: exact equal to numpy (ties in gallery order), faiss ones within the recall their
manifest records (checked against an independent exact search), the database side within 1 KB per image,
the search knobs, and every bad input in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rerankrt.bench.store_scale import synthesize_store
from rerankrt.bench.synth import low_rank_globals
from rerankrt.core.errors import InputError, ModelFileError
from rerankrt.search.first_stage import FAISS_FILE, ivf_lists, ivf_pq, sample_rows
from rerankrt.search.index import SearchIndex, index_info, write_index
from rerankrt.search.shards import open_index

faiss = pytest.importorskip("faiss", reason="faiss-cpu (the search extra) is not installed")

N, D = 3000, 64


def build(out, vectors, first_stage="exact", logs=None, **settings):
    n = len(vectors)
    return write_index(out, vectors, lambda path: synthesize_store(path, n), first_stage=first_stage,
                       log=(logs.append if logs is not None else lambda m: None), **settings)


@pytest.fixture(scope="module")
def gallery():
    return low_rank_globals(N, D, latent=16, seed=3)


def numpy_top(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Exact top k by inner product, equal values in gallery order (an independent stable sort)."""
    sims = queries.astype(np.float64) @ vectors.astype(np.float64).T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_exact_first_stage_equals_numpy_with_ties_in_gallery_order(tmp_path, gallery):
    vectors = gallery[:500].copy()
    vectors[[7, 100, 301]] = vectors[400]  # four equal images: equal similarities, in gallery order
    index = SearchIndex(build(tmp_path / "index", vectors))
    assert index.first_stage.kind == "exact" and index.manifest["first_stage"]["kind"] == "exact"
    queries = np.concatenate([vectors[[400]], low_rank_globals(20, D, latent=16, seed=4)])
    sims, idx = index.first_stage.search(queries, 50)
    assert idx[0, :4].tolist() == [7, 100, 301, 400]
    np.testing.assert_array_equal(idx[1:], numpy_top(queries[1:], vectors, 50))
    np.testing.assert_allclose(sims, np.take_along_axis(queries @ vectors.T, idx, 1), rtol=1e-5, atol=1e-6)


def test_shards_merge_to_the_exact_scan_of_their_union_with_ties_in_gallery_order(tmp_path, gallery):
    """Three exact indexes over rows 0-199, 200-349, 350-499 searched as one equal the one index over all
    500 rows: the same rows (equal images across shards in gallery order), the same similarities; the store
    read by gallery row reads each row from its shard."""
    vectors = gallery[:500].copy()
    vectors[[7, 250, 301, 400]] = vectors[420]
    bounds = [0, 200, 350, 500]
    paths = [build(tmp_path / f"shard-{lo}", vectors[lo:hi]) for lo, hi in zip(bounds, bounds[1:], strict=False)]
    sharded, whole = open_index(paths), SearchIndex(build(tmp_path / "whole", vectors))
    assert (sharded.images, sharded.offsets) == (500, [0, 200, 350])
    queries = np.concatenate([vectors[[420]], low_rank_globals(20, D, latent=16, seed=4)])
    sims, idx = sharded.first_stage.search(queries, 50)
    want_sims, want_idx = whole.first_stage.search(queries, 50)
    assert idx[0, :5].tolist() == [7, 250, 301, 400, 420]
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(sims, want_sims, rtol=1e-5, atol=1e-6)  # GEMMs of other shapes: rounding apart
    rows = [499, 0, 200, 349, 350, 7]
    shard_of = [2, 0, 1, 1, 2, 0]
    want = [SearchIndex(paths[i]).store.entries([r - bounds[i]]) for r, i in zip(rows, shard_of, strict=True)]
    for got, part in zip(sharded.store.entries(rows), zip(*want, strict=True), strict=True):
        np.testing.assert_array_equal(got, np.concatenate(part))
    with pytest.raises(InputError, match=r"image indices must be in \[0, 500\), got \[500\]"):
        sharded.store.entries([3, 500])


@pytest.mark.parametrize("factory", ["IVF32,PQ16", "OPQ16,IVF32,PQ16", "HNSW16"])
def test_faiss_first_stage_within_its_recorded_recall(tmp_path, gallery, factory):
    logs: list[str] = []
    out = build(tmp_path / "index", gallery, factory, logs, **({} if factory == "HNSW16" else {"nprobe": 8}))
    assert sorted(p.name for p in out.iterdir()) == [FAISS_FILE, "manifest.json", "names.json", "store"]  # no raw
    entry = json.loads((out / "manifest.json").read_text())["first_stage"]
    assert (entry["kind"], entry["factory"], entry["train_sample"], entry["dim"]) == ("faiss", factory, N, D)
    assert entry["params"] == ({"efSearch": 128} if factory == "HNSW16" else {"nprobe": 8})
    recall = entry["recall"]
    assert (recall["at"], recall["queries"], recall["seed"]) == (100, 1000, 0)
    assert recall["held_out"] == "gallery images, each removed from its own ground truth"
    assert f"first stage {factory}: recall@100 {recall['value']:.3f} against the exact scan" in logs[-1]
    index = SearchIndex(out)
    rows = sample_rows(N, recall["queries"], recall["seed"])
    exact = numpy_top(gallery[rows], gallery, 101)
    found = index.first_stage.search(gallery[rows], 101)[1]
    # an image never finds itself: each query's own row leaves its ground truth and the stage's answer
    independent = np.mean([len(set(e[e != r][:100]) & set(f[f != r][:100])) / 100
                           for e, f, r in zip(exact, found, rows, strict=True)])
    assert independent == pytest.approx(recall["value"], abs=1e-9)
    assert 0.3 < recall["value"] <= 1.0
    others = low_rank_globals(300, D, latent=16, seed=3, start=N)  # new images of the same distribution
    fresh = np.mean([len(set(e) & set(f)) / 100 for e, f in zip(
        numpy_top(others, gallery, 100), index.first_stage.search(others, 100)[1], strict=True)])
    assert abs(fresh - recall["value"]) < 0.1  # the recorded figure holds for queries outside the gallery
    assert index_info(out)["recall"] == recall


def test_search_knobs_change_the_recall(tmp_path, gallery):
    index = SearchIndex(build(tmp_path / "index", gallery, "IVF32,Flat", nprobe=1))
    queries = gallery[sample_rows(N, 200, 1)]
    exact = numpy_top(queries, gallery, 100)

    def recall(**knobs):
        found = index.first_stage.search(queries, 100, **knobs)[1]
        return np.mean([len(set(e) & set(f)) / len(e) for e, f in zip(exact, found, strict=True)])

    assert recall() < recall(nprobe=4) < recall(nprobe=32) == 1.0  # all 32 lists: the exact set
    assert recall() == pytest.approx(index.manifest["first_stage"]["recall"]["value"], abs=0.1)
    with pytest.raises(InputError, match=r"^nprobe: expected a positive number, got 0$"):
        index.first_stage.search(queries, 10, nprobe=0)
    with pytest.raises(InputError, match=r"^ef_search: the index's first stage has no efSearch to set \(it takes "
                                         r"nprobe\)$"):
        index.first_stage.search(queries, 10, ef_search=64)
    exact_index = SearchIndex(build(tmp_path / "exact", gallery[:100]))
    with pytest.raises(InputError, match=r"^nprobe: the index's first stage is exact \(it has no nprobe to set\)$"):
        exact_index.first_stage.search(queries, 10, nprobe=4)


def test_whole_database_side_within_1_kb_per_image(tmp_path):
    """ames-dist at 50 descriptors with a PQ first stage, 10,000 images: every file of the index counted."""
    images = 10_000
    vectors = low_rank_globals(images, 768, seed=5)
    out = write_index(tmp_path / "index", vectors, lambda path: synthesize_store(path, images, "ames-dist"),
                      first_stage="IVF64,PQ64", train_sample=4000)  # the sample bounds the training time
    info = index_info(out)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert info["bytes"] == total and info["bytes_per_image"] == total / images
    parts = info["bytes_per_image_by_part"]
    # 64-byte codes and 8-byte ids per image, beside the PQ's codebooks and the IVF's centroids (~1 MB in all)
    fixed = 4 * (64 * 256 * 768 // 64 + 64 * 768)
    assert parts["first_stage"] == (out / FAISS_FILE).stat().st_size / images <= 72 + (fixed + 4096) / images
    assert info["bytes_per_image"] <= 1024, parts
    exact = write_index(tmp_path / "exact", vectors, lambda path: synthesize_store(path, images, "ames-dist"),
                        first_stage="exact")
    assert index_info(exact)["bytes_per_image_by_part"]["first_stage"] == 768 * 4  # the raw globals: 3 KB


def test_inverted_lists_about_four_root_n():
    assert (ivf_lists(100_001), ivf_lists(1_000_000), ivf_lists(3000)) == (1024, 4096, 256)
    assert ivf_pq(1_000_000) == "IVF4096,PQ64"


def test_a_gallery_not_l2_normalised_is_normalised_and_said(tmp_path, gallery):
    logs: list[str] = []
    index = SearchIndex(build(tmp_path / "index", gallery[:200] * 3, logs=logs))
    assert logs == ["global vectors: not L2-normalised; normalised them (the first stage is a cosine similarity)"]
    np.testing.assert_allclose(index.globals, gallery[:200], rtol=1e-5, atol=1e-6)
    zero = gallery[:200].copy()
    zero[17] = 0
    with pytest.raises(InputError, match=r"^global vectors: image 17 has a zero vector \(no cosine "
                                                  r"similarity\)$"):
        build(tmp_path / "zero", zero)
    assert not (tmp_path / "zero").exists()


@pytest.mark.parametrize(("factory", "settings", "message"), [
    ("IVFbogus,PQ16", {}, "first_stage: faiss rejects 'IVFbogus,PQ16': could not parse index string IVFbogus,PQ16"),
    ("IVF32,PQ7", {}, "first_stage: faiss rejects 'IVF32,PQ7': Error: '!(d % M == 0)' failed: The dimension of "
                      "the vector (d) should be a multiple of the number of subquantizers (M)"),
    ("IVF32,PQ16", {"train_sample": N + 1}, f"train_sample: expected 1 to the gallery's {N} images, got {N + 1}"),
    ("IVF32,PQ16", {"train_sample": 20}, "train_sample: 20 vectors cannot train IVF32,PQ16's 32 inverted lists "
                                         "(give at least 32, ideally 1248)"),
    ("IVF32,PQ16", {"nprobe": 0}, "nprobe: expected a positive number, got 0"),
    ("IVF32,PQ16", {"ef_search": 32}, "ef_search: IVF32,PQ16 has no efSearch to set"),
    ("exact", {"nprobe": 4}, "nprobe: the first stage is exact (it takes no nprobe)"),
])
def test_bad_first_stage_arguments(tmp_path, gallery, factory, settings, message):
    with pytest.raises(InputError) as e:
        build(tmp_path / "index", gallery, factory, **settings)
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging left


def test_faiss_file_of_another_index_or_truncated_is_refused(tmp_path, gallery):
    out = build(tmp_path / "index", gallery, "IVF32,Flat")
    good = (out / FAISS_FILE).read_bytes()
    other = faiss.index_factory(32, "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
    other.train(low_rank_globals(2000, 32, latent=8))
    faiss.write_index(other, str(out / FAISS_FILE))
    hint = "rebuild it with `rerankrt index build --model MODEL --data DATA --out INDEX`"
    with pytest.raises(ModelFileError) as e:
        SearchIndex(out)
    assert str(e.value) == (f"index {out}: {out / FAISS_FILE}: a faiss index of dimension 32 (inner product); the "
                            f"index's first stage is {D}-d inner product: {hint}")
    l2 = faiss.index_factory(D, "Flat")
    l2.add(gallery)
    faiss.write_index(l2, str(out / FAISS_FILE))
    with pytest.raises(ModelFileError, match="dimension 64 \\(not inner product\\)"):
        SearchIndex(out)
    (out / FAISS_FILE).write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError) as e:
        SearchIndex(out)
    assert str(e.value).startswith(f"index {out}: {out / FAISS_FILE}: not a readable faiss index (truncated?): ")
    assert str(e.value).endswith(hint) and "\n" not in str(e.value)


def test_a_faiss_first_stage_without_faiss_is_one_line_naming_the_extra(tmp_path, gallery):
    np.save(tmp_path / "g.npy", gallery)
    code = ("import sys; sys.modules['faiss'] = None\n"
            "import numpy as np\n"
            "from rerankrt.bench.store_scale import synthesize_store\n"
            "from rerankrt.search.index import write_index\n"
            f"v = np.load({str(tmp_path / 'g.npy')!r})\n"
            f"write_index({str(tmp_path / 'index')!r}, v, lambda p: synthesize_store(p, len(v)), "
            "first_stage='IVF32,PQ16')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stderr.strip().splitlines()[-1] == (
        "rerankrt.core.errors.UnavailableError: an approximate first stage needs faiss-cpu, which is not available "
        "here (import of faiss halted; None in sys.modules); pip install 'rerankrt[search]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy"]
