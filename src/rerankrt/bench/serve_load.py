"""Load on a real Triton server: `python -m rerankrt.bench.serve_load [--artifacts ART] [--images 10000]
[--concurrency 1,2,4,8] [--requests 24] [--search-requests 8] [--time-limit 120] [--out DIR]`.

A synthetic `ames-dist` store of `--images` images (`store_scale.synthesize_store`: what `rerankrt index
build` writes for a gallery of that size, the released configuration's random weights) behind the
repository `rerankrt triton --store` writes, served by `rerankrt serve`'s server on free loopback ports.
Then `ames-dist_rerank` answers queries of 600 descriptors with shortlists of S = 100 stored images from
a bounded load generator: tritonclient's asyncio gRPC client, `concurrency` requests in flight, a fixed
number of requests per level and a time limit, every level on the same queries. Beside it, the same
queries through the same loop in process (`AmesReranker` over the scorer and encoder on ONNX Runtime,
one after the other). Reports throughput and p50/p90/p99 latency per level, the server's start-up time
and its dynamic batches; writes `serve_load.json` and prints a table (the README's is generated from it).

The same server also runs `search` (`rerankrt triton --index`) over a search index of the same gallery
(the store beside random unit globals, `search_index.write_index`) with the released extractor (random
weights, FP32 graph): one encoded photo of 640 × 480 px per request, described at 770 px (55 × 41 patches),
searched, its top 100 re-ranked. Beside it, `Searcher` in process on the same photos, with the median of
each stage (extract, first stage, re-rank).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt.core import environment
from rerankrt.search.store import AmesStore

MODEL = "ames-dist"
SHORTLIST = 100
QUERY_DESCRIPTORS = 600
TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.bool_): "BOOL", np.dtype(np.int64): "INT64",
         np.dtype(np.object_): "BYTES"}
#: the query photos of the search case (described at the released 770 px: 55 × 41 patches)
PHOTO = (480, 640)


def queries(n: int, images: int, dim: int = 768, seed: int = 0, shortlist: int = SHORTLIST
            ) -> list[dict[str, np.ndarray]]:
    """`n` requests of `ames-dist_rerank`: unit descriptors with some padding, `shortlist` random stored
    images, and decreasing first-stage similarities."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        desc = rng.standard_normal((QUERY_DESCRIPTORS, dim)).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=1, keepdims=True)
        out.append({"q_desc": desc, "q_mask": np.arange(QUERY_DESCRIPTORS) >= rng.integers(300, 601),
                    "shortlist": rng.choice(images, shortlist, replace=False).astype(np.int64),
                    "global_sim": np.sort(rng.uniform(0.2, 0.9, shortlist))[::-1].astype(np.float32)})
    return out


def photos(n: int, seed: int = 0) -> list[bytes]:
    """`n` PNG-encoded synthetic photos (smooth structure and noise) for `search` requests."""
    import cv2

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:PHOTO[0], 0:PHOTO[1]]
    out = []
    for i in range(n):
        base = np.stack([np.sin(x / (9 + i % 7) + c) * np.cos(y / (13 + c)) for c in range(3)], -1) * 90 + 128
        ok, data = cv2.imencode(".png", np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
        out.append(data.tobytes())
    return out


def search_index(out: Path, images: int, seed: int = 0) -> Path:
    """A search index of `images` synthetic gallery images: random unit globals beside a synthetic store."""
    from rerankrt.bench.store_scale import synthesize_store
    from rerankrt.search.index import write_index

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((images, 768)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return write_index(out, vectors, lambda path: synthesize_store(path, images, MODEL),
                       source={"synthetic": images})


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1e3
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)} if len(ms) else {}


async def _level(url: str, model: str, requests: list[dict], concurrency: int, time_limit: float) -> dict:
    """`concurrency` workers send the requests one after the other until all are sent or the time is up."""
    import tritonclient.grpc.aio as grpc_aio
    from tritonclient.grpc import InferInput

    client = grpc_aio.InferenceServerClient(url)
    latencies: list[float] = []
    errors: list[str] = []
    queue = list(range(len(requests)))
    deadline = time.monotonic() + time_limit

    async def worker() -> None:
        while queue and time.monotonic() < deadline:
            arrays = requests[queue.pop()]
            inputs = []
            for name, value in arrays.items():
                tensor = InferInput(name, list(value.shape), TYPES[value.dtype])
                tensor.set_data_from_numpy(value)
                inputs.append(tensor)
            start = time.perf_counter()
            try:
                await client.infer(model, inputs, client_timeout=max(deadline - time.monotonic(), 1.0))
                latencies.append(time.perf_counter() - start)
            except Exception as e:  # noqa: BLE001  (the server's or the transport's error: counted, reported)
                errors.append(str(e).splitlines()[0][:200])

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    elapsed = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors),
            "first_error": errors[0] if errors else None, "seconds": elapsed,
            "throughput_qps": len(latencies) / elapsed if elapsed else 0.0, **percentiles(latencies)}


def run_load(url: str, model: str, requests: list[dict], levels: list[int], time_limit: float) -> list[dict]:
    """One row per concurrency level, the levels one after the other on the same requests."""
    return [asyncio.run(_level(url, model, requests, c, time_limit)) for c in levels]


def in_process(artifacts: Path, store: Path, requests: list[dict]) -> dict:
    """The same loop without the server: the scorer and encoder on ONNX Runtime, one query at a time."""
    from rerankrt.runtime import AmesReranker, OrtBackend

    opened = AmesStore(store)
    latencies = []
    with OrtBackend(artifacts / f"{MODEL}-scorer.onnx") as scorer, \
            OrtBackend(artifacts / f"{MODEL}-encoder.onnx") as encoder:
        reranker = AmesReranker(scorer, 0.35, 0.1, encoder=encoder)
        for r in requests:
            start = time.perf_counter()
            db, db_mask = opened.entries(r["shortlist"])
            reranker.rerank(r["q_desc"], r["q_mask"], db, db_mask, r["global_sim"])
            latencies.append(time.perf_counter() - start)
    return {"requests": len(latencies), "throughput_qps": len(latencies) / sum(latencies), **percentiles(latencies)}


def in_process_search(artifacts: Path, index: Path, requests: list[bytes]) -> dict:
    """`Searcher` on ONNX Runtime over the same index and photos, decoding included, one at a time."""
    from rerankrt.data.extraction import decode_image
    from rerankrt.runtime.request import BackendRequest
    from rerankrt.search.searcher import Searcher

    latencies, stages = [], []
    with Searcher(index, BackendRequest("ort", artifacts)) as searcher:
        searcher.search(decode_image(requests[0]))  # warm, as the server is: the extractor opens on first use
        for data in requests:
            start = time.perf_counter()
            stages.append(searcher.search(decode_image(data)).timing_ms)
            latencies.append(time.perf_counter() - start)
    medians = {k: float(np.median([t[k] for t in stages])) for k in ("extract", "first_stage", "rerank")}
    return {"requests": len(latencies), "throughput_qps": len(latencies) / sum(latencies), **percentiles(latencies),
            "stage_medians_ms": medians}


def batches(url: str, model: str) -> dict[int, int]:
    """{batch size: executions} of `model` from the server's statistics."""
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model).model_stats[0]
    return {int(b.batch_size): int(b.compute_infer.count) for b in stats.batch_stats}


def measure(artifacts: Path, images: int, levels: list[int], count: int, time_limit: float, work: Path,
            python_env: str | None = None, log: Callable[[str], None] = print, search_count: int = 0) -> dict:
    from rerankrt.export.onnx_export import export_model
    from rerankrt.serve.repository import write_repository
    from rerankrt.serve.server import TritonServer, free_port

    graphs = [f"{MODEL}-encoder", f"{MODEL}-scorer", *(["dinov2-extractor"] if search_count else [])]
    for graph in graphs:
        if not (artifacts / f"{graph}.onnx").is_file():
            log(f"exporting {graph} (fp32) to {artifacts}")
            export_model(graph, out_dir=artifacts, precision="fp32")
    index = search_index(work / "index", images)
    store = index / "store"
    repo = write_repository(artifacts, work / "repo", precision="fp32", models=graphs, stores=[str(index)],
                            index=index if search_count else None)
    requests = queries(count, images)
    images_sent = photos(search_count)
    ports = {k: free_port() for k in ("http", "grpc", "metrics")}
    start = time.perf_counter()
    with TritonServer(repo, ports["http"], ports["grpc"], ports["metrics"], python=python_env, log=log) as server:
        startup = time.perf_counter() - start
        log(f"server ready in {startup:.1f} s: {', '.join(server.models)}")
        url = f"127.0.0.1:{ports['grpc']}"
        run_load(url, f"{MODEL}_rerank", requests[:2], [1], time_limit)  # warm: first calls open sessions
        rows = run_load(url, f"{MODEL}_rerank", requests, levels, time_limit)
        scorer_batches = batches(url, f"{MODEL}-scorer")
        search_requests = [{"query": np.array([b], np.object_)} for b in images_sent]
        search_rows: list[dict] = []
        if search_requests:
            run_load(url, "search", search_requests[:1], [1], time_limit)
            search_rows = run_load(url, "search", search_requests, levels, time_limit)
    baseline = in_process(artifacts, store, requests)
    search = {"model": "search", "photo": list(PHOTO), "imsize": 770, "rows": search_rows,
              "in_process": in_process_search(artifacts, index, images_sent)} if search_requests else None
    return {"model": f"{MODEL}_rerank", "images": images, "shortlist": SHORTLIST,
            "query_descriptors": QUERY_DESCRIPTORS, "startup_s": startup, "rows": rows, "in_process": baseline,
            "scorer_batches": scorer_batches, "time_limit_s": time_limit, "search": search,
            "environment": environment.describe()}


def table(results: dict) -> list[str]:
    lines = [f"| {results['model']} (S = {results['shortlist']}, {results['images']:,} images) | requests | "
             f"queries/s | p50 ms | p90 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    cases = [(results, "")]
    if results.get("search"):
        search = results["search"]
        cases.append((search, f"`search` ({search['photo'][1]} × {search['photo'][0]} px photos at "
                              f"{search['imsize']} px, S = {results['shortlist']}): "))
    for case, label in cases:
        for r in case["rows"]:
            lines.append(f"| {label}Triton, concurrency {r['concurrency']} | {r['requests']} | "
                         f"{r['throughput_qps']:.2f} | {r['p50_ms']:,.0f} | {r['p90_ms']:,.0f} | {r['p99_ms']:,.0f} |")
        b = case["in_process"]
        lines.append(f"| {label}in process, one at a time | {b['requests']} | {b['throughput_qps']:.2f} | "
                     f"{b['p50_ms']:,.0f} | {b['p90_ms']:,.0f} | {b['p99_ms']:,.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, help="exported ames-dist-encoder / -scorer (default: exported here)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--search-requests", type=int, default=8,
                        help="search requests per concurrency level (0: no search case)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per level at most")
    parser.add_argument("--python-env", help="the Python backend's environment (rerankrt serve --python-env)")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = args.artifacts or Path(tmp) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        results = measure(artifacts, args.images, levels, args.requests, args.time_limit, Path(tmp),
                          args.python_env, log=lambda m: print(m, file=sys.stderr), search_count=args.search_requests)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_load.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(table(results)))
    print(f"start-up {results['startup_s']:.1f} s; scorer batches {results['scorer_batches']}")
    if results["search"]:
        stages = results["search"]["in_process"]["stage_medians_ms"]
        print("search in process, medians: " + ", ".join(f"{k} {v:,.1f} ms" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
