"""LOCORE's database store: what the list-wise re-ranker reads of every gallery image, memory-mapped in FP16.

LOCORE scores a window of gallery images from their raw descriptors (reference/models.md §3): each image's
global vector and its first `n` local descriptors (48 as released) with their padding mask. A float32 HDF5
of the extraction holds 700 locals per image (~2 MB); the store keeps what the loop reads, in FP16:
(1 + 48) × 768 × 2 = 75 KB per image, random access by row.

    manifest.json   format, model, images, locals per image, dimensions, the re-ranker checkpoint's sha256
                    (null: the released configuration's random weights), the source, built_at
    globals.f16     [images, Dg] float16
    locals.f16      [images, n, D] float16 (padding rows zero)
    masks.u8        [images, ceil(n/8)] uint8, the padding masks packed (1 = padding)

Built in a staging folder and swapped in (`core.atomic`), in chunks of `CHUNK` images. A re-ranker of
other weights, locals per image or dimensions than the store's is refused, naming both.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import numpy as np

from rerankrt.core.atomic import staging_folder, swap_in
from rerankrt.core.errors import DescriptorFileError, InputError, ModelFileError
from rerankrt.data.descriptors import LocalDescriptorFile, read_global
from rerankrt.search.store import MANIFEST, read_manifest

FORMAT = "rerankrt-locore-store/1"
FILES = {"globals": "globals.f16", "locals": "locals.f16", "masks": "masks.u8"}
CHUNK = 256


def _shapes(images: int, n: int, dim: int, global_dim: int) -> dict[str, tuple[int, ...]]:
    return {"globals": (images, global_dim), "locals": (images, n, dim), "masks": (images, -(-n // 8))}


def entry_bytes(meta: dict) -> float:
    """The bytes per image of the store of a LOCORE backend (`meta`): FP16 global and locals, packed masks."""
    facts = reranker_facts(meta)
    n = facts["locals_per_image"]
    return 2 * facts["global_dim"] + 2 * n * facts["descriptor_dim"] + -(-n // 8)


def reranker_facts(meta: dict) -> dict:
    """What a store must agree on with a LOCORE backend (its sidecar or torch `meta`)."""
    cfg = meta["config"]
    return {"model": meta["model"], "locals_per_image": cfg["local_descriptors"], "descriptor_dim": cfg["local_dim"],
            "global_dim": cfg["global_dim"], "checkpoint_sha256": (meta.get("checkpoint") or {}).get("sha256")}


class LocoreStore:
    """An open, validated store; `entries(indices)` → (g_global [k, Dg], g_local [k, n, D] float32, g_mask
    [k, n] bool) of any images, in any order."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        m = self.manifest = read_manifest(self.path, FORMAT)
        self.model, self.images, self.descriptors = m["model"], int(m["images"]), int(m["locals_per_image"])
        shapes = _shapes(self.images, self.descriptors, m["descriptor_dim"], m["global_dim"])
        self._maps = {}
        for part, file in FILES.items():
            dtype = np.uint8 if part == "masks" else np.float16
            expected = int(np.prod(shapes[part])) * np.dtype(dtype).itemsize
            size = (self.path / file).stat().st_size if (self.path / file).is_file() else None
            if size != expected:
                found = "is missing" if size is None else f"holds {size} bytes"
                raise ModelFileError(f"store {self.path}: {file} {found}, expected {expected} "
                                     f"({' × '.join(map(str, shapes[part]))} {np.dtype(dtype).name}): truncated or "
                                     f"foreign")
            self._maps[part] = np.memmap(self.path / file, dtype=dtype, mode="r", shape=shapes[part])

    def entries(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= self.images)]
        if bad.size:
            raise InputError(f"store {self.path}: image indices must be in [0, {self.images}), got "
                             f"{bad[:5].tolist()}")
        mask = np.unpackbits(self._maps["masks"][idx], axis=-1, count=self.descriptors).astype(bool)
        return (self._maps["globals"][idx].astype(np.float32), self._maps["locals"][idx].astype(np.float32), mask)

    def check_encoder(self, meta: dict) -> None:
        self._not_pairwise(meta)

    def check_scorer(self, meta: dict) -> None:
        self._not_pairwise(meta)

    def _not_pairwise(self, meta: dict) -> None:
        raise ModelFileError(f"store {self.path} holds {self.model}'s descriptors, re-ranked by its list-wise "
                             f"graph, not by {meta['model']}")

    def check_reranker(self, meta: dict) -> None:
        """Refuse a LOCORE backend whose weights, locals per image or dimensions are not the store's."""
        have = reranker_facts(meta)
        problems = [f"{key}: the store holds {self.manifest[key]!r}, the re-ranker {meta['model']} {have[key]!r}"
                    for key in ("locals_per_image", "descriptor_dim", "global_dim", "checkpoint_sha256")
                    if self.manifest[key] != have[key]]
        if problems:
            raise ModelFileError(f"store {self.path} does not fit re-ranker {meta['model']} (null: the released "
                                 f"configuration's random weights):\n  " + "\n  ".join(problems))


def build_locore_store(meta: dict, gallery: str | os.PathLike, globals_path: str | os.PathLike,
                       out: str | os.PathLike, rows: range | None = None,
                       log=lambda message: None) -> Path:
    """The store of a LOCORE backend (`meta`) over a gallery's local HDF5 and global file (`rows`: those
    rows only, a shard's): each image's global vector and first `locals_per_image` locals, in FP16."""
    facts = reranker_facts(meta)
    n = facts["locals_per_image"]
    with LocalDescriptorFile(gallery, dim=facts["descriptor_dim"]) as f:
        if f.num_images == 0:
            raise InputError(f"{gallery}: holds no images")
        if f.topk < n:
            raise InputError(f"{gallery}: keeps {f.topk} locals per image, {meta['model']} reads {n}")
        vectors = read_global(globals_path, facts["global_dim"])
        f.check_globals(vectors, Path(globals_path))
        rows = range(f.num_images) if rows is None else rows
        staging = staging_folder(out)
        try:
            files = {part: open(staging / file, "wb") for part, file in FILES.items()}  # noqa: SIM115
            try:
                for start in range(rows.start, rows.stop, CHUNK):
                    chunk = np.arange(start, min(start + CHUNK, rows.stop))
                    local, g = f.read(chunk, n=n), np.asarray(vectors[chunk], np.float32)
                    if not (np.isfinite(local.desc).all() and np.isfinite(g).all()):
                        raise DescriptorFileError(f"{gallery}: NaN or infinite descriptors in images "
                                                  f"{chunk[0]}…{chunk[-1]}")
                    files["globals"].write(g.astype("<f2").tobytes())
                    files["locals"].write(local.desc.astype("<f2").tobytes())
                    files["masks"].write(np.packbits(local.mask, axis=-1).tobytes())
                    log(f"stored {chunk[-1] + 1 - rows.start}/{len(rows)} images")
            finally:
                for file in files.values():
                    file.close()
            manifest = {"format": FORMAT, **facts, "images": len(rows),
                        "source": {"path": str(Path(gallery).resolve()), "topk": f.topk,
                                   **({"rows": [rows.start, rows.stop]} if len(rows) != f.num_images else {})},
                        "files": {FILES["globals"]: "[images, Dg] float16", FILES["locals"]: "[images, n, D] float16",
                                  FILES["masks"]: "[images, ceil(n/8)] uint8, packed padding masks"},
                        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            swap_in(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Path(out)
