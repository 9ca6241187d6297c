"""LOCORE from an index: `index build --model locore-small` stores the gallery's globals and first 48 locals in
FP16, and `search --rerank locore-small` re-ranks from them with the sliding windows: equal to `rerank --model
locore-small` over the HDF5 files on the same shortlist (1e-5 where the descriptors are FP16 values already,
FP16's rounding otherwise); a store of other weights refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rerankrt.bench.synth import synthesize  # noqa: E402
from rerankrt.cli import main  # noqa: E402
from rerankrt.data.descriptors import LocalDescriptorFile, read_global, read_nn, write_global, write_local  # noqa: E402
from rerankrt.search.locore_store import LocoreStore  # noqa: E402

S = 12
TORCH = ["--backend", "torch"]


def dataset(root, rounded: bool):
    """A synthetic dataset of 2 queries and 30 gallery images (50 locals each); `rounded`: the gallery's
    descriptors replaced by their FP16 values (still unit within 1e-3), so storing them in FP16 loses nothing."""
    data = synthesize(root, queries=2, database=30, query_locals=60, db_locals=50)
    if rounded:
        with LocalDescriptorFile(data / "dinov2_gallery_local.hdf5") as f:
            local = f.read(np.arange(f.num_images))
        write_local(data / "dinov2_gallery_local.hdf5", local.desc.astype(np.float16).astype(np.float32), local.mask)
        vectors = np.asarray(read_global(data / "dinov2_gallery_global.pt", 768))
        write_global(data / "dinov2_gallery_global.pt", vectors.astype(np.float16).astype(np.float32))
    assert main(["shortlist", "--data", str(data), "--k", "30", "--out", "nn_exact.pkl"]) == 0
    return data


def compose_and_search(data, tmp_path):
    """(rerank's nn file, search's JSON) over the same exact shortlist, released settings but S."""
    assert main(["rerank", "--model", "locore-small", "--data", str(data), "--nn", "nn_exact.pkl", "--shortlist",
                 str(S), "--out", str(tmp_path / "reranked.pkl"), *TORCH]) == 0
    index = tmp_path / "index"
    assert main(["index", "build", "--model", "locore-small", "--data", str(data), "--out", str(index), *TORCH]) == 0
    assert main(["search", "--index", str(index), "--queries", str(data), "--shortlist", str(S), "--top", "30",
                 "--out", str(tmp_path / "results.json"), *TORCH]) == 0
    return read_nn(tmp_path / "reranked.pkl"), json.loads((tmp_path / "results.json").read_text()), index


def test_locore_from_the_index_equals_rerank_over_the_files(tmp_path, capsys):
    (sims, idx), report, index = compose_and_search(dataset(tmp_path / "data", rounded=True), tmp_path)
    store = LocoreStore(index / "store")
    assert (store.images, store.descriptors, store.manifest["model"]) == (30, 48, "locore-small")
    assert (index / "store" / "locals.f16").stat().st_size == 30 * 48 * 768 * 2
    for q, result in enumerate(report["queries"]):
        assert [h["index"] for h in result["results"]] == idx[q].tolist()
        np.testing.assert_allclose([h["score"] for h in result["results"]], sims[q], rtol=1e-5, atol=1e-6)
    assert idx[:, :S].tolist() != read_nn(tmp_path / "data" / "nn_exact.pkl")[1][:, :S].tolist()  # it re-ranked
    capsys.readouterr()
    assert main(["index", "info", "--json", str(index)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["model"], info["descriptors_per_image"]) == ("locore-small", 48)
    assert info["bytes_per_image_by_part"]["store"] == pytest.approx((48 + 1) * 768 * 2 + 6, abs=40)


def test_fp16_storage_stays_within_fp16_rounding_of_the_files(tmp_path):
    (sims, idx), report, _ = compose_and_search(dataset(tmp_path / "data", rounded=False), tmp_path)
    for q, result in enumerate(report["queries"]):
        got = {h["index"]: h["score"] for h in result["results"]}
        assert set(got) == set(idx[q].tolist())
        np.testing.assert_allclose([got[i] for i in idx[q]], sims[q], rtol=0, atol=2e-3)


def test_a_locore_store_of_other_weights_is_refused(tmp_path, capsys):
    data = dataset(tmp_path / "data", rounded=True)
    index = tmp_path / "index"
    assert main(["index", "build", "--model", "locore-small", "--data", str(data), "--out", str(index), *TORCH]) == 0
    checkpoint = tmp_path / "other.pt"
    from rerankrt.models import load_model

    torch.save(load_model("locore-small").state_dict(), checkpoint)
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--queries", str(data), "--backend", "torch",
                 "--rerank-checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert f"store {index / 'store'} does not fit re-ranker locore-small" in err
    assert "checkpoint_sha256: the store holds None, the re-ranker locore-small '" in err
    capsys.readouterr()
    assert main(["index", "build", "--model", "locore-small", "--data", str(data), "--db-descriptors", "20",
                 "--out", str(tmp_path / "bad"), *TORCH]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--db-descriptors: locore-small reads the gallery's own dinov2 globals and its first 48 locals (an AMES "
        "setting)")
