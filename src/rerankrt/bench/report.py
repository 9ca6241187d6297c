"""The profiler's report, as a latency engineer reads it: the comparison first, encoders apart, a roofline.

results.md opens with one comparison table per shortlist size: every re-ranker per backend and precision,
its median and p90 latency per query with the min–max spread of the repeats, the speed-up over the
fastest pair-wise baseline and over the published code path (where one was timed) at the same backend,
precision and size, the bytes fed per query and the bytes per database image. Encoders follow in their
own table (per batch, per image, images per second), then the roofline table with both probed roofs.
Plots: latency against the shortlist size (two or more sizes) or grouped bars (one size), and the
roofline (achieved FLOP/s against FLOP per byte moved, under the compute and memory roofs). results.csv
holds every row. `compare_runs` puts two runs side by side (FP32 vs FP16, or two machines).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from rerankrt.core.atomic import atomic_output
from rerankrt.core.manifest import read_tagged_json
from rerankrt.models import MODELS

#: the version of results.json: written by the profiler, read here (and by --compare)
SCHEMA = "rerankrt-bench/2"

COLUMNS = ["model", "label", "kind", "backend", "precision", "shortlist", "batch", "calls", "median", "p90", "p99",
           "mean", "std", "min", "max", "n", "vs_baseline", "vs_published", "flops", "bytes_fed", "bytes_moved",
           "intensity", "gflops_per_s", "bound_gflops", "roofline_fraction", "storage_bytes_per_image",
           "storage_measured", "peak_rss_mb", "peak_device_mb"]
#: published code path → the model whose weights it runs (`locore-hf` → `locore`)
PUBLISHED = {info.published_path: name for name, info in MODELS.items() if info.published_path}


def write_report(results: dict, out: Path) -> None:
    with atomic_output(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results["results"])
    with atomic_output(out / "results.md") as tmp:
        tmp.write_text(markdown(results))
    plot(results, out)


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def _times(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}×"


def add_ratios(rows: list[dict]) -> None:
    """Give every re-ranker row `vs_baseline` (the fastest pair-wise baseline's median at the same backend,
    precision and shortlist over this one) and `vs_published` (likewise the published code path of the same
    model), None where nothing to compare with was measured."""
    for r in rows:
        same = [o for o in rows if o["shortlist"] is not None and (o["backend"], o["precision"], o["shortlist"]) ==
                (r["backend"], r["precision"], r["shortlist"])]
        # a baseline run at a reduced size (RRT at 100 locals) is no headline: it is compared in its own table
        baselines = [o["median"] for o in same if o["baseline"] and o["kind"] == "pair-wise" and not o.get("reduced")]
        published = [o["median"] for o in same if PUBLISHED.get(o["model"]) == r["model"]]
        r["vs_baseline"] = min(baselines) / r["median"] if baselines and r["shortlist"] is not None else None
        r["vs_published"] = published[0] / r["median"] if published else None


#: the forms side by side in the deployed-graphs table: (backend, precision)
FORMS = (("torch", "fp32"), ("ort", "fp32"), ("ort-fused", "fp32"), ("ort", "int8"), ("ort-fused", "int8"))


def _agreement(a: dict | None) -> str:
    if not a:
        return "–"
    rho = "n/a" if a.get("spearman") is None else f"{a['spearman']:.3f}"
    return f"ρ {rho}, top-10 {a['top10']:.2f}"


def deployed(results: dict) -> list[str]:
    """Each model's forms side by side at one size: median ms, speed-up over torch FP32, fraction of the
    matching roof, and the INT8 graph's ranking agreement (recorded at its export)."""
    rows = results["results"]
    keys = sorted({(r["label"], r["shortlist"] or r["batch"]) for r in rows}, key=lambda k: (k[1], k[0]))
    forms = [f for f in FORMS if any((r["backend"], r["precision"]) == f for r in rows)]
    lines = ["## The deployed graphs side by side", "",
             "| model | size | " + " | ".join(f"{b} {p}" for b, p in forms) + " | INT8 agreement |",
             "|---|---:|" + "---:|" * len(forms) + "---|"]
    for label, size in keys:
        found = {(r["backend"], r["precision"]): r for r in rows if (r["label"], r["shortlist"] or r["batch"]) ==
                 (label, size)}
        if len([f for f in forms if f in found]) < 2:
            continue
        torch = found.get(("torch", "fp32"))
        cells = []
        for form in forms:
            r = found.get(form)
            if r is None:
                cells.append("–")
                continue
            speed = f", {torch['median'] / r['median']:.2f}×" if torch and form != ("torch", "fp32") else ""
            roof = f", {100 * r['roofline_fraction']:.0f} % of roof" if r.get("roofline_fraction") else ""
            if r.get("fp32_roof_fraction"):
                roof = (f", {100 * r['fp32_roof_fraction']:.0f} % of the FP32 roof, "
                        f"{100 * r['roofline_fraction']:.0f} % of the INT8 roof")
            cells.append(f"{_ms(r['median'])}{speed}{roof}")
        int8 = found.get(("ort-fused", "int8")) or found.get(("ort", "int8")) or {}
        lines.append(f"| {label} | {size} | " + " | ".join(cells) + f" | {_agreement(int8.get('agreement'))} |")
    lines += ["", "Median ms per query (or per batch of images), the speed-up over torch FP32 of the same model and "
                  "size, and the fraction of the matching roof (the FP32 GEMM roof; an INT8 graph, whose attention "
                  "and normalisations stay in float, against both its roofs). "
                  "ort: the standard graph (what TensorRT parses); ort-fused: the graph fused for ONNX Runtime. "
                  "INT8 agreement: Spearman's ρ and the top-10 overlap against the FP32 graph on the calibration "
                  "data's held-out queries (rerankrt export --precision int8).", ""]
    return lines


def operators(results: dict) -> list[str]:
    """Where each ONNX Runtime case's node time goes, by operator type (`bench.op_profile`)."""
    profiled = [r for r in results["results"] if r.get("ops")]
    if not profiled:
        return []
    lines = ["## Where ONNX Runtime's time goes", "", "| model | backend | precision | size | dense products | "
             "heaviest operator types (share of node time) |", "|---|---|---|---:|---:|---|"]
    lines += [f"| {r['label']} | {r['backend']} | {r['precision']} | {r['shortlist'] or r['batch']} | "
              f"{100 * r['ops']['products']:.0f} % | "
              + ", ".join(f"{op} {100 * share:.0f} %" for op, share in r["ops"]["ops"]) + " |" for r in profiled]
    lines += ["", "Dense products: MatMul, Gemm, Conv and their fused and integer forms, MultiHeadAttention; the rest "
                  "(transposes, reshapes, casts, softmax, normalisations, copies) is what fusion can remove.", ""]
    return lines


def rerankers(results: dict) -> dict[int, list[dict]]:
    """The re-ranker rows by shortlist size, re-rankers first, then the published code paths, then baselines."""
    by_size: dict[int, list[dict]] = {}
    for r in results["results"]:
        if r["shortlist"] is not None:
            by_size.setdefault(r["shortlist"], []).append(r)
    return {size: sorted(group, key=lambda r: (r["baseline"], r["model"] in PUBLISHED, r["label"], r["backend"],
                                               r["precision"]))
            for size, group in sorted(by_size.items())}


def _sizing(sizing: dict | None) -> str:
    """What the preset scaled on this machine (`profile.scaled_repeat`), said after the repeats."""
    if not sizing:
        return ""
    return (f" The repeats are scaled from the preset's {sizing['repeat']}: this machine's best compute roof is "
            f"{sizing['roof_gflops']:.0f} GFLOP/s, the preset is sized for {sizing['sized_for_gflops']:.0f}.")


def markdown(results: dict) -> str:
    settings, env = results["settings"], results["environment"]
    device = env.get("cuda_device") or {}
    lines = [f"# rerankrt bench: {results['preset']} preset on {settings['device']}"
             + (f" ({device['name']})" if device else ""), "",
             f"{results['measured_at']}; rerankrt {env.get('rerankrt')}, torch {env.get('torch')}, onnxruntime "
             f"{env.get('onnxruntime')}, tensorrt {env.get('tensorrt')}. Medians over {settings['repeat']} repeats, "
             f"the cases of each size timed interleaved (A, B, A, B …) in one process; min–max is the spread."
             + _sizing(settings.get("sizing")), ""]
    for size, group in rerankers(results).items():
        lines += [f"## Re-ranking a shortlist of {size}", "",
                  "| model | backend | precision | median ms/query | p90 ms | min–max ms | vs fastest baseline "
                  "| vs published code | MB fed/query | bytes/image |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['label']}{' (baseline)' if r['baseline'] else ''} | {r['backend']} | {r['precision']} | "
                  f"{_ms(r['median'])} | {_ms(r['p90'])} | {_ms(r['min'])}–{_ms(r['max'])} | "
                  f"{_times(r['vs_baseline'])} | {_times(r['vs_published'])} | "
                  f"{r['bytes_fed'] / 1e6:.2f} | {r['storage_bytes_per_image']:,.0f}"
                  f"{'' if r['storage_measured'] else ' (formula)'} |" for r in group]
        lines += ["", "vs fastest baseline: the fastest pair-wise baseline's median at the same backend, precision "
                      "and size over this one (above 1: faster), among the baselines at their published "
                      "operating point (a baseline at a reduced size is named so and compared with nothing). vs "
                      "published code: likewise against the published implementation of the same model and "
                      "weights.", ""]
    lines += deployed(results) + operators(results)
    encoders = [r for r in results["results"] if r["batch"] is not None]
    if encoders:
        lines += ["## Encoders", "", "| model | backend | precision | batch | ms per batch | ms per image | images/s "
                  "| min–max ms |", "|---|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['label']} | {r['backend']} | {r['precision']} | {r['batch']} | {_ms(r['median'])} | "
                  f"{_ms(r['median'] / r['batch'])} | {1e3 * r['batch'] / r['median']:.1f} | "
                  f"{_ms(r['min'])}–{_ms(r['max'])} |" for r in encoders]
        lines.append("")
    lines += ["## Roofline", "", "| backend precision | compute roof GFLOP/s (best kernel) | memory roof GB/s |",
              "|---|---:|---:|"]
    for key, roof in results["roofs"].items():
        best = max(roof["compute"]["kernels"], key=roof["compute"]["kernels"].get)
        lines.append(f"| {key} | {roof['compute']['gflops']:.1f} ({best}) | {roof['memory']['gb_per_s']:.1f} "
                     f"({roof['memory']['where']}) |")
    lines += ["", "| model | backend | precision | S or batch | GFLOP | MB moved | FLOP/byte | GFLOP/s | bound GFLOP/s "
                  "| of the bound |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['backend']} | {r['precision']} | {r['shortlist'] or r['batch']} | "
              f"{r['flops'] / 1e9:.2f} | {r['bytes_moved'] / 1e6:.1f} | {r['intensity']:.1f} | "
              f"{r['gflops_per_s']:.1f} | {r['bound_gflops']:.1f} | {100 * r['roofline_fraction']:.0f} %"
              f"{' (above the roof)' if r.get('above_roof') else ''} |" for r in results["results"]]
    lines += ["", "MB moved: the inputs, outputs and weights of every call of one query; the bound is "
                  "min(compute roof, FLOP/byte × memory roof); the roofs are the best of a probe before the cases "
                  "and one after them."]
    above = [r for r in results["results"] if r.get("above_roof")]
    if above:
        cases = ", ".join(f"{r['label']} {r['backend']}" for r in above)
        lines += ["", f"Above the roof: {cases}. A case faster "
                      "than the best probed kernel means the probe missed the machine's peak (its kernels, or "
                      "the load while it ran) or the FLOP model counts work the backend skips: read those "
                      "fractions as unknown, not as efficiency."]
    lines += [f"\nskipped: {s['case']}: {s['reason']}" for s in results["skipped"]]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = rerankers(results)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    if len(groups) >= 2:
        series: dict[str, list] = {}
        for size, group in groups.items():
            for r in group:
                series.setdefault(f"{r['label']} {r['backend']} {r['precision']}", []).append((size, r["median"]))
        for label, points in sorted(series.items()):
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="shortlist size S", ylabel="latency per query (ms)",
               title="Re-ranking latency per query")
    elif groups:
        (size, group), = groups.items()
        models = list(dict.fromkeys(r["label"] for r in group))
        kinds = list(dict.fromkeys(f"{r['backend']} {r['precision']}" for r in group))
        width = 0.8 / len(kinds)
        for i, kind in enumerate(kinds):
            medians = {r["label"]: r["median"] for r in group if f"{r['backend']} {r['precision']}" == kind}
            ax.bar(np.arange(len(models)) + i * width, [medians.get(m, 0.0) for m in models], width, label=kind)
        ax.set_xticks(np.arange(len(models)) + width * (len(kinds) - 1) / 2, models, rotation=30, ha="right",
                      fontsize=7)
        ax.set(yscale="log", ylabel="latency per query (ms)", title=f"Re-ranking a shortlist of {size}")
    else:  # encoders only: their latencies are in the encoders table
        ax.text(0.5, 0.5, "no re-ranking cases in this run", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, which="both", alpha=0.3)
    if groups:
        ax.legend(fontsize=7)
    _save(fig, out / "latency.png")

    fig, ax = plt.subplots(figsize=(8, 4.8))
    rows = results["results"]
    if rows:
        low, high = min(r["intensity"] for r in rows), max(r["intensity"] for r in rows)
        x = np.logspace(np.log10(low / 4), np.log10(high * 4))
        for key, roof in results["roofs"].items():
            ax.plot(x, np.minimum(roof["compute"]["gflops"], x * roof["memory"]["gb_per_s"]), linestyle="--",
                    label=f"roof {key}")
        for r in rows:
            at = f"S={r['shortlist']}" if r["shortlist"] is not None else f"batch={r['batch']}"
            ax.scatter(r["intensity"], r["gflops_per_s"], label=f"{r['label']} {r['backend']} {r['precision']} {at}")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per byte moved)",
           ylabel="achieved GFLOP/s", title="Roofline (probed compute and memory roofs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    _save(fig, out / "roofline.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def load_results(path: str | os.PathLike) -> dict:
    return read_tagged_json(Path(path), (SCHEMA,), missing="no such file (a results.json of `rerankrt bench`)",
                            key="schema", missing_error=FileNotFoundError)


def compare_runs(a: dict, b: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """A table of the cases both runs measured: each median and B's over A's (below 1: B is faster)."""
    def key(r: dict) -> tuple:
        return r["label"], r["backend"], r["precision"], r["shortlist"], r["batch"]

    first = {key(r): r for r in a["results"]}
    both = [(first[key(r)], r) for r in b["results"] if key(r) in first]
    lines = [f"| model | backend | precision | S or batch | {names[0]} median ms | {names[1]} median ms | "
             f"{names[1]} / {names[0]} |", "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {ra['label']} | {ra['backend']} | {ra['precision']} | {ra['shortlist'] or ra['batch']} | "
              f"{_ms(ra['median'])} | {_ms(rb['median'])} | {rb['median'] / ra['median']:.2f} |" for ra, rb in both]
    only = len(a["results"]) + len(b["results"]) - 2 * len(both)
    if only:
        lines.append(f"\n{only} case(s) measured by one run only are left out.")
    return "\n".join(lines) + "\n"
