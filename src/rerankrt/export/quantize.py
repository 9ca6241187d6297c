"""`rerankrt export NAME --precision int8 --calibration DATA`: an explicitly quantized graph `NAME.int8.onnx`,
kept only where it keeps the FP32 graph's ranking.

What is quantized: the matrix products by a weight (MatMul and Gemm whose second operand is a constant),
symmetric INT8 with zero points 0 as TensorRT takes them: the weights per output channel (axis 1), the
activation entering each product per tensor, its scale from the calibration data (method "minmax": the
largest |x| seen; "percentile": the 99.99th percentile of |x|, which clips rare outliers). Attention's
products of two activations, softmax, normalisations and every addition stay in float. The graph holds
standard operators only (QuantizeLinear / DequantizeLinear pairs around float products), so ONNX Runtime
runs it (fusing each pair into an integer product) and TensorRT builds it as a strongly typed INT8 engine.

Calibration is the user's own data: a dataset folder in the official layout, re-ranked through the
model's own loop (`runtime.loops`), whose graph calls are recorded. Its queries are split: every other
query calibrates, the others are held out. Which products stay in float is measured, not assumed: each
product is quantized alone and its effect on the held-out shortlists' ranking measured; products are then
taken from the least to the most harmful, as many as keep the agreement (bisection on that order).

Agreement is not an atol: per held-out query, Spearman's rho of the INT8 scores against the FP32 scores
of the same shortlist and the overlap of their top 10, and, where the dataset has ground truth
(`gnd_*.pkl`), the mAP of the re-ranked shortlists. Below Spearman `SPEARMAN` or top-10 `TOP10` (or with a
figure undefined: shortlists of one image, scores that never differ) the export is refused with the
figures and writes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt.core.errors import InputError, QuantizationError
from rerankrt.runtime.agreement import average_precision, spearman, top_overlap

#: the agreement an INT8 graph must keep with the FP32 graph (mean over the held-out queries)
SPEARMAN, TOP10 = 0.98, 0.9
METHODS = ("minmax", "percentile")
DEFAULT_METHOD = "minmax"
PERCENTILE = 99.99
#: queries used at most on each side of the split (calibration, held out): a bounded export time
QUERIES = 8
#: the operators quantized when their second operand is a weight
OPS = ("MatMul", "Gemm")


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How an INT8 graph ranks the held-out shortlists against the FP32 graph."""

    spearman: float  #: mean over queries of Spearman's rho (NaN when any query's is undefined)
    spearman_min: float
    top10: float  #: mean top-10 overlap
    queries: int
    map_fp32: float | None = None  #: mAP of the re-ranked shortlists (None without ground truth)
    map_int8: float | None = None

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.spearman) and self.spearman >= SPEARMAN and self.top10 >= TOP10)

    def text(self) -> str:
        mean = "n/a" if not np.isfinite(self.spearman) else f"{self.spearman:.3f} (min {self.spearman_min:.3f})"
        out = f"Spearman {mean}, top-10 overlap {self.top10:.2f} over {self.queries} held-out queries"
        if self.map_fp32 is not None and self.map_int8 is not None:
            out += (f", mAP {100 * self.map_fp32:.1f} → {100 * self.map_int8:.1f} "
                    f"({100 * (self.map_int8 - self.map_fp32):+.1f})")
        return out

    def as_dict(self) -> dict:
        """As JSON holds it: an undefined figure is null."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, record: dict) -> Agreement:
        nan = float("nan")
        return cls(record["spearman"] if record["spearman"] is not None else nan,
                   record["spearman_min"] if record["spearman_min"] is not None else nan,
                   record["top10"], record["queries"], record.get("map_fp32"), record.get("map_int8"))


def agreement(reference: list[np.ndarray], candidate: list[np.ndarray], k: int = 10,
              maps: tuple[float | None, float | None] = (None, None)) -> Agreement:
    """Per query: the FP32 scores `reference` and the INT8 scores `candidate` of one shortlist."""
    rhos = [spearman(a, b) for a, b in zip(reference, candidate, strict=True)]
    tops = [top_overlap(a, b, k) for a, b in zip(reference, candidate, strict=True)]
    defined = bool(rhos) and all(np.isfinite(rhos))
    return Agreement(float(np.mean(rhos)) if defined else float("nan"),
                     float(np.min(rhos)) if defined else float("nan"),
                     float(np.mean(tops)) if tops else 0.0, len(rhos), *maps)


# --- the graph: what can be quantized, and the quantized graph ------------------------------------

def fold_constants(src: Path, dst: Path) -> None:
    """`src` with its weight arithmetic folded (ONNX Runtime's basic level: constant folding and redundant
    node removal, standard operators only), so that every product by a weight reads an initializer."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


@dataclasses.dataclass(frozen=True)
class Product:
    """A product by a weight: the node, its activation input, its weight initializer and where it sits in
    the network (the torch module path the exporter recorded, e.g. `decoder.layers.0.linear1`)."""

    node: str
    activation: str
    weight: str
    scope: str
    flops_per_row: int  #: 2·K·N: its share of the graph's work


def products(model, scopes: dict[str, str]) -> list[Product]:
    """The quantizable products of `model`, in graph order."""
    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if len(w.dims) != 2 or node.input[0] in inits:
            continue
        if node.op_type == "Gemm" and any(a.name in ("transA", "transB") and a.i for a in node.attribute):
            continue
        found.append(Product(node.name, node.input[0], node.input[1], scopes.get(node.name, node.name),
                             2 * int(w.dims[0]) * int(w.dims[1])))
    return found


def module_scopes(model) -> dict[str, str]:
    """{node name: the module path the dynamo exporter recorded} (empty where it recorded none)."""
    import ast

    scopes = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                with contextlib.suppress(ValueError, SyntaxError):
                    names = [n for n in ast.literal_eval(prop.value) if n]
                    scopes[node.name] = names[-2] if len(names) > 1 else (names[0] if names else node.name)
    return scopes


def activation_ranges(model, tensors: list[str], feeds: list[dict], method: str) -> dict[str, float]:
    """{tensor: the |x| its INT8 scale maps to 127} over the calibration `feeds`, from the graph itself (each
    tensor made an output of a copy of the graph; "minmax" reduced inside it, "percentile" of a sample)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = []
    for i, name in enumerate(tensors):
        if method == "minmax":
            probe.graph.node.extend([helper.make_node("Abs", [name], [f"rrt_abs_{i}"]),
                                     helper.make_node("ReduceMax", [f"rrt_abs_{i}"], [f"rrt_max_{i}"], keepdims=0)])
            outputs.append(f"rrt_max_{i}")
        else:
            outputs.append(name)
    probe.graph.output.extend([helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs])
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    seen: dict[str, list] = {t: [] for t in tensors}
    rng = np.random.default_rng(0)
    for feed in feeds:
        values = session.run(outputs, feed)
        for name, value in zip(tensors, values, strict=True):
            flat = np.abs(np.asarray(value, dtype=np.float32)).ravel()
            seen[name].append(flat if method == "minmax" else rng.choice(flat, min(flat.size, 1 << 16), replace=False))
    if method == "minmax":
        return {t: float(max(float(v.max()) for v in values)) for t, values in seen.items()}
    return {t: float(np.percentile(np.concatenate(values), PERCENTILE)) for t, values in seen.items()}


def quantized(model, chosen: list[Product], ranges: dict[str, float]):
    """A copy of `model` with Q/DQ around each chosen product: its activation per tensor, its weight per
    output channel, symmetric INT8 (zero points 0). An activation that is all zeros gets the smallest
    scale (it stays zero)."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    by_node = {p.node: p for p in chosen}
    nodes, done = [], {}
    tiny = float(np.finfo(np.float32).tiny)
    for node in out.graph.node:
        p = by_node.get(node.name)
        if p is None:
            nodes.append(node)
            continue
        # a Q/DQ pair of its own per product (the same scale where products share an activation): ONNX
        # Runtime fuses DQ → MatMul into an integer product only where the pair feeds that one product
        key = f"{p.node}_rrt_x"
        if p.activation not in done:
            done[p.activation] = f"{p.activation}_rrt"
            out.graph.initializer.extend([
                numpy_helper.from_array(np.array(max(ranges[p.activation] / 127.0, tiny), np.float32),
                                        done[p.activation] + "_scale"),
                numpy_helper.from_array(np.array(0, np.int8), done[p.activation] + "_zero")])
        scale, zero = done[p.activation] + "_scale", done[p.activation] + "_zero"
        nodes += [helper.make_node("QuantizeLinear", [p.activation, scale, zero], [key + "_q"], name=key + "_q"),
                  helper.make_node("DequantizeLinear", [key + "_q", scale, zero], [key], name=key)]
        w = numpy_helper.to_array(inits[p.weight]).astype(np.float32)
        w_scale = np.maximum(np.abs(w).max(axis=0) / 127.0, tiny).astype(np.float32)
        w_key = f"{p.node}_rrt_w"
        out.graph.initializer.extend([
            numpy_helper.from_array(np.clip(np.round(w / w_scale), -127, 127).astype(np.int8), w_key),
            numpy_helper.from_array(w_scale, w_key + "_scale"),
            numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), w_key + "_zero")])
        nodes.append(helper.make_node("DequantizeLinear", [w_key, w_key + "_scale", w_key + "_zero"],
                                      [w_key + "_dq"], name=w_key + "_dq", axis=1))
        node.input[0], node.input[1] = f"{p.node}_rrt_x", w_key + "_dq"
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {i for n in out.graph.node for i in n.input}
    kept = [i for i in out.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out


# --- calibration data: the model's own loop over a dataset -----------------------------------------

class _Recorder:
    """A backend that records every call's feeds under the query being re-ranked."""

    def __init__(self, inner) -> None:
        self.inner, self.query = inner, -1
        self.calls: list[tuple[int, dict]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def infer(self, feeds: dict) -> dict:
        self.calls.append((self.query, {k: np.array(v) for k, v in feeds.items()}))
        return self.inner.infer(feeds)


class _EncodedGallery:
    """A store's view of a gallery file for a scorer: each image's entries encoded on demand (the query
    encoder's weights are the scorer's: both come from one checkpoint)."""

    def __init__(self, gallery, encoder, scorer, descriptors: int) -> None:
        self.gallery, self.encoder, self.descriptors = gallery, encoder, descriptors
        self.path, self.model = Path(gallery.path), scorer.meta["model"]
        self.manifest: dict = {}
        self.images = gallery.num_images
        self.dtype = scorer.input_specs()[2].dtype  # the stored entries: fp16 tokens or bool codes
        self.out = next(s.name for s in encoder.output_specs())

    def check_scorer(self, meta: dict) -> None:
        pass

    def check_encoder(self, meta: dict) -> None:
        pass

    def check_reranker(self, meta: dict) -> None:
        raise ValueError(f"{meta['model']}: a scorer's gallery, not a list-wise re-ranker's")

    def entries(self, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        local = self.gallery.read(top, n=min(self.descriptors, self.gallery.topk))
        stored = self.encoder.infer({"desc": local.desc.astype(self.encoder.float_dtype()), "mask": local.mask})
        return stored[self.out].astype(self.dtype), local.mask


@dataclasses.dataclass
class _Run:
    """What one backend did over the chosen queries: per query, its calls' feeds and the final ranking."""

    feeds: dict[int, list[dict]]
    ranked: dict[int, np.ndarray]


def _queries(n: int) -> tuple[list[int], list[int]]:
    """(calibration, held-out) query indices: alternate queries, at most `QUERIES` on each side."""
    if n < 2:
        raise QuantizationError(f"calibration: {n} quer{'y' if n == 1 else 'ies'} in the dataset; INT8 needs at "
                                f"least 2 (every other query calibrates, the others check the ranking)")
    return list(range(0, n, 2))[:QUERIES], list(range(1, n, 2))[:QUERIES]


class Calibration:
    """A dataset folder read through the loop of an FP32 graph (`meta` its sidecar, `graph` its path)."""

    def __init__(self, data: str | os.PathLike, graph: Path, meta: dict, desc: str = "dinov2") -> None:
        from rerankrt.data.dataset_layout import DatasetLayout
        from rerankrt.runtime.loops import loop_of

        self.layout = DatasetLayout(Path(data), desc)
        self.graph, self.meta = graph, meta
        try:
            self.loop = loop_of(meta)
        except ValueError:
            raise InputError(f"int8: {meta['model']} is calibrated through a re-ranking loop over a "
                             f"dataset's descriptors, and it has none (INT8 takes ames, ames-dist, their scorers, "
                             f"locore and locore-small)", param="precision") from None
        for path in (self.layout.local("query"), self.layout.root / self.layout.nn):
            if not path.is_file():
                raise InputError(f"{data}: no {path.name} (a dataset folder in the official layout)",
                                 param="calibration")

    def run(self, backend, queries: list[int], record: bool) -> _Run:
        """Re-rank `queries` with an entered `backend` (this graph or its INT8 form) through the loop."""
        from rerankrt.data.descriptors import LocalDescriptorFile, read_nn
        from rerankrt.runtime.loops import reranker_for
        from rerankrt.search.rerank_dataset import DatasetFiles

        recorder = _Recorder(backend)
        with contextlib.ExitStack() as stack:
            store = encoder = None
            if self.loop.stored:
                encoder = stack.enter_context(self._encoder())
                gallery = stack.enter_context(LocalDescriptorFile(self.layout.local("gallery"),
                                                                  dim=encoder.config["local_dim"]))
                store = _EncodedGallery(gallery, encoder, backend, self.meta["config"]["db_descriptors"])
            files = stack.enter_context(DatasetFiles(self.layout, recorder, store, encoder))
            sims, idx = read_nn(self.layout.root / self.layout.nn, num_db=files.num_images)
            reranker, s = reranker_for(recorder, encoder=encoder)
            s = min(s, idx.shape[1])
            resolved = self.loop.settings(self.meta, None)
            ranked = {}
            for q in queries:
                recorder.query = q
                order, _ = self.loop.rerank_query(files, reranker, q, idx[q, :s], sims[q, :s], resolved)
                ranked[q] = idx[q, :s][order]
        feeds: dict[int, list[dict]] = {q: [] for q in queries}
        if record:
            for q, feed in recorder.calls:
                feeds[q].append(feed)
        return _Run(feeds, ranked)

    def _encoder(self):
        """The store encoder of this scorer on torch, with the scorer's weights and configuration."""
        from rerankrt.models import TorchBackend, encoder_of

        recorded = self.meta["checkpoint"] or {}
        return TorchBackend(encoder_of(self.meta["model"]), checkpoint=recorded.get("path"), **self.meta["config"])

    def mean_ap(self, ranked: dict[int, np.ndarray]) -> float | None:
        """The mAP of the re-ranked shortlists by the dataset's ground truth (its easy and hard positives,
        junk left out), or None without one."""
        from rerankrt.data.descriptors import read_gnd

        found = sorted(self.layout.root.glob("gnd_*.pkl"))
        if not found:
            return None
        gnd = read_gnd(found[0])["gnd"]
        aps = [average_precision(r, np.concatenate([gnd[q].get("easy", []), gnd[q].get("hard", [])]),
                                 gnd[q].get("junk", [])) for q, r in ranked.items()]
        aps = [a for a in aps if np.isfinite(a)]
        return float(np.mean(aps)) if aps else None


# --- the search for what stays in float ---------------------------------------------------------------

class _Scorer:
    """The outputs of graphs (bytes) on the held-out feeds, per query: the scores of its shortlist."""

    def __init__(self, feeds: dict[int, list[dict]], output: str) -> None:
        self.feeds, self.output = feeds, output
        self._fp32: list[np.ndarray] | None = None

    def fp32(self, model) -> list[np.ndarray]:
        """The FP32 graph's scores, the reference every candidate is measured against (computed once)."""
        if self._fp32 is None:
            self._fp32 = self.scores(model.SerializeToString())
        return self._fp32

    def scores(self, model_bytes: bytes, queries: list[int] | None = None) -> list[np.ndarray]:
        import onnxruntime as ort

        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        return [np.concatenate([session.run([self.output], f)[0].astype(np.float64).ravel() for f in self.feeds[q]])
                for q in (queries or list(self.feeds))]


def choose(model, candidates: list[Product], ranges: dict[str, float], scorer: _Scorer,
           log: Callable[[str], None]) -> tuple[list[Product], Agreement, list[dict] | None]:
    """The products to quantize: all of them where that keeps the agreement; else each one's harm measured
    alone (Spearman on the held-out shortlists with that product alone quantized), and the longest prefix
    of them by increasing harm that keeps the agreement (bisection). Returns (chosen, its agreement, the
    harm of each product, None where all were kept)."""
    reference = scorer.fp32(model)

    def measure(chosen: list[Product]) -> Agreement:
        result = agreement(reference, scorer.scores(quantized(model, chosen, ranges).SerializeToString()))
        log(f"int8: {len(chosen)}/{len(candidates)} products quantized: {result.text()}")
        return result

    every = measure(candidates)
    if every.ok:
        return candidates, every, None
    harms = []
    for i, p in enumerate(candidates):
        alone = agreement(reference, scorer.scores(quantized(model, [p], ranges).SerializeToString()))
        harms.append({"node": p.node, "scope": p.scope, "spearman": alone.as_dict()["spearman"],
                      "top10": alone.top10})
        if (i + 1) % 10 == 0 or i + 1 == len(candidates):
            log(f"int8: measured {i + 1}/{len(candidates)} products alone")
    order = sorted(range(len(candidates)), key=lambda i: -(harms[i]["spearman"] if harms[i]["spearman"] is not None
                                                             else -2.0))  # undefined: the most harmful
    ranked = [candidates[i] for i in order]
    results = {len(ranked): every}
    lo, hi = 0, len(ranked)  # quantizing ranked[:lo] keeps the agreement (or lo == 0), ranked[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        results[mid] = measure(ranked[:mid])
        lo, hi = (mid, hi) if results[mid].ok else (lo, mid)
    if lo == 0:
        return [], results.get(1) or measure(ranked[:1]), harms
    return ranked[:lo], results[lo], harms


def quantize(fp32_graph: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
             method: str = DEFAULT_METHOD, desc: str = "dinov2",
             log: Callable[[str], None] = lambda message: None, fused_out: str | os.PathLike | None = None) -> dict:
    """Write the INT8 graph of `fp32_graph` (beside its sidecar) to `out`, calibrated on dataset `data`;
    returns the sidecar's `quantization` record. Refuses (QuantizationError, nothing written) when no
    quantization keeps the agreement.

    `fused_out`: where its form fused for ONNX Runtime goes (`export.ort_fusion`; what `--backend ort` runs),
    held to the same agreement on the same held-out queries, since ONNX Runtime computes its integer
    products otherwise than the standard graph's (record `fused`: the fusions and that agreement; absent
    where nothing fuses)."""
    import onnx

    from rerankrt.runtime.ort_backend import OrtBackend
    from rerankrt.runtime.sidecar import read_sidecar

    if method not in METHODS:
        raise ValueError(f"calibration method: expected {' or '.join(METHODS)}, got {method!r}")
    graph = Path(fp32_graph)
    meta = read_sidecar(graph)
    calibration = Calibration(data, graph, meta, desc)
    from rerankrt.data.descriptors import LocalDescriptorFile

    with LocalDescriptorFile(calibration.layout.local("query")) as f:
        calibrate, held_out = _queries(f.num_images)
    with OrtBackend(graph) as backend:
        calibrated = calibration.run(backend, calibrate, record=True)
        reference = calibration.run(backend, held_out, record=True)
    output = meta["outputs"][0]["name"]
    if not any(len(v) for v in calibrated.feeds.values()):
        raise QuantizationError(f"{data}: the loop made no graph call (empty shortlists?)", param="calibration")
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        fold_constants(graph, folded)
        model = onnx.load(str(folded))
        candidates = products(model, module_scopes(onnx.load(str(graph))))
        ranges = activation_ranges(model, sorted({p.activation for p in candidates}),
                                   [f for fs in calibrated.feeds.values() for f in fs], method)
        log(f"int8: {len(candidates)} products by a weight, calibrated ({method}) on {len(calibrate)} queries, "
            f"checked on {len(held_out)}")
        scorer = _Scorer(reference.feeds, output)
        chosen, agreed, harms = choose(model, candidates, ranges, scorer, log)
        if not chosen or not agreed.ok:
            raise QuantizationError(
                f"int8: no quantization of {meta['model']} keeps the FP32 ranking on {data} "
                f"({agreed.text()} with the least harmful product alone; needed Spearman ≥ {SPEARMAN} and top-10 "
                f"≥ {TOP10}); nothing written", param="precision")
        final = quantized(model, chosen, ranges)
        onnx.save(final, str(out))
        fused = _fused(model, Path(out), Path(fused_out), scorer, meta, log) if fused_out is not None else None
        maps = _maps(calibration, Path(out), held_out, meta, reference)
        if fused is not None and fused_out is not None:
            fused_maps = _maps(calibration, Path(fused_out), held_out, meta, reference)
            fused["agreement"] = {**fused["agreement"], "map_fp32": fused_maps[0], "map_int8": fused_maps[1]}
    work = sum(p.flops_per_row for p in candidates)
    agreed = dataclasses.replace(agreed, map_fp32=maps[0], map_int8=maps[1])
    record = {
        "method": method, "calibration": {"data": str(Path(data).resolve()), "queries": calibrate},
        "held_out": held_out, "scheme": "symmetric INT8: weights per output channel, activations per tensor",
        "thresholds": {"spearman": SPEARMAN, "top10": TOP10},
        "agreement": agreed.as_dict(),
        "quantized": [p.scope for p in chosen],
        "float": sorted({p.scope for p in candidates} - {p.scope for p in chosen}),
        "share_quantized": round(sum(p.flops_per_row for p in chosen) / max(work, 1), 3),
        "harm": harms,
    }
    if fused is not None:
        record["fused"] = fused
    log(f"int8: {len(chosen)}/{len(candidates)} products quantized "
        f"({100 * sum(p.flops_per_row for p in chosen) / max(work, 1):.0f} % of their work): {agreed.text()}")
    return record


def _fused(model, int8: Path, out: Path, scorer: _Scorer, meta: dict, log: Callable[[str], None]) -> dict | None:
    """The INT8 graph fused for ONNX Runtime at `out` and its agreement with the FP32 graph `model`; None
    (nothing written) where nothing fuses. Refuses, as the INT8 graph's own agreement does, below it."""
    from rerankrt.export import ort_fusion

    counts = ort_fusion.fuse(int8, out)
    if not counts:
        return None
    agreed = agreement(scorer.fp32(model), scorer.scores(out.read_bytes()))
    log(f"int8: fused for ONNX Runtime ({', '.join(f'{k} {v}' for k, v in counts.items())}): {agreed.text()}")
    if not agreed.ok:
        raise QuantizationError(
            f"int8: {meta['model']}'s INT8 graph fused for ONNX Runtime does not keep the FP32 ranking "
            f"({agreed.text()}; needed Spearman ≥ {SPEARMAN} and top-10 ≥ {TOP10}); nothing written",
            param="precision")
    return {"fusions": counts, "agreement": agreed.as_dict()}


def with_int8(meta: dict, file: str) -> dict:
    """The sidecar `meta` listing the INT8 graph `file` too (its I/O dtypes are the FP32 graph's)."""
    def io(tensors: list[dict]) -> list[dict]:
        return [{**t, "dtype": {**t["dtype"], "int8": t["dtype"]["fp32"]}} for t in tensors]

    return {**meta, "inputs": io(meta["inputs"]), "outputs": io(meta["outputs"]),
            "files": {**meta["files"], "int8": file}}


def _maps(calibration: Calibration, int8: Path, held_out: list[int], meta: dict,
          reference: _Run) -> tuple[float | None, float | None]:
    """The held-out queries' mAP re-ranked by the FP32 graph and by the INT8 graph `int8` (or its fused form;
    None without ground truth). It runs beside a copy of the sidecar that lists it."""
    import json
    import shutil

    fp32_map = calibration.mean_ap(reference.ranked)
    if fp32_map is None:
        return None, None
    from rerankrt.runtime.naming import onnx_name
    from rerankrt.runtime.ort_backend import OrtBackend

    with tempfile.TemporaryDirectory() as tmp:
        name = meta["model"]
        shutil.copy(int8, Path(tmp) / onnx_name(name, "int8"))
        (Path(tmp) / f"{name}.json").write_text(json.dumps(with_int8(meta, onnx_name(name, "int8"))))
        with OrtBackend(Path(tmp) / onnx_name(name, "int8")) as backend:
            run = calibration.run(backend, held_out, record=False)
    return fp32_map, calibration.mean_ap(run.ranked)
