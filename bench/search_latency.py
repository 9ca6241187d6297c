"""A search end to end, stage by stage: `python -m rerankrt.bench.search_latency [--images 200] [--queries 10]
[--backends torch,ort] [--artifacts artifacts] [--work DIR] [--out DIR]`.

A gallery of synthetic photos (1024 × 768, smooth colour fields with detail, each its own seed) is described by the
DINOv2 extractor at the released 770 px and 700 locals on ONNX Runtime, and by RAML's 448-px teacher; two
indexes are built over it: DINOv2's globals with AMES's store (the released `ames`, its encoder on ONNX
Runtime), and RAML's globals alone. Then each query photo is searched by `Searcher`, the queries interleaved
over the cases (drift hits all alike):

    ames        the query extracted whole, DINOv2's global vector searched exactly, its top 100 re-ranked by
                AMES from the store (the query encoded once, the scorer over the stored entries)
    dinov2      the same first stage alone (`--rerank none`): what DINOv2's query encoding costs
    raml        RAML's first stage alone: the query by the 224-px student, no DINOv2 at all

per backend, with random released weights (the weights do not change the cost). One search per case first, as
a warm-up (not timed). Medians of each stage (extract / first stage / re-rank / total) are printed as a table
and written to `search_latency.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from rerankrt.app.backends import open_model
from rerankrt.app.search import Searcher
from rerankrt.runtime.atomic import atomic_output
from rerankrt.runtime.extraction import extract
from rerankrt.runtime.images import RamlEncoder
from rerankrt.runtime.search_index import build_index

IMSIZE, TOPK = 770, 700  #: the extractor's released side and locals (`rerankrt extract`'s defaults)
STAGES = ("extract", "first_stage", "rerank", "total")


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """BGR uint8: three smooth colour fields at random frequencies and phases, plus pixel noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    f = rng.uniform(3, 40, (3, 2))
    p = rng.uniform(0, 2 * np.pi, (3, 2))
    base = np.stack([np.sin(x / f[c, 0] + p[c, 0]) * np.cos(y / f[c, 1] + p[c, 1]) for c in range(3)], -1) * 100 + 128
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def write_photos(folder: Path, count: int, first_seed: int) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        if not path.exists():
            cv2.imwrite(str(path), photo(768, 1024, first_seed + i))
    return paths


def build(work: Path, images: int, artifacts: Path) -> dict[str, Path]:
    """The gallery described and both indexes built under `work` (reused when already there)."""
    data, indexes = work / "data", {"ames": work / "index-dinov2", "raml": work / "index-raml"}
    gallery = write_photos(work / "gallery", images, 1000)
    if not (data / "dinov2_gallery_local.hdf5").exists():
        data.mkdir(parents=True, exist_ok=True)
        with open_model("dinov2-extractor", "ort", artifacts) as backend, open_model("raml", "ort", artifacts) as raml:
            extract(backend, gallery, data, "gallery", IMSIZE, TOPK, batch=1,
                    raml=RamlEncoder(raml, raml.config["teacher_size"]))
    for name, globals_desc in (("ames", None), ("raml", "raml")):
        if not indexes[name].exists():
            with open_model("ames-encoder", "ort", artifacts) as encoder:
                build_index(encoder, data, indexes[name], globals_desc=globals_desc, first_stage="exact")
    return indexes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="gallery images (default 200)")
    parser.add_argument("--queries", type=int, default=10, help="query images (default 10)")
    parser.add_argument("--backends", default="torch,ort", help="comma-separated backends (default torch,ort)")
    parser.add_argument("--artifacts", default="artifacts", help="the exported graphs (default artifacts)")
    parser.add_argument("--work", help="where the photos, descriptors and indexes go (default: a temporary folder)")
    parser.add_argument("--out", default="measured", help="the folder of search_latency.json (default measured)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        indexes = build(work, args.images, Path(args.artifacts))
        queries = write_photos(work / "queries", args.queries, 1)
        cases = {(case, backend): (indexes["raml" if case == "raml" else "ames"], None if case != "ames" else "index")
                 for backend in args.backends.split(",") for case in ("ames", "dinov2", "raml")}
        timings: dict[tuple[str, str], list[dict]] = {key: [] for key in cases}
        searchers = {key: Searcher(index, args.artifacts, key[1], rerank=rerank)
                     for key, (index, rerank) in cases.items()}
        try:
            for searcher in searchers.values():
                searcher.search(queries[0])
            for query in queries:
                for key, searcher in searchers.items():
                    timings[key].append(searcher.search(query).timing_ms)
        finally:
            for searcher in searchers.values():
                searcher.close()
    rows = [{"case": case, "backend": backend, "queries": len(queries), **{
        f"{stage}_ms": statistics.median(t[stage] for t in timings[case, backend]) if timings[case, backend][0][stage]
        is not None else None for stage in STAGES}} for case, backend in cases]
    print(f"| case | backend | {' | '.join(f'{s} ms' for s in STAGES)} |")
    print("|---|---|" + "---:|" * len(STAGES))
    for row in rows:
        cells = " | ".join("–" if row[f"{s}_ms"] is None else f"{row[f'{s}_ms']:.1f}" for s in STAGES)
        print(f"| {row['case']} | {row['backend']} | {cells} |")
    out = Path(args.out) / "search_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps({"images": args.images, "imsize": IMSIZE, "topk": TOPK, "rows": rows}, indent=2)
                       + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
