"""The first stage at scale: `python -m rerankrt.bench.search_scale [--images 100000,1000000]
[--generators unclustered,clustered] [--stages exact,graph,ivfpq,hnsw,budget] [--budget-bytes 1024]
[--target-recall 0.9] [--queries 30] [--out DIR] [--work DIR] [--force]`.

For each generator and size a synthetic gallery is written straight into index form, its AMES store as
`store_scale` writes one (random sign codes, the released `ames-dist`: 807 B per image), shared by the
indexes of that size through hard links. Two galleries (`bench.synth`):

    unclustered  `low_rank_globals`: a 64-d Gaussian latent space embedded in 768-d plus isotropic noise, no
                 cluster structure (the hardest case for an inverted file); held-out queries of the same law
    clustered    `Clustered`: landmark-like clusters of power-law sizes (N / 100 of them), queries that are
                 not gallery images, seen through more noise, each with 5 planted positives in the gallery

Then, per first stage:

    exact   the numpy scan over `globals.f32` (`first_stage.global_shortlist`)
    graph   the same index through the `first-stage` graph on ONNX Runtime, FP32 (`GraphFirstStage`)
    ivfpq   the rule `auto` was: faiss IVF{4·√N as a power of two},PQ64 at nprobe 16
    hnsw    faiss HNSW32, efSearch 128
    budget  `--first-stage auto --budget-bytes B --target-recall R` (`first_stage_choice`): the candidate
            measured fastest within B bytes per image, the store included, that reaches R

each index is built in a spawned child process of its own, so that its build time and peak RSS are its own; bytes
per image count every file of the index (`index_info`); recall@100 is the index's recorded one (held-out
gallery images) and that of the generator's held-out queries against the exact scan. Then the timed queries
run interleaved, query by query over every case (drift hits all alike): the first stage's top 100, and AMES
re-ranking those 100 from the store (the query encoded once, the scorer on ONNX Runtime). On the clustered
gallery, the share of the planted positives in the first stage's top 100 (the mAP of an ideal re-ranker:
what any re-ranker can make of the shortlist) sits beside the exact top 100's, and the mAP after AMES's
re-ranking (of random weights here: its fused score orders by the first stage's similarity). Medians are
reported; a table is printed and `search_scale.json` written (docs' table is rendered from it; an earlier run's is
replaced only with --force).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rerankrt.bench.store_scale import synthesize_store
from rerankrt.bench.synth import Clustered, low_rank_globals
from rerankrt.core.atomic import check_outputs, write_json
from rerankrt.core.flags import in_flags
from rerankrt.runtime.agreement import average_precision
from rerankrt.search.exact import global_shortlist
from rerankrt.search.first_stage import GraphFirstStage, ivf_pq
from rerankrt.search.first_stage_choice import Selection
from rerankrt.search.index import SearchIndex, index_info, write_index
from rerankrt.search.protocols import FirstStage, RerankStore
from rerankrt.search.store import AmesStore

DIM = 768
SHORTLIST = 100
#: gallery vectors generated per step (bounded memory: 65,536 × 768 float32 = 200 MB)
STEP = 65_536
STAGES = ("exact", "graph", "ivfpq", "hnsw", "budget")
GENERATORS = ("unclustered", "clustered")
#: held-out queries are rows of the generator far past any gallery
HELD_OUT = 10**12
#: the issue's operating point: the whole index (store included) within 1 KB per image, recall@100 ≥ 0.9
BUDGET_BYTES, TARGET_RECALL = 1024.0, 0.9


def factory(stage: str, images: int) -> str:
    """The first stage `index build --first-stage` is given for `stage` at `images` images."""
    if stage in ("exact", "graph"):
        return "exact"
    if stage == "ivfpq":
        return ivf_pq(images)
    return "auto" if stage == "budget" else "HNSW32"


def clustered(images: int, queries: int) -> Clustered:
    """The landmark-like gallery of `images` images (a cluster per 100 images on average) and its `queries`
    timed queries and one more (the first warms up), each with its planted positives: one generator for the
    gallery, the queries and their positives alike (its queries' count decides what it draws)."""
    return Clustered(clusters=max(images // 100, 10), queries=queries + 1)


def write_gallery(path: Path, images: int, generator: str, queries: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(images, DIM))
    for start in range(0, images, STEP):
        n = min(STEP, images - start)
        out[start:start + STEP] = clustered(images, queries).gallery(n, start) if generator == "clustered" else \
            low_rank_globals(n, DIM, start=start)
    out.flush()


def held_out(images: int, generator: str, queries: int) -> np.ndarray:
    """The generator's held-out queries (one more than timed: the first warms up)."""
    if generator == "clustered":
        return clustered(images, queries).query_vectors()
    return low_rank_globals(queries + 1, DIM, start=HELD_OUT)


def linked_store(source: Path):
    """`make_store` for `write_index`: the store at `source`, hard-linked (one store per size on disk)."""
    def make(path: Path) -> Path:
        path.mkdir()
        for f in source.iterdir():
            os.link(f, path / f.name)
        return path
    return make


def build(work: Path, name: str, kind: str, budget: float, target: float, candidates: tuple[str, ...] | None) -> None:
    """The index `name`-`kind` from the gallery and store `run` wrote under `name`."""
    gallery = np.load(work / f"gallery-{name}.npy", mmap_mode="r")
    store = work / f"store-{name}"
    selection = Selection(budget, target, allow_below_target=True, candidates=candidates) if kind == "auto" else None
    write_index(work / f"index-{name}-{kind}", gallery, linked_store(store), first_stage=kind, shortlist=SHORTLIST,
                selection=selection, store_bytes=index_store_bytes(store),
                log=lambda message: print(message, file=sys.stderr))


def index_store_bytes(store: Path) -> float:
    """The bytes per image of a store's files, as `index_info` counts them."""
    return sum(f.stat().st_size for f in store.iterdir()) / AmesStore(store).images


def build_in_child(*args) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `build(*args)` in a fresh interpreter of its own (spawned, not forked: a
    fork of a process whose OpenMP threads ran, torch's or faiss's, can hang in the child's first OpenMP
    region)."""
    start = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=build, args=args)
    child.start()
    assert child.pid is not None
    _, status, usage = os.wait4(child.pid, 0)  # reaped here, for its own rusage
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"building {args[2]} over {args[1]} failed in its child process "
                           f"(exit status {os.waitstatus_to_exitcode(status)})")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="100000,1000000", help="comma-separated gallery sizes")
    parser.add_argument("--generators", default=",".join(GENERATORS),
                        help=f"comma-separated, of {', '.join(GENERATORS)}")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--budget-bytes", type=float, default=BUDGET_BYTES,
                        help=f"the budget stage's bytes per image, store included (default {BUDGET_BYTES:.0f})")
    parser.add_argument("--target-recall", type=float, default=TARGET_RECALL,
                        help=f"the budget stage's target recall@100 (default {TARGET_RECALL})")
    parser.add_argument("--candidates", help="the budget stage's candidates, faiss factory strings separated by "
                                             "';' (default: first_stage_choice.candidates)")
    parser.add_argument("--queries", type=int, default=30, help="timed queries per case")
    parser.add_argument("--out", default=".", help="where search_scale.json goes")
    parser.add_argument("--force", action="store_true", help="replace the search_scale.json of an earlier run")
    parser.add_argument("--work", help="where the indexes are built (default: a temporary folder; 1M images "
                                       "take ~10 GB)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.images.split(",")]
    stages, generators = args.stages.split(","), args.generators.split(",")
    for flag, given, known in (("--stages", stages, STAGES), ("--generators", generators, GENERATORS)):
        unknown = [s for s in given if s not in known]
        if unknown:
            parser.error(f"{flag}: expected some of {', '.join(known)}, got {unknown}")
    if args.queries < 1:
        parser.error(f"--queries: expected a positive number, got {args.queries}")
    out = Path(args.out) / "search_scale.json"
    try:  # before any work (a 1M run takes half an hour): a measured run is not replaced by accident
        check_outputs([out], force=args.force)
    except FileExistsError as e:
        parser.error(in_flags(e, parser))
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        rows = run(Path(tmp), sizes, stages, args.queries, generators, args.budget_bytes, args.target_recall,
                   tuple(args.candidates.split(";")) if args.candidates else None)
    for line in table(rows):
        print(line)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, rows)
    return 0


def run(work: Path, sizes: list[int], stages: list[str], queries: int,
        generators: tuple[str, ...] | list[str] = GENERATORS, budget: float = BUDGET_BYTES,
        target: float = TARGET_RECALL, candidates: tuple[str, ...] | None = None) -> list[dict]:
    from rerankrt.export.onnx_export import export_model
    from rerankrt.runtime.loops import reranker_for
    from rerankrt.runtime.ort_backend import OrtBackend

    rows: dict[tuple[str, int, str], dict] = {}
    for generator in generators:
        for n in sizes:
            name = f"{generator}-{n}"
            write_gallery(work / f"gallery-{name}.npy", n, generator, queries)
            synthesize_store(work / f"store-{name}", n)
            built: dict[str, tuple[float, float]] = {}
            for stage in stages:
                kind = factory(stage, n)
                if kind not in built:
                    built[kind] = build_in_child(work, name, kind, budget, target, candidates)
                    print(f"built {n:,} {generator} images, {kind}: {built[kind][0]:.1f} s, peak RSS "
                          f"{built[kind][1]:.0f} MB", file=sys.stderr)
                info = index_info(work / f"index-{name}-{kind}")
                entry = info["first_stage"]
                rows[generator, n, stage] = {
                    "generator": generator, "images": n, "first_stage": stage,
                    "factory": entry.get("factory", "exact"), "params": entry.get("params", {}),
                    "build_s": built[kind][0], "peak_rss_mb": built[kind][1],
                    "bytes_per_image": info["bytes_per_image"],
                    "bytes_per_image_by_part": info["bytes_per_image_by_part"],
                    "recall_at_100": info["recall"]["value"] if info["recall"] else 1.0,
                    "choice": info["choice"] and {k: info["choice"][k] for k in ("budget_bytes", "target_recall",
                                                                                 "reason", "reaches_target")},
                    "first_stage_ms": [], "rerank_ms": [], "total_ms": []}
    for part in ("encoder", "scorer"):
        export_model(f"ames-dist-{part}", out_dir=work, precision="fp32")
    export_model("first-stage", out_dir=work, precision="fp32")
    rng = np.random.default_rng(1)
    q_desc = rng.standard_normal((600, DIM)).astype(np.float32)
    q_mask = np.arange(600) >= 571
    queries_of = {(g, n): held_out(n, g, queries) for g in generators for n in sizes}
    with OrtBackend(work / "ames-dist-scorer.onnx") as scorer, OrtBackend(work / "ames-dist-encoder.onnx") as encoder, \
            OrtBackend(work / "first-stage.onnx") as graph:
        reranker, _ = reranker_for(scorer, encoder=encoder)
        opened: dict[tuple[str, int, str], tuple[FirstStage, RerankStore]] = {}
        for g, n, stage in rows:
            kind = factory(stage, n)
            index = SearchIndex(work / f"index-{g}-{n}-{kind}")
            assert index.store is not None and index.first_stage is not None
            first: FirstStage = index.first_stage
            if stage == "graph":
                assert index.globals is not None
                first = GraphFirstStage(graph, index.globals)
            opened[g, n, stage] = (first, index.store)
        #: per case and timed query: (the first stage's top 100, the same re-ranked)
        found: dict[tuple[str, int, str], list[tuple[np.ndarray, np.ndarray]]] = {key: [] for key in rows}
        for i in range(queries + 1):  # the first round warms up
            for key, (first, store) in opened.items():
                query = queries_of[key[:2]][i:i + 1]
                t0 = time.perf_counter()
                sims, idx = first.search(query, SHORTLIST)
                t1 = time.perf_counter()
                db, db_mask = store.entries(idx[0])[:2]
                ranked = reranker.rerank(q_desc, q_mask, db, db_mask, sims[0])
                t2 = time.perf_counter()
                if i:
                    row = rows[key]
                    row["first_stage_ms"].append(1e3 * (t1 - t0))
                    row["rerank_ms"].append(1e3 * (t2 - t1))
                    row["total_ms"].append(1e3 * (t2 - t0))
                    found[key].append((idx[0], idx[0][ranked.order]))
        for g, n in queries_of:
            gallery = np.load(work / f"gallery-{g}-{n}.npy", mmap_mode="r")
            truth = global_shortlist(queries_of[g, n][1:], gallery, SHORTLIST)[1]
            for (g2, n2, stage), row in rows.items():
                if (g2, n2) != (g, n):
                    continue
                got = found[g, n, stage]
                row["recall_held_out"] = float(np.mean([len(np.intersect1d(t, f)) / SHORTLIST
                                                        for t, (f, _) in zip(truth, got, strict=True)]))
                planted = clustered(n, queries) if g == "clustered" else None
                row["map_reranked"] = None if planted is None else _map(got, planted)
                row["positives_at_100"] = None if planted is None else _positives_found(got, planted)
                for name in ("first_stage_ms", "rerank_ms", "total_ms"):
                    row[name] = float(np.median(row[name]))
    return list(rows.values())


def _map(found: list[tuple[np.ndarray, np.ndarray]], generator: Clustered) -> float:
    """The mAP of the timed queries' planted positives in their re-ranked shortlists (query i + 1: the first
    warmed up)."""
    return float(np.mean([average_precision(reranked, generator.positives_of(i + 1))
                          for i, (_, reranked) in enumerate(found)]))


def _positives_found(found: list[tuple[np.ndarray, np.ndarray]], generator: Clustered) -> float:
    """The share of the timed queries' planted positives in their first stage's top 100: the mAP of an ideal
    re-ranker (every positive it is given ranked first), the most any re-ranker can make of the shortlist.
    With random weights AMES's own scores do not tell a positive (its query's codes, 10 % of the bits
    flipped) from a random image, 0.24 against 0.24; its fused score keeps the first stage's similarity, so
    its mAP follows that stage's scores as well as its shortlist. This counts the shortlist alone."""
    return float(np.mean([np.isin(generator.positives_of(i + 1), shortlist).mean()
                          for i, (shortlist, _) in enumerate(found)]))


def table(rows: list[dict]) -> list[str]:
    """The docs' table: one row per generator, size and first stage (rows measured before the clustered
    gallery and the budget stage existed are unclustered ones, at the knobs their factory defaults to)."""
    lines = ["| gallery | images | first stage | build | peak RSS | bytes/image (first stage) | recall@100 (gallery / "
             "held-out) | positives in top 100 | mAP after AMES (random weights) | first stage ms | "
             "+ AMES re-rank 100 ms | total ms |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = r["first_stage"] if r["factory"] == "exact" else f"{r['first_stage']} `{r['factory']}`"
        knobs = ",".join(f"{k}={v}" for k, v in r.get("params", {}).items())
        ap = "–" if r.get("map_reranked") is None else f"{r['map_reranked']:.3f}"
        found = "–" if r.get("positives_at_100") is None else f"{r['positives_at_100']:.3f}"
        name += f" {knobs}" if knobs else ""
        lines.append(f"| {r.get('generator', 'unclustered')} | {r['images']:,} | {name} | "
                     f"{r['build_s']:.1f} s | {r['peak_rss_mb']:,.0f} MB | "
                     f"{r['bytes_per_image']:,.0f} ({r['bytes_per_image_by_part']['first_stage']:,.0f}) | "
                     f"{r['recall_at_100']:.3f} / {r['recall_held_out']:.3f} | {found} | {ap} | "
                     f"{r['first_stage_ms']:.2f} | "
                     f"{r['rerank_ms']:.1f} | {r['total_ms']:.1f} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
