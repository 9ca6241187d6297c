"""The first stage at scale: `python -m rerankrt.bench.search_scale [--images 10000,100000,1000000]
[--stages exact,graph,ivfpq,hnsw] [--queries 30] [--out DIR] [--work DIR]`.

For each size a synthetic gallery is written straight into index form: its globals by `synth.low_rank_globals`
(a 64-d Gaussian latent space embedded in 768-d, plus isotropic noise of 0.3 × the signal's scale, unit rows:
a low intrinsic dimension, as real descriptors have), its AMES store as `store_scale` writes one (random
sign codes, the released `ames-dist`: 807 B per image), shared by the indexes of that size through hard links.
Then, per first stage:

    exact   the numpy scan over `globals.f32` (`first_stage.global_shortlist`)
    graph   the same index through the `first-stage` graph on ONNX Runtime, FP32 (`GraphFirstStage`; the
            TensorRT engine of the same graph keeps the gallery in a device buffer)
    ivfpq   faiss IVF{4·√N as a power of two},PQ64, trained on min(N, 100,000) gallery vectors, nprobe 16
    hnsw    faiss HNSW32, efSearch 128

each index is built in a spawned child process of its own, so that its build time and peak RSS are its own; bytes
per image count every file of the index (`index_info`); recall@100 is the index's recorded one (1,000 gallery
vectors as queries against the exact scan), and, for held-out queries (vectors of the same distribution, not
in the gallery), the share of the exact top 100 each stage returns. Then the timed queries run interleaved,
query by query over every size and stage (drift hits all alike): the first stage's top 100, and AMES
re-ranking those 100 from the store (the query encoded once, the scorer on ONNX Runtime). Medians are
reported; a table is printed and `search_scale.json` written (the README's table is rendered from it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rerankrt.bench.store_scale import synthesize_store
from rerankrt.bench.synth import low_rank_globals
from rerankrt.search.exact import global_shortlist
from rerankrt.search.first_stage import GraphFirstStage, ivf_pq
from rerankrt.search.index import SearchIndex, index_info, write_index
from rerankrt.search.protocols import FirstStage, RerankStore

DIM = 768
SHORTLIST = 100
#: gallery vectors generated per step (bounded memory: 65,536 × 768 float32 = 200 MB)
STEP = 65_536
STAGES = ("exact", "graph", "ivfpq", "hnsw")
#: held-out queries are rows of the generator far past any gallery
HELD_OUT = 10**12


def factory(stage: str, images: int) -> str:
    """The first stage `index build --first-stage` is given for `stage` at `images` images."""
    if stage in ("exact", "graph"):
        return "exact"
    if stage == "ivfpq":
        return ivf_pq(images)
    return "HNSW32"


def write_gallery(path: Path, images: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(images, DIM))
    for start in range(0, images, STEP):
        out[start:start + STEP] = low_rank_globals(min(STEP, images - start), DIM, start=start)
    out.flush()


def linked_store(source: Path):
    """`make_store` for `write_index`: the store at `source`, hard-linked (one store per size on disk)."""
    def make(path: Path) -> Path:
        path.mkdir()
        for f in source.iterdir():
            os.link(f, path / f.name)
        return path
    return make


def build(work: Path, images: int, kind: str) -> None:
    """The index of `images` images with first stage `kind`, from the gallery and store `run` wrote."""
    gallery = np.load(work / f"gallery-{images}.npy", mmap_mode="r")
    write_index(work / f"index-{images}-{kind}", gallery, linked_store(work / f"store-{images}"), first_stage=kind,
                shortlist=SHORTLIST)


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
        raise RuntimeError(f"building {args[2]} over {args[1]:,} images failed in its child process "
                           f"(exit status {os.waitstatus_to_exitcode(status)})")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="10000,100000,1000000", help="comma-separated gallery sizes")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--queries", type=int, default=30, help="timed queries per size and stage")
    parser.add_argument("--out", default=".", help="where search_scale.json goes")
    parser.add_argument("--work", help="where the indexes are built (default: a temporary folder; 1M images "
                                       "take ~10 GB)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.images.split(",")]
    stages = args.stages.split(",")
    unknown = [s for s in stages if s not in STAGES]
    if unknown or args.queries < 1:
        parser.error(f"--stages: expected some of {', '.join(STAGES)}, got {unknown}" if unknown else
                     f"--queries: expected a positive number, got {args.queries}")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        rows = run(Path(tmp), sizes, stages, args.queries)
    for line in table(rows):
        print(line)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "search_scale.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def run(work: Path, sizes: list[int], stages: list[str], queries: int) -> list[dict]:
    from rerankrt.export.onnx_export import export_model
    from rerankrt.runtime.loops import reranker_for
    from rerankrt.runtime.ort_backend import OrtBackend

    rows: dict[tuple[int, str], dict] = {}
    for n in sizes:
        write_gallery(work / f"gallery-{n}.npy", n)
        synthesize_store(work / f"store-{n}", n)
        built: dict[str, tuple[float, float]] = {}
        for stage in stages:
            kind = factory(stage, n)
            out = work / f"index-{n}-{kind}"
            if kind not in built:
                built[kind] = build_in_child(work, n, kind)
                print(f"built {n:,} images, {kind}: {built[kind][0]:.1f} s, peak RSS {built[kind][1]:.0f} MB",
                      file=sys.stderr)
            info = index_info(out)
            recall = info["recall"]["value"] if info["recall"] else 1.0
            rows[n, stage] = {"images": n, "first_stage": stage, "factory": kind, "build_s": built[kind][0],
                              "peak_rss_mb": built[kind][1], "bytes_per_image": info["bytes_per_image"],
                              "bytes_per_image_by_part": info["bytes_per_image_by_part"], "recall_at_100": recall,
                              "first_stage_ms": [], "rerank_ms": [], "total_ms": []}
    for part in ("encoder", "scorer"):
        export_model(f"ames-dist-{part}", out_dir=work, precision="fp32")
    export_model("first-stage", out_dir=work, precision="fp32")
    held_out = low_rank_globals(queries + 1, DIM, start=HELD_OUT)
    rng = np.random.default_rng(1)
    q_desc = rng.standard_normal((600, DIM)).astype(np.float32)
    q_mask = np.arange(600) >= 571
    with OrtBackend(work / "ames-dist-scorer.onnx") as scorer, OrtBackend(work / "ames-dist-encoder.onnx") as encoder, \
            OrtBackend(work / "first-stage.onnx") as graph:
        reranker, _ = reranker_for(scorer, encoder=encoder)
        opened: dict[tuple[int, str], tuple[FirstStage, RerankStore]] = {}
        for (n, stage), row in rows.items():
            index = SearchIndex(work / f"index-{n}-{row['factory']}")
            assert index.store is not None and index.first_stage is not None
            first: FirstStage = index.first_stage
            if stage == "graph":
                assert index.globals is not None
                first = GraphFirstStage(graph, index.globals)
            opened[n, stage] = (first, index.store)
        found: dict[tuple[int, str], list[np.ndarray]] = {key: [] for key in rows}
        for i in range(queries + 1):  # the first round warms up
            for key, (first, store) in opened.items():
                t0 = time.perf_counter()
                sims, idx = first.search(held_out[i:i + 1], SHORTLIST)
                t1 = time.perf_counter()
                db, db_mask = store.entries(idx[0])[:2]
                reranker.rerank(q_desc, q_mask, db, db_mask, sims[0])
                t2 = time.perf_counter()
                if i:
                    row = rows[key]
                    row["first_stage_ms"].append(1e3 * (t1 - t0))
                    row["rerank_ms"].append(1e3 * (t2 - t1))
                    row["total_ms"].append(1e3 * (t2 - t0))
                    found[key].append(idx[0])
        truth = {n: global_shortlist(held_out[1:], np.load(work / f"gallery-{n}.npy", mmap_mode="r"), SHORTLIST)[1]
                 for n in sizes}
        for (n, stage), row in rows.items():
            row["recall_held_out"] = float(np.mean([len(np.intersect1d(t, f)) / SHORTLIST
                                                    for t, f in zip(truth[n], found[n, stage], strict=True)]))
            for name in ("first_stage_ms", "rerank_ms", "total_ms"):
                row[name] = float(np.median(row[name]))
    return list(rows.values())


def table(rows: list[dict]) -> list[str]:
    """The README's table: one row per size and first stage."""
    lines = ["| images | first stage | build | peak RSS | bytes/image (first stage) | recall@100 (gallery / held-out) "
             "| first stage ms | + AMES re-rank 100 ms | total ms |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = r["first_stage"] if r["factory"] == "exact" else f"{r['first_stage']} `{r['factory']}`"
        lines.append(f"| {r['images']:,} | {name} | {r['build_s']:.1f} s | {r['peak_rss_mb']:,.0f} MB | "
                     f"{r['bytes_per_image']:,.0f} ({r['bytes_per_image_by_part']['first_stage']:,.0f}) | "
                     f"{r['recall_at_100']:.3f} / {r['recall_held_out']:.3f} | {r['first_stage_ms']:.2f} | "
                     f"{r['rerank_ms']:.1f} | {r['total_ms']:.1f} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
