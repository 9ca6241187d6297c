"""Rewrite the documentation's measured tables (README.md and docs/*.md) from the profiler's output, so that
none is typed by hand.

A generated table sits between `<!-- table: KIND measured/FILE.json -->` and `<!-- /table -->`: KIND is
one of RENDERERS, FILE a results.json of `rerankrt bench` (or store_scale.json of
`python -m rerankrt.bench.store_scale`, serve_load.json of `python -m rerankrt.bench.serve_load`,
search_scale.json of `python -m rerankrt.bench.search_scale`, search.json of `rerankrt bench --search` or
`python -m rerankrt.bench.search_latency`) kept
under measured/. After a new run, copy its output there
and rewrite: `python scripts/readme_tables.py [FILE.md …]` (default: README.md and docs/*.md); `--check`
exits 1 when a table is stale (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (\S+) (\S+) -->\n)(.*?)(<!-- /table -->)", re.S)


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _by(rows: list[dict], *keys: str) -> dict[tuple, dict]:
    return {tuple(r[k] for k in keys): r for r in rows}


def backends(results: dict) -> list[str]:
    """Eager PyTorch against ONNX Runtime on the CPU, every case both ran, in one interleaved run."""
    rows = _by(results["results"], "label", "backend", "precision", "shortlist", "batch")
    lines = ["| model | S or batch | torch ms | ONNX Runtime ms | torch / ONNX Runtime |", "|---|---:|---:|---:|---:|"]
    for (label, backend, precision, shortlist, batch), r in rows.items():
        ort = rows.get((label, "ort", precision, shortlist, batch))
        if backend == "torch" and ort:
            lines.append(f"| {label} | {shortlist or batch} | {_ms(r['median'])} | {_ms(ort['median'])} | "
                         f"{r['median'] / ort['median']:.2f} |")
    return lines


def comparison(results: dict) -> list[str]:
    """The re-rankers at the largest shortlist: latency, spread, the speed-up over the fastest baseline."""
    size = max(r["shortlist"] for r in results["results"] if r["shortlist"] is not None)
    rows = sorted((r for r in results["results"] if r["shortlist"] == size),
                  key=lambda r: (r["baseline"], r["label"], r["backend"]))
    lines = [f"| model (S = {size}) | backend | median ms/query | min–max ms | vs fastest baseline | MB fed/query |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['label']}{' (baseline)' if r['baseline'] else ''} | {r['backend']} | {_ms(r['median'])} | "
              f"{_ms(r['min'])}–{_ms(r['max'])} | {r['vs_baseline']:.2f}× | {r['bytes_fed'] / 1e6:.2f} |"
              for r in rows]
    return lines


def store(results: dict) -> list[str]:
    """AMES from descriptors against AMES from its store, per variant."""
    rows = _by(results["results"], "model", "backend")
    lines = ["| path | torch ms/query | ONNX Runtime ms/query | MB fed per query | bytes per database image |",
             "|---|---:|---:|---:|---:|"]
    for whole in ("ames", "ames-dist"):
        for model, path in ((whole, f"`{whole}`, whole model (query repeated per pair, float32 descriptors)"),
                            (f"{whole}-scorer", f"`{whole}` from the store (query encoded once)")):
            if (model, "torch") in rows and (model, "ort") in rows:
                t, o = rows[model, "torch"], rows[model, "ort"]
                lines.append(f"| {path} | {_ms(t['median'])} | {_ms(o['median'])} | {o['bytes_fed'] / 1e6:.2f} | "
                             f"{o['storage_bytes_per_image']:,.0f} |")
    return lines


def scale(runs: list[dict]) -> list[str]:
    """The store at growing sizes: build, memory, bytes per image, per-query latency."""
    lines = ["| images | build | peak RSS | bytes/image | median ms/query | min | max |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['images']:,} | {r['build_s']:.1f} s | {r['peak_rss_mb']:.0f} MB | {r['bytes_per_image']:.1f} | "
              f"{_ms(r['median_ms'])} | {_ms(r['min_ms'])} | {_ms(r['max_ms'])} |" for r in runs]
    return lines


def search_scale(rows: list[dict]) -> list[str]:
    """The first stages at growing gallery sizes (the bench prints the same table)."""
    from rerankrt.bench.search_scale import table

    return table(rows)


def search(results: dict) -> list[str]:
    """A search's stages per index, re-ranker and backend (the bench prints the same table)."""
    from rerankrt.bench.search_latency import table

    return table(results)


def serve_load(results: dict) -> list[str]:
    """Triton under load beside the same loop in process (the bench prints the same table)."""
    from rerankrt.bench.serve_load import table

    return table(results)


def deployed(results: dict) -> list[str]:
    """Every deployed form of each model side by side (the profiler's report prints the same table)."""
    from rerankrt.bench.report import deployed as table

    return table(results)[2:-3]  # the table alone: its heading and its note are the page's


def operators(results: dict) -> list[str]:
    """Where ONNX Runtime's time goes, by operator type (the profiler's report prints the same table)."""
    from rerankrt.bench.report import operators as table

    return table(results)[2:-3]


def options(result: dict) -> list[str]:
    """ONNX Runtime's session options side by side (`python -m rerankrt.bench.ort_options`)."""
    base = result["median_ms"]["rerankrt"]
    lines = ["| session options | median ms | vs rerankrt's |", "|---|---:|---:|"]
    lines += [f"| {name} | {_ms(ms)} | {ms / base:.2f}× |" for name, ms in result["median_ms"].items()]
    return lines


RENDERERS = {"deployed": deployed, "options": options, "operators": operators, "backends": backends,
             "comparison": comparison, "store": store, "scale": scale, "serve_load": serve_load,
             "search_scale": search_scale, "search": search}


def rewrite(text: str, root: Path = ROOT) -> str:
    def render(match: re.Match) -> str:
        kind, source = match.group(2), match.group(3)
        if kind not in RENDERERS:
            raise ValueError(f"table kind {kind!r}: expected one of {', '.join(RENDERERS)}")
        data = json.loads((root / source).read_text())
        return match.group(1) + "\n".join(RENDERERS[kind](data)) + "\n" + match.group(5)

    return BLOCK.sub(render, text)


def documents() -> list[Path]:
    """The files whose tables are measured: the README and the documentation pages."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="markdown files (default: README.md and docs/*.md)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a table differs from its data")
    args = parser.parse_args()
    stale = []
    for path in [Path(f) for f in args.files] or documents():
        text = path.read_text()
        new = rewrite(text)
        if args.check:
            stale += [f"{m.group(2)} {m.group(3)} in {path.name}" for m, n in
                      zip(BLOCK.finditer(text), BLOCK.finditer(new), strict=True) if m.group(0) != n.group(0)]
        elif new != text:
            path.write_text(new)
    if args.check:
        print("\n".join(f"stale table: {s}" for s in stale) or "the documentation's tables match their data")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
