"""A search end to end, stage by stage: `rerankrt bench --search INDEX … --images Q` over a user's indexes
(`run_search_bench`), and `python -m rerankrt.bench.search_latency [--images 200] [--queries 10]
[--backends torch,ort] [--artifacts artifacts] [--work DIR] [--out DIR] [--force]` over a synthetic gallery it
builds (an earlier run's search.json in --out is replaced only with --force).

A gallery of synthetic photos (1024 × 768, smooth colour fields with detail, each its own seed) is described by the
DINOv2 extractor at the released 770 px and 700 locals on ONNX Runtime, and by RAML's 448-px teacher; two
indexes are built over it, each with AMES's store (the released `ames`, its encoder on ONNX Runtime):
`index-dinov2` over DINOv2's globals and `index-raml` over RAML's. Then each query photo is searched by
`Searcher`, the queries interleaved over the cases (drift hits all alike):

    index-dinov2 ames   the query extracted whole, DINOv2's global vector searched exactly, its top 100
                        re-ranked by AMES from the store (the query encoded once, the scorer over the entries)
    index-dinov2 none   the same first stage alone (`--rerank none`): what DINOv2's query encoding costs
    index-raml ames     RAML's first stage (the query's vector by the 224-px student), AMES re-ranking its top
                        100 (DINOv2 extracted for the locals alone)
    index-raml none     RAML's first stage alone: no DINOv2 at all

per backend, with random released weights (the weights do not change the cost). One search per case first, as
a warm-up (not timed). Medians of each stage (extract / first stage / re-rank / total) are printed as a table
and written to `search.json` and `search.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rerankrt.core.atomic import atomic_output, check_outputs, write_json
from rerankrt.core.errors import InputError
from rerankrt.core.flags import in_flags
from rerankrt.data.extraction import extract
from rerankrt.data.images import RamlEncoder
from rerankrt.runtime.request import BackendRequest
from rerankrt.search.backends import open_model
from rerankrt.search.index import build_index
from rerankrt.search.searcher import Searcher
from rerankrt.search.shards import open_index

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


def build(work: Path, images: int, artifacts: Path) -> list[Path]:
    """The gallery described and both indexes built under `work` (reused when already there)."""
    data, indexes = work / "data", {"dinov2": work / "index-dinov2", "raml": work / "index-raml"}
    gallery = write_photos(work / "gallery", images, 1000)
    if not (data / "dinov2_gallery_local.hdf5").exists():
        data.mkdir(parents=True, exist_ok=True)
        request = BackendRequest("ort", artifacts)
        with open_model("dinov2-extractor", request) as backend, open_model("raml", request) as raml:
            extract(backend, gallery, data, "gallery", IMSIZE, TOPK, batch=1,
                    raml=RamlEncoder(raml, raml.config["teacher_size"]))
    for name, globals_desc in (("dinov2", None), ("raml", "raml")):
        if not indexes[name].exists():
            with open_model("ames-encoder", BackendRequest("ort", artifacts)) as encoder:
                build_index(encoder, data, indexes[name], globals_desc=globals_desc, first_stage="exact")
    return list(indexes.values())


def run_search_bench(indexes: Sequence[str | os.PathLike], queries: Sequence, backends: Sequence[str],
                     artifacts: str | os.PathLike | None, out: Path, precision: str = "fp32", device: str = "cpu",
                     log: Callable[[str], None] = print) -> dict:
    """Time searches over each index per backend (`rerankrt bench --search`): its re-ranker where it holds a
    store, and its first stage alone (`rerank none`) beside it, each query searched by every case in turn after
    one search each as a warm-up (not timed). Writes `search.json` (`{"queries": N, "precision": P, "rows": [...]}`,
    each row its index's name and gallery size, the re-ranker and backend, and the medians of each stage in ms,
    `null` for a stage the case skips) and `search.md` (its table) to `out`."""
    if not queries:
        raise InputError("no query images to search", param="images")
    cases: dict[tuple[str, str | None, str], tuple[Path, str | None]] = {}
    images: dict[str, int] = {}
    for index in map(Path, indexes):
        if index.name in images:  # the tables name an index by its folder
            raise InputError(f"two indexes named {index.name}; give each its own folder name", param="search")
        opened = open_index(index, first_stage=False)
        images[index.name] = opened.images
        for backend in backends:
            for rerank in ([opened.model, None] if opened.model else [None]):
                cases[index.name, rerank, backend] = index, None if rerank is None else "index"
    timings: dict[tuple, list[dict]] = {key: [] for key in cases}
    with contextlib.ExitStack() as stack:
        searchers = {key: stack.enter_context(Searcher(index, BackendRequest(key[2], artifacts, precision, device),
                                                       rerank=rerank)) for key, (index, rerank) in cases.items()}
        for searcher in searchers.values():
            searcher.search(queries[0])
        for i, query in enumerate(queries):
            for key, searcher in searchers.items():
                timings[key].append(searcher.search(query).timing_ms)
            log(f"searched {i + 1}/{len(queries)} queries, {len(searchers)} cases each")
    rows = [{"index": index, "images": images[index], "rerank": rerank, "backend": backend, **{
        f"{stage}_ms": None if timings[index, rerank, backend][0][stage] is None else
        statistics.median(t[stage] for t in timings[index, rerank, backend]) for stage in STAGES}}
        for index, rerank, backend in cases]
    results = {"queries": len(queries), "precision": precision, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "search.json", results)
    with atomic_output(out / "search.md") as tmp:
        tmp.write_text(markdown(results))
    return results


def table(results: dict) -> list[str]:
    """The medians of each stage per case, one row per index, re-ranker and backend (the README's table)."""
    lines = [f"| index (gallery images) | re-ranker | backend | {' | '.join(f'{s} ms' for s in STAGES)} |",
             "|---|---|---|" + "---:|" * len(STAGES)]
    for row in results["rows"]:
        cells = " | ".join("–" if row[f"{s}_ms"] is None else f"{row[f'{s}_ms']:,.1f}" for s in STAGES)
        lines.append(f"| {row['index']} ({row['images']:,}) | {row['rerank'] or 'none'} | {row['backend']} | {cells} |")
    return lines


def markdown(results: dict) -> str:
    """`table` under a heading that says what the medians are over."""
    return "\n".join([f"## Search, {results['precision']}, medians over {results['queries']} queries", "",
                      *table(results)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="gallery images (default 200)")
    parser.add_argument("--queries", type=int, default=10, help="query images (default 10)")
    parser.add_argument("--backends", default="torch,ort", help="comma-separated backends (default torch,ort)")
    parser.add_argument("--artifacts", default="artifacts", help="the exported graphs (default artifacts)")
    parser.add_argument("--work", help="where the photos, descriptors and indexes go (default: a temporary folder)")
    parser.add_argument("--out", default="measured", help="the folder of search.json and search.md (default measured)")
    parser.add_argument("--force", action="store_true", help="replace the search.json and search.md of an earlier run")
    args = parser.parse_args(argv)
    try:  # before any work: a measured run is not replaced by accident
        check_outputs([Path(args.out) / name for name in ("search.json", "search.md")], [args.artifacts], args.force)
    except FileExistsError as e:
        parser.error(in_flags(e, parser))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        indexes = build(work, args.images, Path(args.artifacts))
        queries = write_photos(work / "queries", args.queries, 1)
        results = run_search_bench(indexes, queries, args.backends.split(","),
                                   args.artifacts, Path(args.out))
    print(markdown(results), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
