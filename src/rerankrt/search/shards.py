"""Several search indexes searched as one: a shard set (`index build --shards N`) or indexes of disjoint
galleries, each with its own first stage and store, the shards of one gallery split by rows.

    INDEX/manifest.json   format `SHARDS_FORMAT`, images, the shards ({"path", "rows": [start, stop]}, in
                          gallery order), source, built_at
    INDEX/shard-000/ …    one index each (`search.index`), over gallery rows start…stop−1

A shard set's gallery row `r` is row `r − start` of the shard holding it, so hits name rows of the gallery
files as one index would. The first stage of the set asks every shard for its own top k and keeps the best
k of their union, equal similarities in gallery order: over exact shards that is the exact top k of the
whole gallery, so a search over the set equals one over a single index of the same rows. The same merge
spreads over machines: a server per shard group answers its shards' top k, and one place merges them
(the fused score of an image depends on its query and its own entry alone, so re-ranked lists merge too).

The shards must agree on what they hold: the first stage's vectors (prefix, dimension, the weights that
made them), the extractor, and the re-ranker's store (model, checkpoint, descriptors); a set that does not
is refused, naming the shard.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rerankrt.core.errors import InputError, ModelFileError
from rerankrt.search import store as ames_store
from rerankrt.search.index import MANIFEST, SHARDS_FORMAT, SearchIndex, index_info, read_index_manifest, rebuild_hint
from rerankrt.search.locore_store import LocoreStore
from rerankrt.search.protocols import FirstStage, RerankStore
from rerankrt.search.store import AmesStore


def merge_top(results: Sequence[tuple[np.ndarray, np.ndarray]], offsets: Sequence[int],
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best `k` of shards' (similarities, local rows) [B, k_i], their rows moved by the shards' `offsets`:
    (similarities, gallery rows) [B, ≤k], best first, equal similarities in gallery order."""
    sims = np.concatenate([s for s, _ in results], axis=1)
    rows = np.concatenate([i + offset for (_, i), offset in zip(results, offsets, strict=True)], axis=1)
    order = np.lexsort((rows, -sims), axis=1)[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(rows, order, 1)


class ShardedFirstStage:
    """The shards' first stages as one (`merge_top`); knobs go to every shard."""

    def __init__(self, shards: Sequence[SearchIndex], offsets: Sequence[int]) -> None:
        self.stages: list[FirstStage] = [s.first_stage for s in shards if s.first_stage is not None]
        self.offsets = list(offsets)
        kinds = {stage.kind for stage in self.stages}
        self.kind = kinds.pop() if len(kinds) == 1 else "mixed"

    def check_knobs(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        for stage in self.stages:
            stage.check_knobs(nprobe, ef_search)

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        results = [stage.search(queries, k, nprobe, ef_search) for stage in self.stages]
        return merge_top(results, self.offsets, k)


class ShardedStore:
    """The shards' AMES stores as one, by gallery row; the first shard's manifest stands for all (they
    agree, `ShardedIndex` checks)."""

    def __init__(self, stores: Sequence[RerankStore], offsets: Sequence[int], path: Path) -> None:
        self.stores, self.path = list(stores), path
        self.bounds = np.asarray([*offsets, offsets[-1] + stores[-1].images])
        first = stores[0]
        self.model, self.manifest, self.descriptors = first.model, first.manifest, first.descriptors
        self.images = int(self.bounds[-1])

    def entries(self, indices) -> tuple[np.ndarray, ...]:
        """What the shards' stores return for `indices` (AMES: entries and masks; LOCORE: globals, locals and
        masks), each row read from its shard."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= self.images)]
        if bad.size:
            raise InputError(f"store {self.path}: image indices must be in [0, {self.images}), got "
                             f"{bad[:5].tolist()}")
        shard = np.searchsorted(self.bounds, idx, side="right") - 1
        parts = [(np.flatnonzero(shard == i), store) for i, store in enumerate(self.stores)]
        got = [(where, store.entries(idx[where] - self.bounds[i])) for i, (where, store) in enumerate(parts)
               if where.size]
        out = tuple(np.empty((len(idx), *a.shape[1:]), a.dtype) for a in got[0][1])
        for where, arrays in got:
            for target, a in zip(out, arrays, strict=True):
                target[where] = a
        return out

    def check_scorer(self, meta: dict) -> None:
        self.stores[0].check_scorer(meta)

    def check_encoder(self, meta: dict) -> None:
        self.stores[0].check_encoder(meta)

    def check_reranker(self, meta: dict) -> None:
        self.stores[0].check_reranker(meta)


def _same(shards: Sequence[SearchIndex], label, fields) -> None:
    """Refuse shards that differ from the first in any of `fields` (name → value of an index)."""
    for name, value in fields.items():
        want = value(shards[0])
        for shard in shards[1:]:
            if value(shard) != want:
                raise ModelFileError(f"{label(shard)}: its {name} is {value(shard)!r}, {label(shards[0])}'s "
                                     f"{want!r}; the shards of one search must agree")


class ShardedIndex:
    """Indexes over disjoint galleries searched as one, in the order given (a shard set's order): the
    interface of `SearchIndex` (`first_stage`, `names`, `store`, `images`, `dim`, `desc`, `extractor`,
    `model`), with gallery rows counted across the shards; `shards` and `offsets` the parts."""

    def __init__(self, paths: Sequence[str | os.PathLike], path: Path | None = None, first_stage: bool = True) -> None:
        if not paths:
            raise InputError("index: expected at least one index")
        self.shards = [SearchIndex(p, first_stage) for p in paths]
        self.path = path or Path(paths[0])
        first = self.shards[0]
        _same(self.shards, lambda s: f"index {s.path}", {
            "first stage": lambda s: (s.desc, s.dim, s.manifest["first_stage"].get("encoded_by")),
            "extractor": lambda s: s.extractor,
            "re-ranker store": lambda s: s.manifest["rerank"] and {
                k: s.manifest["rerank"][k] for k in ("model", "checkpoint_sha256")},
            "descriptors per image": lambda s: s.store and s.store.descriptors})
        self.offsets = np.cumsum([0] + [s.images for s in self.shards[:-1]]).tolist()
        self.images = sum(s.images for s in self.shards)
        self.dim, self.desc, self.extractor, self.manifest = first.dim, first.desc, first.extractor, first.manifest
        self.names = [name for s in self.shards for name in s.names]
        self.first_stage = ShardedFirstStage(self.shards, self.offsets) if first_stage else None
        stores = [s.store for s in self.shards if s.store is not None]
        self.store = ShardedStore(stores, self.offsets, self.path) if stores else None

    @property
    def model(self) -> str | None:
        return self.shards[0].model


def _shard_paths(path: Path, m: dict) -> list[Path]:
    """A shard set's shard folders, checked to cover its rows in order."""
    start = 0
    for entry in m["shards"]:
        lo, hi = entry["rows"]
        if lo != start or hi <= lo:
            raise ModelFileError(f"index {path}: its shards do not cover the gallery's rows in order (shard "
                                 f"{entry['path']} holds {lo}…{hi - 1}, expected from {start}): {rebuild_hint()}")
        start = hi
    if start != m["images"]:
        raise ModelFileError(f"index {path}: its shards hold {start} images, the set {m['images']}: "
                             f"{rebuild_hint()}")
    return [path / entry["path"] for entry in m["shards"]]


def open_index(index: str | os.PathLike | Sequence[str | os.PathLike],
               first_stage: bool = True) -> SearchIndex | ShardedIndex:
    """An index folder, a shard set folder, or a list of indexes of disjoint galleries (searched as one);
    `first_stage=False`: without opening the first stages (`SearchIndex`)."""
    if not isinstance(index, (str, os.PathLike)):
        paths = list(index)
        return SearchIndex(paths[0], first_stage) if len(paths) == 1 else ShardedIndex(paths, None, first_stage)
    path = Path(index)
    m = read_index_manifest(path)
    if m["format"] != SHARDS_FORMAT:
        return SearchIndex(path, first_stage)
    opened = ShardedIndex(_shard_paths(path, m), path, first_stage)
    for shard, entry in zip(opened.shards, m["shards"], strict=True):
        if shard.images != entry["rows"][1] - entry["rows"][0]:
            raise ModelFileError(f"index {shard.path}: holds {shard.images} images, the set names rows "
                                 f"{entry['rows'][0]}…{entry['rows'][1] - 1}: {rebuild_hint()}")
    return opened


def open_store(path: str | os.PathLike) -> AmesStore | ShardedStore:
    """The AMES store of an index or a shard set (by gallery row), or a store folder as `index build`
    wrote it before indexes."""
    path = Path(path)
    m = read_index_manifest(path)
    if m["format"] == ames_store.FORMAT:
        return ames_store.AmesStore(path)
    index = open_index(path)
    if index.store is None:
        raise ModelFileError(f"index {path}: holds no re-ranker store (built without `model`)")
    if isinstance(index.store, LocoreStore) or isinstance(getattr(index.store, "stores", [None])[0], LocoreStore):
        raise ModelFileError(f"index {path}: holds {index.store.model}'s store, not an AMES store (LOCORE re-ranks "
                             f"from an index through `rerankrt search`)")
    return index.store  # type: ignore[return-value]


def shards_info(path: str | os.PathLike) -> dict:
    """`index_info` of an index, a store folder or a shard set: a set's totals over its shards (bytes per
    image counted from every file, its own manifest included) and each shard's own info under `shards`."""
    path = Path(path)
    m = read_index_manifest(path)
    if m["format"] != SHARDS_FORMAT:
        return index_info(path)
    open_index(path)  # validated as a whole
    shards = [index_info(p) for p in _shard_paths(path, m)]
    total = sum(s["bytes"] for s in shards) + (path / MANIFEST).stat().st_size
    parts = {k: sum(s["bytes_per_image_by_part"][k] * s["images"] for s in shards) / m["images"]
             for k in shards[0]["bytes_per_image_by_part"]}
    parts["manifest"] += (path / MANIFEST).stat().st_size / m["images"]
    first = shards[0]
    return {"path": str(path), "format": SHARDS_FORMAT, "images": m["images"], "shards": len(shards),
            "first_stage": first["first_stage"]["kind"] if first["first_stage"]["kind"] == "exact"
            else first["first_stage"].get("factory"),
            "recall": [s["recall"] and s["recall"]["value"] for s in shards], "model": first["model"],
            "descriptors_per_image": first["descriptors_per_image"],
            "named_images": sum(s["named_images"] for s in shards), "extractor": first["extractor"],
            "checkpoint_sha256": first["checkpoint_sha256"], "bytes": total, "bytes_per_image": total / m["images"],
            "bytes_per_image_by_part": parts, "source": m["source"], "built_at": m["built_at"],
            "shard_info": shards}

