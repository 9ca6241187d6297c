"""`rerankrt shortlist`: the exact cosine top-k of the extracted globals, chunked, ties in gallery order."""

from __future__ import annotations

import numpy as np
import pytest

from rerankrt.cli import main
from rerankrt.core.errors import InputError
from rerankrt.data.descriptors import read_nn, write_global
from rerankrt.search import exact
from rerankrt.search.exact import global_shortlist


def unit(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("elements", [2**24, 7, 1])  # one chunk; chunks of 2 gallery images; of 1
def test_matches_a_full_sort(monkeypatch, elements):
    monkeypatch.setattr(exact, "ELEMENTS", elements)
    rng = np.random.default_rng(0)
    query, gallery = unit(rng, 3), unit(rng, 11)
    gallery[7] = gallery[2]  # a tie: the lower index first
    sims, idx = global_shortlist(query, gallery, 5)
    full = query @ gallery.T
    expected = np.lexsort((np.broadcast_to(np.arange(11), (3, 11)), -full), axis=1)[:, :5]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(full, expected, 1), rtol=1e-6, atol=1e-7)
    assert all(list(row).index(2) < list(row).index(7) for row in idx if 2 in row and 7 in row)
    assert global_shortlist(query, gallery, 50)[1].shape == (3, 11)  # k beyond the gallery: all of it


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=r"k: expected a positive shortlist length, got 0"):
        global_shortlist(unit(rng, 2), unit(rng, 3), 0)
    with pytest.raises(InputError, match=r"global vectors: expected \[queries, D\] and \[gallery, D\] of one D, "
                                         r"got \[2, 16\] and \[3, 8\]"):
        global_shortlist(unit(rng, 2), unit(rng, 3, 8), 4)


def test_cli_writes_the_nn_layout(tmp_path, capsys):
    rng = np.random.default_rng(1)
    query, gallery = unit(rng, 4, 768), unit(rng, 9, 768)
    write_global(tmp_path / "dinov2_query_global.pt", query)
    write_global(tmp_path / "dinov2_gallery_global.pt", gallery)
    assert main(["shortlist", "--data", str(tmp_path), "--k", "6"]) == 0
    sims, idx = read_nn(tmp_path / "nn_dinov2.pkl", num_db=9)
    expected = np.argsort(-(query @ gallery.T), axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(idx, expected)
    assert sims.shape == (4, 6)
    assert main(["shortlist", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("nn_dinov2.pkl exists (pass --force to replace it)")
    assert main(["shortlist", "--data", str(tmp_path), "--force", "--dim", "512"]) == 2
    assert "a raw float32 [N, 512] file must hold a positive multiple of 2048 bytes" in capsys.readouterr().err
