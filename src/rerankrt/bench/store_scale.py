"""How an AMES store scales: `python -m rerankrt.bench.store_scale [--images 10000,1000000] [--queries 30]`.

For each size, a synthetic `ames-dist` store is written directly (random sign codes and padding masks in
chunks of 65,536 images, the manifest of the released configuration's random weights: what
`rerankrt index build` would write from a gallery of that size), with its build time and the process's
peak RSS. Then queries are re-ranked against random shortlists of 100 images of each store, the sizes
interleaved query by query (A, B, A, B …) so that drift hits both: the query's descriptors encoded once,
the stored entries read by random access from the memory map, the scorer through ONNX Runtime. The
per-query latency should not depend on the store's size. Prints a table and writes `store_scale.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rerankrt.models import get_info
from rerankrt.search.store import AmesStore, StoreWriter, store_info

#: images written per step (bounded memory: 65,536 × 807 B ≈ 53 MB)
STEP = 65_536


def synthesize_store(out: Path, images: int, model: str = "ames-dist", seed: int = 0) -> Path:
    """A store of `images` images with random codes (or tokens) and 25–50 valid descriptors each."""
    info = get_info(model)
    cfg = dataclasses.asdict(info.config)
    t, e = info.config.db_descriptors, info.config.model_dim
    rng = np.random.default_rng(seed)
    meta = {"model": f"{model}-encoder", "checkpoint": None}
    with StoreWriter(out, model, cfg, images, t, meta) as writer:
        for start in range(0, images, STEP):
            n = min(STEP, images - start)
            mask = np.arange(t) >= rng.integers(t // 2, t + 1, n)[:, None]
            if info.config.binarized:
                writer.write(start, rng.integers(0, 256, (n, t, e // 8), dtype=np.uint8), mask, packed=True)
            else:
                writer.write(start, rng.standard_normal((n, t, e), dtype=np.float32), mask)
        writer.finish({"synthetic": True, "seed": seed})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="10000,1000000", help="comma-separated store sizes")
    parser.add_argument("--queries", type=int, default=30, help="timed queries per size")
    parser.add_argument("--shortlist", type=int, default=100)
    parser.add_argument("--out", default=".", help="where store_scale.json goes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.images.split(",")]
    from rerankrt.export.onnx_export import export_model
    from rerankrt.runtime.loops import reranker_for
    from rerankrt.runtime.ort_backend import OrtBackend

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            start = time.perf_counter()
            synthesize_store(Path(tmp) / f"store-{n}", n)
            rows[n] = {"images": n, "build_s": time.perf_counter() - start,
                       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       "bytes_per_image": store_info(Path(tmp) / f"store-{n}")["bytes_per_image"], "times_ms": []}
        for part in ("encoder", "scorer"):
            export_model(f"ames-dist-{part}", out_dir=tmp, precision="fp32")
        stores = {n: AmesStore(Path(tmp) / f"store-{n}") for n in sizes}
        rng = np.random.default_rng(1)
        with OrtBackend(Path(tmp) / "ames-dist-scorer.onnx") as scorer, \
                OrtBackend(Path(tmp) / "ames-dist-encoder.onnx") as encoder:
            reranker, _ = reranker_for(scorer, encoder=encoder)
            q_desc = rng.standard_normal((600, 768)).astype(np.float32)
            q_mask = np.arange(600) >= 571
            sims = np.linspace(0.9, 0.5, args.shortlist)
            for i in range(args.queries + 1):  # the first round warms up
                for n, store in stores.items():
                    shortlist = rng.choice(n, args.shortlist, replace=False)
                    t0 = time.perf_counter()
                    db, db_mask = store.entries(shortlist)
                    reranker.rerank(q_desc, q_mask, db, db_mask, sims)
                    if i:
                        rows[n]["times_ms"].append((time.perf_counter() - t0) * 1e3)
    for row in rows.values():
        row["median_ms"] = float(np.median(row["times_ms"]))
        row["min_ms"], row["max_ms"] = float(np.min(row["times_ms"])), float(np.max(row["times_ms"]))
    print("| images | build s | peak RSS MB | bytes/image | median ms/query (S 100) | min | max |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows.values():
        print(f"| {r['images']:,} | {r['build_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['bytes_per_image']:.1f} | "
              f"{r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['max_ms']:.1f} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "store_scale.json").write_text(json.dumps(list(rows.values()), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
