"""The first-stage scale benchmark at a small size: every stage built in its own child process, measured and
tabled as the README shows it, the exact ones exact."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("faiss", reason="faiss-cpu (the search extra) is not installed")
pytest.importorskip("torch")

from rerankrt.bench import search_scale  # noqa: E402


def test_every_stage_is_built_measured_and_tabled(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(search_scale, "STEP", 700)  # the gallery written in several steps
    assert search_scale.main(["--images", "1500", "--queries", "1", "--out", str(tmp_path),
                              "--work", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "search_scale.json").read_text())
    assert [(r["images"], r["first_stage"], r["factory"]) for r in rows] == [
        (1500, "exact", "exact"), (1500, "graph", "exact"), (1500, "ivfpq", "IVF128,PQ64"), (1500, "hnsw", "HNSW32")]
    by = {r["first_stage"]: r for r in rows}
    for stage in ("exact", "graph"):
        assert by[stage]["recall_at_100"] == by[stage]["recall_held_out"] == 1.0
        assert by[stage]["bytes_per_image_by_part"]["first_stage"] == 768 * 4
    assert by["exact"]["build_s"] == by["graph"]["build_s"]  # one index, built once
    assert by["hnsw"]["recall_held_out"] > 0.9 and 0 < by["ivfpq"]["recall_at_100"] < 1
    # 64-byte codes and ids, and 1.2 MB of codebooks and centroids shared by only 1,500 images
    assert by["ivfpq"]["bytes_per_image_by_part"]["first_stage"] < 768 * 4 / 3
    for r in rows:
        assert r["peak_rss_mb"] > 0 and r["first_stage_ms"] > 0 and r["rerank_ms"] > 0
        assert r["total_ms"] >= r["first_stage_ms"]
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == search_scale.table(rows)[:2] and len(out) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search_scale.json"]  # the work folder removed
