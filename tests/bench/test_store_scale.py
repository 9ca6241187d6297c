"""The synthetic store of the scale benchmark: what `index build` writes, in bounded steps."""

from __future__ import annotations

import numpy as np

from rerankrt.bench import store_scale
from rerankrt.search.store import AmesStore, store_info


def test_synthetic_store_opens_and_keeps_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(store_scale, "STEP", 1000)  # several steps
    store_scale.synthesize_store(tmp_path / "dist", 2500)
    store_scale.synthesize_store(tmp_path / "fp", 300, model="ames")
    info = store_info(tmp_path / "dist")
    assert (info["model"], info["images"], info["descriptors_per_image"]) == ("ames-dist", 2500, 50)
    assert 807 < info["bytes_per_image"] < 808  # 50 × 16 B codes, 7 B of mask, the manifest shared
    codes, mask = AmesStore(tmp_path / "dist").entries([0, 1999, 2499])
    assert codes.shape == (3, 50, 128) and codes.dtype == np.bool_ and 0.4 < codes.mean() < 0.6
    assert ((~mask).sum(axis=1) >= 25).all() and mask[:, 0].sum() == 0  # 25–50 valid, padding at the end
    tokens, _ = AmesStore(tmp_path / "fp").entries([299])
    assert tokens.shape == (1, 50, 128) and tokens.dtype == np.float16
    assert store_info(tmp_path / "fp")["bytes_per_image"] <= 12_900
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "fp"]  # no staging folders left
