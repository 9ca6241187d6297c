"""`rerankrt search` and `Searcher`: equal to the composition of the commands it replaces (extract → shortlist
→ index build → rerank --index) through ONNX Runtime and torch, the search index's layout and checks, and
every bad input in one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV (images extra) is not installed")
torch = pytest.importorskip("torch")

from weights import perturb  # noqa: E402

from rerankrt.cli import main  # noqa: E402
from rerankrt.core.errors import InputError  # noqa: E402
from rerankrt.data.descriptors import read_nn  # noqa: E402
from rerankrt.runtime.request import BackendRequest  # noqa: E402
from rerankrt.search.searcher import QueryDescriptors, Searcher  # noqa: E402

IMSIZE, TOPK, DB, S = "112", "50", "20", 6


def photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / (5 + seed % 4) + c) * np.cos(y / (9 + seed % 3) - c) for c in range(3)], -1)
    return np.clip(base * 100 + 128 + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_extractor):
    """A gallery of 10 images (three of them views of the two queries), the small extractor exported to ONNX
    (conftest), and AMES-dist checkpoints with perturbed weights: released (torch) and an exported one that
    reads the small extractor's 64-d tokens at 2 layers (ONNX Runtime)."""
    import shutil

    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import load_model

    root = tmp_path_factory.mktemp("search")
    gallery, queries = root / "gallery", root / "queries"
    gallery.mkdir()
    queries.mkdir()
    q = [photo(120, 90, 1), photo(90, 120, 2)]
    for i, image in enumerate(q):
        cv2.imwrite(str(queries / f"q{i}.png"), image)
    views = [q[0][10:110], q[1][:, ::-1], q[0][::-1]]
    others = [photo(h, w, 10 + i) for i, (h, w) in enumerate([(120, 90), (90, 120), (100, 100), (64, 120),
                                                               (120, 64), (90, 90), (120, 120)])]
    for i, image in enumerate(views + others):
        cv2.imwrite(str(gallery / f"g{i:02d}.png"), image)
    art = root / "art"
    shutil.copytree(tiny_extractor, art)
    ck = {}
    for name, config in (("released", {}), ("tiny", {"local_dim": 64, "num_layers": 2})):
        ck[name] = root / f"ames-dist-{name}.pt"
        torch.save({"state": perturb(load_model("ames-dist", **config), gain=2.0, spread=0.1).state_dict()}, ck[name])
    for part in ("ames-dist-encoder", "ames-dist-scorer"):
        export_model(part, ck["tiny"], out_dir=art, precision="fp32")
    return {"root": root, "gallery": gallery, "queries": queries, "art": art, "ck": ck, "composed": {}}


def _backend(world, kind: str) -> tuple[list[str], list[str], list[str]]:
    """(extractor flags, re-ranker flags for rerank/index build, search flags) of a backend."""
    if kind == "ort":
        common = ["--backend", "ort", "--artifacts", str(world["art"])]
        return common, common, common
    ck = str(world["ck"]["released"])
    return ["--backend", "torch"], ["--checkpoint", ck], ["--backend", "torch", "--rerank-checkpoint", ck]


def _compose(world, kind: str) -> tuple:
    """The five commands a search replaces, on one backend (once a module): (kind, data folder, index,
    re-ranked nn file)."""
    if kind in world["composed"]:
        return world["composed"][kind]
    extractor, reranker, _ = _backend(world, kind)
    data, index = world["root"] / f"data-{kind}", world["root"] / f"index-{kind}"
    for split, folder in (("gallery", world["gallery"]), ("query", world["queries"])):
        assert main(["extract", "--images", str(folder), "--split", split, "--out", str(data), "--imsize", IMSIZE,
                     "--topk", TOPK, "--batch", "1", *extractor]) == 0
    assert main(["shortlist", "--data", str(data), "--k", "10", "--dim", str(64 if kind == "ort" else 768),
                 "--out", "nn_dinov2.pkl"]) == 0
    assert main(["index", "build", "--model", "ames-dist", "--data", str(data), "--db-descriptors", DB,
                 "--out", str(index), *reranker]) == 0
    assert main(["rerank", "--model", "ames-dist", "--data", str(data), "--nn", "nn_dinov2.pkl", "--index",
                 str(index), "--shortlist", str(S), "--out", str(data / "reranked.pkl"), *reranker]) == 0
    world["composed"][kind] = kind, data, index, data / "reranked.pkl"
    return world["composed"][kind]


@pytest.fixture(scope="module", params=["ort", "torch"])
def composed(request, world):
    return _compose(world, request.param)


@pytest.fixture(scope="module")
def ort_index(world):
    return _compose(world, "ort")


def test_search_equals_the_composed_commands(world, composed, tmp_path, capsys):
    """Same gallery rows in the same order, fused scores within 1e-5, the rest of the first-stage list with its
    global similarity; the names extract recorded; --queries over the descriptor files gives the same."""
    kind, data, index, reranked = composed
    _, _, search = _backend(world, kind)
    out = tmp_path / "results.json"
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--images", str(world["queries"]), "--shortlist", str(S),
                 "--top", "10", "--out", str(out), *search]) == 0
    report = json.loads(out.read_text())
    sims, idx = read_nn(reranked)
    first, _ = read_nn(data / "nn_dinov2.pkl")
    names = sorted(p.name for p in world["gallery"].iterdir())
    assert report["index"] == str(index) and [q["query"] for q in report["queries"]] == ["q0.png", "q1.png"]
    for q, result in enumerate(report["queries"]):
        hits = result["results"]
        assert list(hits[0]) == ["rank", "index", "image", "score", "global"]
        assert [h["rank"] for h in hits] == list(range(1, 11))
        assert [h["index"] for h in hits] == idx[q].tolist()
        assert [h["image"] for h in hits] == [names[i] for i in idx[q]]
        np.testing.assert_allclose([h["score"] for h in hits], sims[q], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([h["global"] for h in hits][S:], first[q, S:], rtol=1e-5, atol=1e-6)
        assert set(result["timing_ms"]) == {"extract", "first_stage", "rerank", "total"}
        assert all(v > 0 for v in result["timing_ms"].values())
    assert idx[:, :S].tolist() != read_nn(data / "nn_dinov2.pkl")[1][:, :S].tolist()  # the re-ranking moved some

    assert main(["search", "--index", str(index), "--queries", str(data), "--shortlist", str(S), "--top", "10",
                 *search]) == 0
    table = capsys.readouterr().out
    assert table.startswith("q0.png  (first_stage ")  # no extract time: the descriptors were given
    lines = [line.split() for line in table.splitlines() if not line.startswith("q")]
    assert [int(line[4][1:]) for line in lines] == idx.reshape(-1).tolist()
    np.testing.assert_allclose([float(line[1]) for line in lines], sims.reshape(-1), rtol=1e-5, atol=1e-6)


def test_the_index_holds_the_first_stage_the_store_and_the_names(composed, capsys):
    kind, data, index, _ = composed
    assert sorted(p.name for p in index.iterdir()) == ["globals.f32", "manifest.json", "names.json", "store"]
    manifest = json.loads((index / "manifest.json").read_text())
    d = 64 if kind == "ort" else 768
    assert manifest["first_stage"] == {"kind": "exact", "metric": "cosine", "desc": "dinov2", "dim": d,
                                       "file": "globals.f32", "encoded_by": manifest["extractor"]}
    assert manifest["extractor"]["model"] == "dinov2-extractor"
    assert (manifest["extractor"]["imsize"], manifest["extractor"]["topk"]) == (112, 50)
    assert manifest["rerank"]["model"] == "ames-dist" and manifest["images"] == 10
    assert (index / "globals.f32").read_bytes() == (data / "dinov2_gallery_global.pt").read_bytes()
    assert main(["index", "info", str(index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    parts = info["bytes_per_image_by_part"]
    assert parts["first_stage"] == 4 * d and parts["names"] == len(json.dumps([f"g{i:02d}.png" for i in
                                                                                 range(10)]) + "\n") / 10
    assert info["bytes_per_image"] * 10 == sum(f.stat().st_size for f in index.rglob("*") if f.is_file())


def test_the_searcher_api(world, ort_index):
    """A path, a BGR array and descriptors give the same hits; top and shortlist clamp to the gallery with a
    message; --rerank none is the first stage; the extractor opens on the first image only."""
    _, data, index, _ = ort_index
    said: list[str] = []
    with Searcher(index, BackendRequest("ort", world["art"]), log=said.append) as searcher:
        image = world["queries"] / "q0.png"
        by_path = searcher.search(image, top=4, shortlist=S)
        assert searcher.extractor is not None
        by_array = searcher.search(cv2.imread(str(image)), top=4, shortlist=S)
        described = searcher.describe(image)
        by_desc = searcher.search(described, top=4, shortlist=S)
        assert by_path.query == "q0.png" and by_array.query == "image" and by_desc.timing_ms["extract"] is None
        assert by_path.hits == by_array.hits == by_desc.hits
        by_batch = searcher.search(described, top=4, shortlist=S, batch=3)  # any run setting of the loop by name
        assert [h.index for h in by_batch.hits] == [h.index for h in by_desc.hits]
        np.testing.assert_allclose([h.score for h in by_batch.hits], [h.score for h in by_desc.hits], rtol=1e-5)
        with pytest.raises(ValueError, match=r"^window: not a setting of the ames-store loop of \S+ \(its settings: "
                                             r"shortlist, lam, gamma, batch\)$"):
            searcher.search(described, window=8)
        many = searcher.search_many([image, world["queries"] / "q1.png"], top=50, shortlist=50)
        assert [len(r.hits) for r in many] == [10, 10]
        assert said == ["top: 50 is more than the gallery's 10 images; taking 10",
                        "shortlist: 50 is more than the gallery's 10 images; taking 10"]
        for bad, message in ((0, "top: expected a positive number of images, got 0"),
                             (-3, "top: expected a positive number of images, got -3")):
            with pytest.raises(InputError, match=f"^{message}$"):
                searcher.search(described, top=bad)
        with pytest.raises(InputError, match=r"^shortlist: expected a positive number of images, got 0$"):
            searcher.search(described, shortlist=0)
        with pytest.raises(InputError, match=r"^query q: expected local descriptors \[n, 64\] and a mask \[n\], "
                                             r"got \[3, 32\] and \[3\]$"):
            searcher.search(QueryDescriptors(described.global_, np.zeros((3, 32), np.float32), np.zeros(3, bool),
                                             "q"))
        with pytest.raises(InputError, match=r"^query q: every local descriptor is padding"):
            searcher.search(QueryDescriptors(described.global_, described.desc, np.ones(50, bool), "q"))
    with Searcher(index, BackendRequest("ort", world["art"]), rerank=None) as first:
        assert first.scorer is None
        hits = first.search(described, top=10).hits
        with pytest.raises(ValueError, match=r"^batch: a re-ranker's setting, and this search re-ranks nothing$"):
            first.search(described, batch=3)
    assert [h.score for h in hits] == [h.global_ for h in hits]
    assert [h.index for h in hits] == read_nn(data / "nn_dinov2.pkl")[1][0].tolist()


def _refused(capsys, args: list[str], message: str) -> None:
    assert main(["search", *args]) == 2
    err = capsys.readouterr().err
    assert err == f"rerankrt search: error: {message}\n", err


def test_bad_indexes_and_weights_are_refused_in_one_line(world, ort_index, tmp_path, capsys):
    """An older store folder, a half-built or truncated index, a first stage and store that disagree, other
    extractor or re-ranker weights, and outputs over the inputs: exit 2, one line, nothing written."""
    import shutil

    from rerankrt.models import TorchBackend
    from rerankrt.runtime.sidecar import sha256
    from rerankrt.search.store import build_store

    _, data, index, _ = ort_index
    ort = ["--backend", "ort", "--artifacts", str(world["art"])]
    q = ["--images", str(world["queries"] / "q0.png"), *ort]
    old = tmp_path / "old-store"
    with TorchBackend("ames-dist-encoder", checkpoint=world["ck"]["tiny"]) as encoder:
        build_store(encoder, data / "dinov2_gallery_local.hdf5", old, 20)
    _refused(capsys, ["--index", str(old), *q], f"index {old}: an AMES store, not a search index (no first stage): "
             f"rebuild it with `rerankrt index build --model ames-dist --data DATA --out INDEX`")
    half = tmp_path / "half"
    shutil.copytree(index, half)
    (half / "manifest.json").unlink()
    _refused(capsys, ["--index", str(half), *q], f"index {half}: no manifest.json (not an index, or an unfinished "
                                                 f"build)")
    shutil.rmtree(half)
    shutil.copytree(index, half)
    (half / "manifest.json").write_text(json.dumps(json.loads((index / "manifest.json").read_text())
                                                   | {"format": "rerankrt-search-index/0"}))
    _refused(capsys, ["--index", str(half), *q], f"index {half}: expected format 'rerankrt-search-index/1', got "
             f"'rerankrt-search-index/0': rebuild it with `rerankrt index build --model MODEL --data DATA --out INDEX`")
    shutil.copy(index / "manifest.json", half / "manifest.json")
    with open(half / "globals.f32", "r+b") as f:
        f.truncate(100)
    _refused(capsys, ["--index", str(half), *q], f"index {half}: globals.f32 holds 100 bytes, expected 2560 (10 × 64 "
             f"float32): rebuild it with `rerankrt index build --model MODEL --data DATA --out INDEX`")
    shutil.rmtree(half / "store")
    shutil.copytree(old, half / "store")
    shutil.copy(index / "globals.f32", half / "globals.f32")
    manifest = json.loads((half / "manifest.json").read_text())
    (half / "manifest.json").write_text(json.dumps(manifest | {"images": 9}))
    (half / "globals.f32").write_bytes((index / "globals.f32").read_bytes()[:9 * 64 * 4])
    (half / "names.json").write_text(json.dumps([None] * 9))
    _refused(capsys, ["--index", str(half), *q], f"index {half}: the first stage holds 9 images, its store 10: "
             f"rebuild it with `rerankrt index build --model ames-dist --data DATA --out INDEX`")

    other = tmp_path / "other"
    shutil.copytree(index, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["extractor"]["checkpoint_sha256"] = "ab12"
    (other / "manifest.json").write_text(json.dumps(manifest))
    _refused(capsys, ["--index", str(other), *q], "query extractor: dinov2-extractor sha256 null, but the index's "
             "gallery was described by dinov2-extractor sha256 ab12 (null: the released random weights)")
    _refused(capsys, ["--index", str(index), "--images", str(world["queries"]), "--backend", "torch",
                      "--rerank-checkpoint", str(world["ck"]["released"])],
             f"store {index / 'store'} does not fit encoder ames-dist-encoder:\n  checkpoint: the store was encoded "
             f"with sha256 {json.loads((index / 'manifest.json').read_text())['rerank']['checkpoint_sha256']}, the "
             f"encoder holds "
             f"{sha256(world['ck']['released'])} (null: "
             f"the released configuration's random weights)\n  dimension: the store encodes 64-d descriptors into "
             f"128-d tokens, the encoder 768-d into 128-d")
    _refused(capsys, ["--index", str(index), *q, "--rerank", "ames"], f"--rerank: the index {index} holds a store "
             f"of ames-dist, not ames's (search it with --rerank none, or build one with `rerankrt index build "
             f"--model ames`)")
    _refused(capsys, ["--index", str(index), *q, "--out", str(index / "r.json")],
             f"--out: {index / 'r.json'} is inside the index {index}; choose another output")
    _refused(capsys, ["--index", str(index), *q, "--out", str(world["queries"] / "q0.png"), "--force"],
             f"--out: {world['queries'] / 'q0.png'} is an input of this run ({world['queries'] / 'q0.png'}); "
             f"choose another output")
    broken = tmp_path / "broken.jpg"
    ok, jpeg = cv2.imencode(".jpg", photo(60, 60, 3))
    broken.write_bytes(jpeg.tobytes()[:len(jpeg) * 3 // 4])
    _refused(capsys, ["--index", str(index), "--images", str(broken), *ort, "--out", str(tmp_path / "r.json")],
             f"image {broken}: a truncated JPEG (it ends inside its image data)")
    assert not (tmp_path / "r.json").exists()


def test_a_faiss_first_stage_searches_like_the_exact_one(world, ort_index, tmp_path, capsys):
    """`index build --first-stage HNSW16` over the same gallery: no raw globals in the index, its recall
    measured and printed by `index info` (10 images: the graph finds them all), the same results as the exact
    index; `--ef-search` at search time, and knobs the first stage lacks, refused."""
    pytest.importorskip("faiss", reason="faiss-cpu (the search extra) is not installed")
    _, data, exact, _ = ort_index
    ort = ["--backend", "ort", "--artifacts", str(world["art"])]
    index = tmp_path / "hnsw"
    assert main(["index", "build", "--model", "ames-dist", "--data", str(data), "--db-descriptors", DB,
                 "--first-stage", "HNSW16", "--ef-search", "32", "--out", str(index), *ort]) == 0
    assert ("first stage HNSW16: recall@9 1.000 against the exact scan (10 held-out queries: gallery images, each "
            "removed from its own ground truth)") in capsys.readouterr().err  # of 10 images, 9 others each
    assert "globals.f32" not in {p.name for p in index.iterdir()}
    assert main(["index", "info", str(index)]) == 0
    assert ("\nrecall                   at 9, queries 10, held_out gallery images, each removed from its own ground "
            "truth, seed 0, value 1.0\n") in capsys.readouterr().out
    results = []
    for folder, knobs in ((exact, []), (index, []), (index, ["--ef-search", "8"])):
        out = tmp_path / f"{folder.name}-{len(knobs)}.json"
        assert main(["search", "--index", str(folder), "--queries", str(data), "--shortlist", str(S), "--top", "10",
                     "--out", str(out), *knobs, *ort]) == 0
        results.append([[(h["index"], round(h["score"], 5)) for h in q["results"]]
                        for q in json.loads(out.read_text())["queries"]])
    assert results[0] == results[1] == results[2]
    capsys.readouterr()
    q = ["--queries", str(data), *ort]
    _refused(capsys, ["--index", str(index), "--ef-search", "0", *q], "--ef-search: expected a positive number, got 0")
    _refused(capsys, ["--index", str(index), "--nprobe", "4", *q],
             "--nprobe: the index's first stage has no nprobe to set (it takes efSearch)")
    _refused(capsys, ["--index", str(exact), "--nprobe", "4", *q],
             "--nprobe: the index's first stage is exact (it has no nprobe to set)")


def test_a_shard_set_searches_like_one_index(world, ort_index, tmp_path, capsys):
    """`index build --shards 3` splits the gallery's rows (0-2, 3-6, 7-9) into indexes of their own; a search
    over the set, and over its shards given as indexes of disjoint galleries, equals the one index over all
    rows (the same gallery rows, scores within 1e-5); `index info` counts the set's every file; shards that
    disagree, and a shard count the gallery cannot take, are refused in one line."""
    _, data, whole, _ = ort_index
    ort = ["--backend", "ort", "--artifacts", str(world["art"])]
    build = ["index", "build", "--model", "ames-dist", "--data", str(data), *ort]
    sharded = tmp_path / "sharded"
    assert main([*build, "--db-descriptors", DB, "--shards", "3", "--out", str(sharded)]) == 0
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert [(s["path"], s["rows"]) for s in manifest["shards"]] == [
        ("shard-000", [0, 3]), ("shard-001", [3, 7]), ("shard-002", [7, 10])]
    shards = [str(sharded / s["path"]) for s in manifest["shards"]]
    results = []
    for indexes in ([str(whole)], [str(sharded)], shards):
        out = tmp_path / f"results-{len(results)}.json"
        assert main(["search", "--index", *indexes, "--queries", str(data), "--shortlist", str(S), "--top", "10",
                     "--out", str(out), *ort]) == 0
        results.append(json.loads(out.read_text()))
    assert results[2]["index"] == shards
    for result in results[1:]:
        for q, one in zip(result["queries"], results[0]["queries"], strict=True):
            rows = [[(h["index"], h["image"]) for h in r["results"]] for r in (q, one)]
            assert rows[0] == rows[1]
            np.testing.assert_allclose([h["score"] for h in q["results"]], [h["score"] for h in one["results"]],
                                       rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert main(["index", "info", "--json", str(sharded)]) == 0
    info = json.loads(capsys.readouterr().out)
    files = sum(f.stat().st_size for f in sharded.rglob("*") if f.is_file())
    assert (info["images"], info["shards"], info["bytes"]) == (10, 3, files)
    assert info["bytes_per_image"] == pytest.approx(sum(info["bytes_per_image_by_part"].values()))
    assert [s["images"] for s in info["shard_info"]] == [3, 4, 3]

    other = tmp_path / "other"
    assert main([*build, "--db-descriptors", "10", "--out", str(other)]) == 0
    capsys.readouterr()
    _refused(capsys, ["--index", shards[0], str(other), "--queries", str(data), *ort],
             f"index {other}: its descriptors per image is 10, index {shards[0]}'s 20; the shards of one search "
             f"must agree")
    for bad in ("0", "11"):
        assert main([*build, "--shards", bad, "--out", str(tmp_path / "bad")]) == 2
        assert capsys.readouterr().err.strip().endswith(
            f"--shards: expected 1 to the gallery's 10 images, got {bad}")
        assert not (tmp_path / "bad").exists()


def test_a_gallery_of_one_image(world, ort_index, tmp_path, capsys):
    from rerankrt.data.descriptors import LocalDescriptorFile, read_global, write_global, write_local

    _, data, _, _ = ort_index
    one = tmp_path / "one"
    one.mkdir()
    with LocalDescriptorFile(data / "dinov2_gallery_local.hdf5") as f:
        local = f.read([4])
    write_local(one / "dinov2_gallery_local.hdf5", local.desc, local.mask)
    write_global(one / "dinov2_gallery_global.pt", np.asarray(read_global(data / "dinov2_gallery_global.pt", 64))[4:5])
    ort = ["--backend", "ort", "--artifacts", str(world["art"])]
    assert main(["index", "build", "--model", "ames-dist", "--data", str(one), "--db-descriptors", DB,
                 "--out", str(tmp_path / "index"), *ort]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "index"), "--images", str(world["queries"] / "q1.png"), *ort,
                 "--imsize", IMSIZE, "--out", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    assert "top: 10 is more than the gallery's 1 images; taking 1" in err
    assert "its gallery records no extractor" in err  # published-style files: names null, weights unchecked
    (result,) = json.loads((tmp_path / "r.json").read_text())["queries"]
    assert [(h["rank"], h["index"], h["image"]) for h in result["results"]] == [(1, 0, None)]


def test_the_bench_times_a_search_stage_by_stage(world, ort_index, tmp_path, capsys):
    """`rerankrt bench --search`: the index's re-ranker and its first stage alone per backend, each stage's
    median over the queries (null where the case skips the stage); the table printed is the one written."""
    _, _, index, _ = ort_index
    out, ort = tmp_path / "bench", ["--backends", "ort", "--artifacts", str(world["art"])]
    capsys.readouterr()
    assert main(["bench", "--search", str(index), "--images", str(world["queries"]), *ort, "--out", str(out)]) == 0
    results = json.loads((out / "search.json").read_text())
    assert results["queries"] == 2 and results["precision"] == "fp32"
    assert [(r["index"], r["images"], r["rerank"], r["backend"]) for r in results["rows"]] == [
        (index.name, 10, "ames-dist", "ort"), (index.name, 10, None, "ort")]
    reranked, alone = results["rows"]
    assert alone["rerank_ms"] is None and min(reranked["rerank_ms"], reranked["extract_ms"], alone["extract_ms"]) > 0
    for row in results["rows"]:  # the median of two is their mean: the stages' medians add up within the total's
        assert row["total_ms"] >= row["extract_ms"] + row["first_stage_ms"] + (row["rerank_ms"] or 0)
    assert capsys.readouterr().out == (out / "search.md").read_text()
    assert (out / "search.md").read_text().splitlines()[4] == (
        f"| {index.name} (10) | ames-dist | ort | " + " | ".join(f"{reranked[f'{s}_ms']:,.1f}" for s in
                                                          ("extract", "first_stage", "rerank", "total")) + " |")
    for argv, message in (
            (["--search", str(index)], "--search: the indexes to time searches over, with --images: the query images"),
            (["--search", str(index), "--images", str(world["queries"]), "--precision", "fp32,fp16"],
             "--precision: one precision with --search, got fp32,fp16"),
            (["--search", str(index), "--images", str(world["queries"]), "--shortlist", "50"],
             "--shortlist: not a setting of --search (the index holds its models and shortlist)"),
            (["--search", str(index), str(index), "--images", str(world["queries"]), "--force"],
             f"--search: two indexes named {index.name}; give each its own folder name"),
            (["--search", str(index), "--images", str(world["queries"])], "search.json exists")):
        assert main(["bench", *argv, *ort, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err


def test_the_search_latency_script_keeps_a_measured_run(tmp_path, capsys):
    """`python -m rerankrt.bench.search_latency` refuses to replace an earlier run's search.json without --force,
    before any photo is written or described."""
    from rerankrt.bench.search_latency import main as search_latency

    (tmp_path / "search.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        search_latency(["--out", str(tmp_path), "--work", str(tmp_path / "work")])
    assert exit_.value.code == 2 and (tmp_path / "search.json").read_text() == "{}"
    assert capsys.readouterr().err.endswith(f"error: --out: {tmp_path / 'search.json'} exists (pass --force to "
                                            f"replace it)\n")
    assert not (tmp_path / "work").exists()


def test_searcher_from_rerankrt_runs_without_torch(world, ort_index):
    """`from rerankrt import Searcher` with ONNX Runtime graphs: the hits of the CLI, and torch never imported."""
    import subprocess
    import sys

    _, data, index, reranked = ort_index
    code = (f"import json, sys\nfrom rerankrt import BackendRequest, Searcher\n"
            f"with Searcher({str(index)!r}, BackendRequest('ort', {str(world['art'])!r})) as s:\n"
            f"    hits = s.search({str(world['queries'] / 'q1.png')!r}, top=10, shortlist={S}).hits\n"
            f"print(json.dumps({{'torch': 'torch' in sys.modules, 'rows': [h.index for h in hits]}}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"torch": False, "rows": read_nn(reranked)[1][1].tolist()}


def test_the_triton_repository_gets_a_search_model(world, ort_index, tmp_path, capsys):
    """`rerankrt triton --index`: a `search` model over the index and the repository's extractor, encoder and
    scorer, validated offline; refused without the extractor, and reported by --check once the index moves
    (the real server's answers: tests/serve/test_server.py)."""
    import shutil

    from rerankrt.serve.check import check_repository

    _, _, index, _ = ort_index
    repo = tmp_path / "repo"
    common = ["triton", "--artifacts", str(world["art"]), "--precision", "fp32", "--platform", "python"]
    assert main([*common, "--models", "ames-dist-encoder,ames-dist-scorer", "--index", str(index),
                 "--out", str(repo)]) == 2
    assert ("rerankrt triton: error: --index: the search model needs dinov2-extractor in --artifacts (export them "
            "with `rerankrt export`)") in capsys.readouterr().err
    assert main([*common, "--index", str(index), "--out", str(repo)]) == 0
    assert sorted(p.name for p in repo.iterdir()) == [".rerankrt-repository", "ames-dist-encoder", "ames-dist-scorer",
                                                      "dinov2-extractor", "search", "search_shard_000",
                                                      "search_shard_000_rerank"]
    config = (repo / "search" / "config.pbtxt").read_text()
    for line in ('name: "query"', "data_type: TYPE_STRING", "optional: true", f'string_value: "{index.resolve()}"',
                 'key: "extractor_model"', 'string_value: "dinov2-extractor"'):
        assert line in config, line
    assert "from rerankrt.serve.triton_search import SearchModel" in (repo / "search" / "1" / "model.py").read_text()
    assert check_repository(repo) == []
    moved = tmp_path / "moved"
    shutil.move(index, moved)
    try:
        assert check_repository(repo) == [
            f"{repo / name / 'config.pbtxt'}: parameters {key}: index {index.resolve()}: no such folder"
            for name, key in (("search", "index"), ("search_shard_000", "index"), ("search_shard_000_rerank", "store"))]
    finally:
        shutil.move(moved, index)


def test_the_triton_repository_fans_a_shard_set_out(world, ort_index, tmp_path, capsys):
    """`rerankrt triton --index SHARDS`: per shard a first-stage model and a store loop over its own folder,
    named in gallery order by the search model's parameters (the real server's answers over two shards:
    tests/serve/test_server.py); `--check` reports shard models wired to the wrong shard or fusing with other
    settings."""
    from rerankrt.serve.check import check_repository

    _, data, _, _ = ort_index
    ort = ["--backend", "ort", "--artifacts", str(world["art"])]
    sharded, repo = tmp_path / "sharded", tmp_path / "repo"
    assert main(["index", "build", "--model", "ames-dist", "--data", str(data), "--db-descriptors", DB, "--shards",
                 "3", "--out", str(sharded), *ort]) == 0
    assert main(["triton", "--artifacts", str(world["art"]), "--precision", "fp32", "--platform", "python",
                 "--index", str(sharded), "--max-shortlist", "40", "--out", str(repo)]) == 0
    shards = [f"search_shard_{i:03d}" for i in range(3)]
    assert sorted(p.name for p in repo.iterdir() if p.name.startswith("search")) == sorted(
        ["search", *shards, *(f"{s}_rerank" for s in shards)])
    search = (repo / "search" / "config.pbtxt").read_text()
    for line in (f'string_value: "{",".join(shards)}"', f'string_value: "{",".join(s + "_rerank" for s in shards)}"',
                 'key: "max_top"\n  value {\n    string_value: "40"'):
        assert line in search, line
    for i, shard in enumerate(shards):
        folder = str((sharded / f"shard-{i:03d}").resolve())
        first, loop = ((repo / name / "config.pbtxt").read_text() for name in (shard, f"{shard}_rerank"))
        assert f'string_value: "{folder}"' in first and f'string_value: "{folder}"' in loop
        assert 'key: "max_k"\n  value {\n    string_value: "100"' in first  # the released shortlist: > 40
        assert 'string_value: "ames-store-encoded"' in loop and 'name: "q_encoded"' in loop  # the front encodes
        assert "encoder_model" not in loop  # the query once: no shard calls the encoder
    assert check_repository(repo) == []
    first, second = (repo / name / "config.pbtxt" for name in shards[:2])
    texts = first.read_text(), second.read_text()
    first.write_text(texts[1].replace(shards[1], shards[0]))
    second.write_text(texts[0].replace(shards[0], shards[1]))
    loop = repo / f"{shards[2]}_rerank" / "config.pbtxt"
    loop.write_text(loop.read_text().replace('key: "lambda"\n  value {\n    string_value: "0.35"',
                                             'key: "lambda"\n  value {\n    string_value: "0.5"'))
    folders = [str((sharded / f"shard-{i:03d}").resolve()) for i in range(2)]
    assert check_repository(repo) == [
        f"{repo / 'search' / 'config.pbtxt'}: parameters: {shards[0]} is not the search-shard model over the shard "
        f"{folders[0]} (its loop 'search-shard', index '{folders[1]}')",
        f"{repo / 'search' / 'config.pbtxt'}: parameters: {shards[1]} is not the search-shard model over the shard "
        f"{folders[1]} (its loop 'search-shard', index '{folders[0]}')",
        f"{repo / 'search' / 'config.pbtxt'}: parameters: {shards[2]}_rerank fuses with lambda 0.5, gamma 0.1; the "
        f"search model with 0.35, 0.1"]


def test_raml_first_stage_equals_the_composed_commands(world, tmp_path, capsys):
    """An index over RAML's vectors (the gallery by the teacher at 448 px, queries by the student at 224):
    `search` equals extract --raml-checkpoint → shortlist --desc raml → index build --globals raml →
    rerank --index; with --rerank none the query costs RAML alone (the DINOv2 extractor never opens)."""
    from weights import RAML_META

    from rerankrt.models import load_model

    raml = tmp_path / "raml.pth"
    torch.save({"meta": RAML_META, "state_dict": load_model("raml").state_dict()}, raml)
    ort = ["--backend", "ort", "--artifacts", str(world["art"])]
    data, index = tmp_path / "data", tmp_path / "index"
    for split, folder in (("gallery", world["gallery"]), ("query", world["queries"])):
        assert main(["extract", "--images", str(folder), "--split", split, "--out", str(data), "--imsize", IMSIZE,
                     "--topk", TOPK, "--batch", "1", "--raml-checkpoint", str(raml), *ort]) == 0
    assert main(["shortlist", "--data", str(data), "--desc", "raml", "--dim", "512", "--k", "10",
                 "--out", "nn_raml.pkl"]) == 0
    assert main(["index", "build", "--model", "ames-dist", "--data", str(data), "--globals", "raml",
                 "--db-descriptors", DB, "--out", str(index), *ort]) == 0
    assert main(["rerank", "--model", "ames-dist", "--data", str(data), "--nn", "nn_raml.pkl", "--index", str(index),
                 "--shortlist", str(S), "--out", str(data / "reranked.pkl"), *ort]) == 0
    first = json.loads((index / "manifest.json").read_text())["first_stage"]
    assert (first["desc"], first["dim"], first["encoded_by"]["model"], first["encoded_by"]["imsize"]) == \
        ("raml", 512, "raml", 448)
    out = tmp_path / "results.json"
    assert main(["search", "--index", str(index), "--images", str(world["queries"]), "--shortlist", str(S),
                 "--out", str(out), "--raml-checkpoint", str(raml), *ort]) == 0
    sims, idx = read_nn(data / "reranked.pkl")
    for q, result in enumerate(json.loads(out.read_text())["queries"]):
        assert [h["index"] for h in result["results"]] == idx[q].tolist()
        np.testing.assert_allclose([h["score"] for h in result["results"]], sims[q], rtol=1e-5, atol=1e-6)
    first_sims, first_idx = read_nn(data / "nn_raml.pkl")
    assert first_idx[:, :S].tolist() != idx[:, :S].tolist()  # re-ranked: the comparison can fail
    with Searcher(index, BackendRequest("ort", world["art"]), rerank=None, weights={"raml": raml}) as alone:
        result = alone.search(world["queries"] / "q1.png", top=10)
        assert alone.extractor is None and result.timing_ms["rerank"] is None
    assert [h.index for h in result.hits] == first_idx[1].tolist()
    np.testing.assert_allclose([h.score for h in result.hits], first_sims[1], rtol=1e-5, atol=1e-6)
