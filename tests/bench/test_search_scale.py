"""The first-stage scale benchmark at a small size: both galleries, every stage built in its own child
process, measured and tabled as the docs show it, the exact ones exact, the budgeted one within its budget."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("faiss", reason="faiss-cpu (the search extra) is not installed")
pytest.importorskip("torch")

from rerankrt.bench import search_scale  # noqa: E402


def test_every_stage_is_built_measured_and_tabled(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(search_scale, "STEP", 700)  # the gallery written in several steps
    assert search_scale.main(["--images", "1500", "--queries", "1", "--stages", "exact,graph,ivfpq,budget",
                              "--budget-bytes", "1400", "--target-recall", "0.5", "--out", str(tmp_path),
                              "--candidates", "IVF128,PQ32x4fs;IVF128,PQ64x4fs,Refine(PQ128)",
                              "--work", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "search_scale.json").read_text())
    assert [(r["generator"], r["images"], r["first_stage"]) for r in rows] == [
        (g, 1500, s) for g in ("unclustered", "clustered") for s in ("exact", "graph", "ivfpq", "budget")]
    for g in ("unclustered", "clustered"):
        by = {r["first_stage"]: r for r in rows if r["generator"] == g}
        assert by["ivfpq"]["factory"] == "IVF128,PQ64" and by["ivfpq"]["params"] == {"nprobe": 16}
        for stage in ("exact", "graph"):
            assert by[stage]["recall_at_100"] == by[stage]["recall_held_out"] == 1.0
            assert by[stage]["bytes_per_image_by_part"]["first_stage"] == 768 * 4
        assert by["exact"]["build_s"] == by["graph"]["build_s"]  # one index, built once
        assert 0 < by["ivfpq"]["recall_at_100"] < 1
        budget = by["budget"]
        assert budget["bytes_per_image"] <= 1400 and budget["choice"]["budget_bytes"] == 1400
        assert budget["choice"]["reason"].startswith(budget["factory"])
        if g == "clustered":  # the planted positives, after the same re-ranking of each shortlist
            assert 0 < by["exact"]["map_reranked"] <= 1 and budget["map_reranked"] <= 1
            assert by["exact"]["positives_at_100"] == 1.0  # each planted positive is in its exact top 100
            assert 0 < budget["positives_at_100"] <= 1
        else:
            assert by["exact"]["map_reranked"] is None and by["exact"]["positives_at_100"] is None
    for r in rows:
        assert r["peak_rss_mb"] > 0 and r["first_stage_ms"] > 0 and r["rerank_ms"] > 0
        assert r["total_ms"] >= r["first_stage_ms"]
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == search_scale.table(rows)[:2] and len(out) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search_scale.json"]  # the work folder removed
    with pytest.raises(SystemExit):  # a measured run is replaced only with --force, and refused before any work
        search_scale.main(["--images", "1500", "--out", str(tmp_path)])
    assert f"--out: {tmp_path / 'search_scale.json'} exists (pass --force to replace it)" in capsys.readouterr().err
    assert json.loads((tmp_path / "search_scale.json").read_text()) == rows


def test_the_clustered_gallery_holds_the_positives_of_the_queries_it_times(tmp_path):
    import numpy as np

    from rerankrt.search.exact import global_shortlist

    search_scale.write_gallery(tmp_path / "g.npy", 2000, "clustered", 3)
    gallery, queries = np.load(tmp_path / "g.npy"), search_scale.held_out(2000, "clustered", 3)
    assert queries.shape == (4, 768)  # the three timed and the one that warms up
    top = global_shortlist(queries, gallery, 10)[1]
    planted = search_scale.clustered(2000, 3)
    for q in range(4):  # each query's planted positives among its ten nearest gallery images
        assert np.isin(planted.positives_of(q), top[q]).all()
