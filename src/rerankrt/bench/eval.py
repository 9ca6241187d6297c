"""`rerankrt eval`: retrieval accuracy of a re-ranker from the official files (reference §1.5).

Revisited datasets (roxford5k, rparis6k, and the synthetic `synth`): the shortlist of each query is
junk-reordered per protocol and re-ranked twice, as published: the Medium run (junk to the end) gives
Easy and Medium, the Hard run (junk and easy to the end) gives Hard. GLDv2: one run, mAP@100 public and
private. The first-stage figures of the same shortlists are reported beside the re-ranked ones.
`compare` runs two backends (FP32 and FP16) and reports mAP deltas, Kendall's tau of the re-ranked top-k
and the top-10 overlap, per query averaged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt.bench.metrics import gldv2_map_at_100, protocol_junk, reorder_junk, revisited_evaluate
from rerankrt.core.errors import InputError
from rerankrt.data.dataset_layout import DatasetLayout
from rerankrt.data.descriptors import read_gnd, read_nn
from rerankrt.runtime.agreement import kendall_tau
from rerankrt.runtime.loops import loop_of
from rerankrt.search.rerank_dataset import DatasetFiles

DATASETS = {"roxford5k": "revisited", "rparis6k": "revisited", "synth": "revisited", "gldv2": "gldv2"}


def _runs(dataset: str) -> tuple[str, ...]:
    if dataset not in DATASETS:
        raise InputError(f"expected one of {', '.join(DATASETS)}, got {dataset!r}", param="dataset")
    return ("medium", "hard") if DATASETS[dataset] == "revisited" else ("all",)


def rankings(backend, data: str | os.PathLike, dataset: str, shortlist: int | None = None,
             desc: str = "dinov2", nn_file: str = "nn_superglobal.pkl", lam: float | None = None,
             gamma: float | None = None, plus1m: bool = False, log: Callable[[str], None] = lambda m: None,
             store=None, encoder=None, settings: dict | None = None) -> dict:
    """{run: (first-stage ranks, re-ranked ranks)} with each run's junk-reordered shortlists.

    `plus1m`: the folder holds the +1M files (the gallery HDF5 is the virtual gallery + R1M dataset and
    the shortlist ranks it); LOCORE's fusion then defaults to α = t = 0.5 as in its +1M evaluation.
    `store`, `encoder`: an AMES scorer's database store and query encoder (`rerankrt.search.store`);
    `settings`: any other run settings of the loop, by name (`runtime.loops`)."""
    runs = _runs(dataset)
    layout = DatasetLayout(Path(data), desc, nn_file)
    ground_truth = read_gnd(layout.root / f"gnd_{dataset}.pkl")
    gnd = ground_truth["gnd"]
    out = {}
    with DatasetFiles(layout, backend, store, encoder) as files:
        if plus1m:
            if files.num_images <= len(ground_truth["imlist"]):
                raise InputError(f"{layout.local('gallery')} holds {files.num_images} images, no "
                                 f"more than the {len(ground_truth['imlist'])} of the ground truth: not a +1M folder",
                                 param="plus1m")
            fusion = loop_of(backend.meta).plus1m_fusion  # LOCORE's +1M evaluation fuses otherwise
            if fusion is not None:
                lam = fusion[0] if lam is None else lam
                gamma = fusion[1] if gamma is None else gamma
        sims, idx = read_nn(layout.root / nn_file, num_db=files.num_images)
        if len(gnd) != len(idx):
            raise InputError(f"gnd_{dataset}.pkl has {len(gnd)} queries, {nn_file} has {len(idx)}")
        for run in runs:
            if run == "all":
                run_sims, run_idx = sims, idx
            else:
                orders = np.stack([reorder_junk(idx[q], protocol_junk(gnd[q], run)) for q in range(len(idx))])
                run_sims, run_idx = np.take_along_axis(sims, orders, 1), np.take_along_axis(idx, orders, 1)
            log(f"{dataset} {run} run")
            _, reranked = files.rerank(run_sims, run_idx, shortlist, lam, gamma, log, settings)
            out[run] = (run_idx, reranked)
    return {"gnd": gnd, "runs": out}


def score(dataset: str, result: dict) -> dict:
    """{"first_stage": …, "reranked": …} metrics from `rankings`' output."""
    gnd, runs = result["gnd"], result["runs"]
    table: dict[str, dict] = {"first_stage": {}, "reranked": {}}
    for column, which in (("first_stage", 0), ("reranked", 1)):
        if DATASETS[dataset] == "gldv2":
            table[column] = gldv2_map_at_100(runs["all"][which], gnd)
            continue
        medium = revisited_evaluate(runs["medium"][which], gnd)
        hard = revisited_evaluate(runs["hard"][which], gnd)
        table[column] = {"easy": medium["easy"], "medium": medium["medium"], "hard": hard["hard"]}
    return table


def agreement(a: dict, b: dict, shortlist: int) -> dict[str, float]:
    """Kendall's tau of the re-ranked top-`shortlist` and top-10 overlap between two runs, averaged."""
    taus, overlaps = [], []
    for run in a["runs"]:
        for row_a, row_b in zip(a["runs"][run][1], b["runs"][run][1], strict=True):
            top_a, top_b = row_a[:shortlist], row_b[:shortlist]
            position_b = {image: i for i, image in enumerate(top_b)}
            taus.append(kendall_tau(-np.arange(len(top_a), dtype=float),
                                    -np.array([position_b[i] for i in top_a], dtype=float)))
            overlaps.append(len(set(row_a[:10]) & set(row_b[:10])) / min(10, len(row_a)))
    return {"kendall_tau": float(np.mean(taus)), "top10_overlap": float(np.mean(overlaps))}


def comparison(a: dict, b: dict, table_a: dict, table_b: dict, shortlist: int) -> dict:
    """Run `b` against run `a` (`rankings`' outputs, `score`'s tables): their `agreement` and each
    protocol's re-ranked mAP of `b` less `a`'s."""
    first, second = table_a["reranked"], table_b["reranked"]
    return {"agreement": agreement(a, b, shortlist),
            "map_delta": {k: second[k]["map"] - first[k]["map"] for k in first if isinstance(first[k], dict)}}


def format_comparison(names: tuple[str, str], compared: dict) -> str:
    """`comparison`'s figures in one line: "fp16 vs fp32: Kendall tau …, top-10 overlap … %, mAP delta …"."""
    agreed = compared["agreement"]
    return (f"{names[1]} vs {names[0]}: Kendall tau {agreed['kendall_tau']:.3f}, top-10 overlap "
            f"{100 * agreed['top10_overlap']:.1f} %, mAP delta "
            + "  ".join(f"{k} {100 * v:+.2f}" for k, v in compared["map_delta"].items()))


def format_table(dataset: str, tables: dict[str, dict]) -> str:
    """One line per setting: mAP (and mP@10) per protocol, in percent as papers print them."""
    lines = []
    for name, table in tables.items():
        for column in ("first_stage", "reranked"):
            t = table[column]
            if DATASETS[dataset] == "gldv2":
                cells = f"public {100 * t['public']:.2f}  private {100 * t['private']:.2f}"
            else:
                cells = "  ".join(f"{p[0].upper()} {100 * t[p]['map']:.2f}" for p in ("easy", "medium", "hard"))
            lines.append(f"{dataset:<10} {name:<14} {column:<12} mAP  {cells}")
    return "\n".join(lines)


def evaluate(model: str, request, data: str | os.PathLike, dataset: str, precisions: list[str],
             shortlist: int | None = None, desc: str = "dinov2", nn_file: str = "nn_superglobal.pkl",
             lam: float | None = None, gamma: float | None = None, plus1m: bool = False, index=None,
             settings: dict | None = None, log: Callable[[str], None] = lambda m: None) -> dict:
    """`rerankrt eval`: `model` at each of `precisions` (one, or two compared) from `request` (a
    `BackendRequest`; its precision is each one in turn), from `index`'s store where given: {"tables":
    {"MODEL PRECISION": `score`'s table}, and with two precisions their `comparison` ("agreement",
    "map_delta")}."""
    import contextlib

    from rerankrt.runtime.loops import released_settings
    from rerankrt.search.backends import open_reranking

    results, tables, s = {}, {}, shortlist or 0
    for precision in precisions:
        with contextlib.ExitStack() as stack:
            loop = open_reranking(stack, model, request.replace(precision=precision), index, log=log)
            backend = loop.pop("backend")
            results[precision] = rankings(backend, data, dataset, shortlist, desc, nn_file, lam, gamma, plus1m,
                                          log=log, settings=settings, **loop)
            tables[f"{model} {precision}"] = score(dataset, results[precision])
            s = shortlist or released_settings(backend.meta)["shortlist"]
    report: dict = {"tables": tables}
    if len(precisions) == 2:
        a, b = precisions
        report |= comparison(results[a], results[b], tables[f"{model} {a}"], tables[f"{model} {b}"], s)
    return report
