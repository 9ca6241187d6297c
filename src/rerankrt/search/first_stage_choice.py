"""`index build --first-stage auto`: the first stage chosen by measurement, within a byte budget.

A rule (IVF{4√N},PQ64 at nprobe 16) keeps what the gallery lets it keep: 16 % of the exact top 100 at 1M
unclustered images. So `choose` measures instead. The candidates (`candidates`) are faiss codes of several
sizes per byte: IVF with 8-bit PQ and 4-bit fast-scan PQ (`PQmx4fs`), a PCA rotation and reduction before
them, OPQ, an additive quantizer (residual, `RQ`), IVF-PQ refined by a larger code (`Refine(...)`), and
HNSW. Each is first priced by its code bytes (`estimated_bytes`, from the untrained faiss index) and
dropped when over the budget, before any training, and so is one that needs more training vectors than
the gallery gives (`training_rows`: a small gallery, a shard). Those that fit are trained on a sample of the gallery
(`TUNE_SAMPLE`, the plain IVF ones sharing one coarse quantizer), hold the sample, and are searched by
held-out queries, gallery rows outside the sample (or the user's own queries): faiss's `ParameterSpace`
explores their search knobs (nprobe, efSearch, the refine k-factor) and keeps the Pareto front of recall@S
against time (`OperatingPoints`). Bytes per image are measured from the serialized index (its trained parts
spread over the whole gallery's images, its per-image part as measured).

The choice: exact when its 4·D bytes fit (it reaches any target); else, of the candidates that fit and reach
`target` recall, the cheapest per query at its cheapest knobs reaching it. The caller trains the choice on
the whole gallery and confirms its recall there (`confirm`), walking the front until the target holds.
Where no candidate reaches the target, the best recall is taken up to one image of the shortlist (`best_of`):
the fastest within 1/S of the highest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from rerankrt.core.errors import InputError
from rerankrt.search.exact import global_shortlist
from rerankrt.search.first_stage import (
    EXACT,
    faiss_module,
    faiss_search,
    innermost,
    ivf_lists,
    set_params,
    without_polysemous,
)

#: recall@S against the exact scan that `auto` must reach unless told otherwise
TARGET_RECALL = 0.95
#: gallery rows each candidate is trained on and holds while it is tuned
TUNE_SAMPLE = 50_000
#: held-out queries the candidates are tuned by
TUNE_QUERIES = 200
#: the id that an inverted list keeps beside each code (faiss idx_t)
ID_BYTES = 8
#: knobs tuned (faiss ParameterSpace names); the rest (polysemous ht, …) stay at faiss's defaults
KNOBS = ("nprobe", "efSearch", "k_factor_rf")
SEED = 1


def candidates(images: int, dim: int) -> list[str]:
    """faiss factory strings for `images` vectors of `dim` dimensions, from a few bytes to a few thousand
    per image; sub-quantizer counts that do not divide their dimension are left out."""
    ivf = f"IVF{ivf_lists(images)}"
    out = [f"{ivf},PQ{m}" for m in (32, 64, 128) if dim % m == 0]
    out += [f"{ivf},PQ{m}x4fs" for m in (64, 128, 256) if dim % m == 0]
    out += [f"PCAR256,{ivf},PQ{m}x4fs" for m in (64, 128)] if dim > 256 else []
    out += [f"OPQ{m}_{4 * m},{ivf},PQ{m}" for m in (32, 64, 96, 128) if 4 * m <= dim]
    out += [f"{ivf},PQ{m}x4fs,Refine(PQ{m2})" for m, m2 in ((32, 96), (32, 128), (64, 128), (64, 192))
            if dim % m2 == 0]
    out += [f"PCAR256,{ivf},PQ64x4fs,Refine(SQ{bits})" for bits in (4, 8)] if dim > 256 else []
    out += [f"PCAR128,{ivf},RQ16x8"] if dim > 128 else []
    out += ["HNSW32_SQ8", "HNSW32"]
    return out


def estimated_bytes(factory: str, dim: int, images: int) -> float:
    """The bytes per image of `factory`'s codes, ids and links over `images` images, read from the untrained
    faiss index (its trained parts, centroids and rotations, are not counted: they are spread over the
    gallery); a fast-scan list is padded to its block of 32 codes, half a block per list on average."""
    faiss = faiss_module()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    inner = innermost(index)
    if isinstance(inner, faiss.IndexRefine):
        base = faiss.downcast_index(inner.base_index)
        return _code_bytes(faiss, base, images) + faiss.downcast_index(inner.refine_index).sa_code_size()
    return _code_bytes(faiss, inner, images)


def training_rows(factory: str, dim: int) -> int:
    """The fewest training vectors faiss trains `factory` on: a k-means needs a vector per centroid (an
    inverted file's lists, a PQ's or a residual quantizer's 2^bits centroids, the 8-bit PQ that OPQ rotates
    for) and a PCA one per output dimension. Read from the untrained index, as `estimated_bytes` is."""
    faiss = faiss_module()
    root = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    return _training_rows(faiss, root)


def _training_rows(faiss, index) -> int:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        chain = [faiss.downcast_VectorTransform(index.chain.at(i)) for i in range(index.chain.size())]
        transforms = [256 if isinstance(t, faiss.OPQMatrix) else t.d_out if isinstance(t, faiss.PCAMatrix) else 1
                      for t in chain]
        return max(*transforms, _training_rows(faiss, index.index))
    if isinstance(index, faiss.IndexRefine):
        return max(_training_rows(faiss, index.base_index), _training_rows(faiss, index.refine_index))
    need = index.nlist if isinstance(index, faiss.IndexIVF) else 1
    if (pq := getattr(index, "pq", None)) is not None:
        need = max(need, pq.ksub)
    if (rq := getattr(index, "rq", None)) is not None:
        need = max(need, *(2 ** rq.nbits.at(i) for i in range(rq.nbits.size())))
    return need


def _code_bytes(faiss, index, images: int) -> float:
    if isinstance(index, faiss.IndexIVFFastScan):
        return (index.code_size + ID_BYTES) * (1 + index.nlist * index.bbs / 2 / images)
    if isinstance(index, faiss.IndexIVF):
        return index.code_size + ID_BYTES
    if isinstance(index, faiss.IndexHNSW):
        links = index.hnsw.nb_neighbors(0) + index.hnsw.nb_neighbors(1) / index.hnsw.nb_neighbors(0)
        return faiss.downcast_index(index.storage).sa_code_size() + 4 * links + 12  # + level, offset
    return index.sa_code_size()


@dataclass
class Trial:
    """One candidate as measured: bytes per image at the gallery's size, recall@S of held-out queries and
    time per query at its cheapest knobs reaching the target (else at its best recall), training and adding
    time, and why it was not chosen."""

    factory: str
    bytes_per_image: float
    recall: float | None = None
    ms_per_query: float | None = None
    build_s: float | None = None
    params: dict = field(default_factory=dict)
    note: str = ""
    front: list = field(default_factory=list)

    def row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "front"}


def _params(key: str) -> dict:
    """faiss's "nprobe=16,k_factor_rf=4" as a dict of numbers."""
    out: dict = {}
    for part in filter(None, key.split(",")):
        name, value = part.split("=")
        out[name] = int(float(value)) if float(value).is_integer() else float(value)
    return out


def _space(index):
    """A ParameterSpace over `KNOBS` of `index` only, with faiss's own ranges for them."""
    faiss = faiss_module()
    full, space = faiss.ParameterSpace(), faiss.ParameterSpace()
    full.initialize(index)
    for i in range(full.parameter_ranges.size()):
        found = full.parameter_ranges.at(i)
        if found.name in KNOBS:
            target = space.add_range(found.name)
            for v in faiss.vector_float_to_array(found.values) if hasattr(faiss, "vector_float_to_array") \
                    else faiss.vector_to_array(found.values):
                target.values.push_back(float(v))
    return space


def explore(index, queries: np.ndarray, truth: np.ndarray) -> list[tuple[float, float, dict]]:
    """The Pareto front (recall@S, seconds per query, knobs) of `index` for `queries` whose exact top S
    is `truth` [Q, S], best recall last."""
    faiss = faiss_module()
    at = truth.shape[1]
    crit = faiss.IntersectionCriterion(len(queries), at)
    crit.set_groundtruth(None, np.ascontiguousarray(truth, np.int64))
    crit.nnn = at
    space = _space(index)
    if space.parameter_ranges.size() == 0:
        t0 = time.perf_counter()
        found = index.search(np.ascontiguousarray(queries, np.float32), at)[1]
        seconds = (time.perf_counter() - t0) / len(queries)
        recall = float(np.mean([len(np.intersect1d(t, f)) for t, f in zip(truth, found, strict=True)])) / at
        return [(recall, seconds, {})]
    space.verbose = 0
    ops = space.explore(index, np.ascontiguousarray(queries, np.float32), crit)
    front = [ops.optimal_pts.at(i) for i in range(ops.optimal_pts.size())]
    return sorted(((p.perf, p.t / len(queries), _params(p.key)) for p in front), key=lambda p: (p[0], p[1]))


def best_of(points: list, recall: Callable, cost: Callable, at: int):
    """The point of best recall@`at` up to one image of the shortlist: the cheapest whose recall is within 1/`at`
    of the highest. Less than that is less than one image per query for the re-ranker, while a front that
    flattens short of the target doubles its time with each nprobe doubling (at 1M clustered images the best
    recall took nprobe 2048 of 4096 lists: 38 ms per query)."""
    top = max(recall(p) for p in points)
    return min((p for p in points if recall(p) >= top - 1 / at), key=lambda p: (cost(p), -recall(p)))


def pick(front: list, target: float, at: int) -> tuple[float, float, dict, bool]:
    """The cheapest point of `front` reaching `target`, else its best recall (`best_of`); and whether it
    reaches."""
    reaching = [p for p in front if p[0] >= target]
    if reaching:
        return (*min(reaching, key=lambda p: p[1]), True)
    return (*best_of(front, lambda p: p[0], lambda p: p[1], at), False)


@dataclass
class Choice:
    factory: str
    params: dict
    trials: list[Trial]
    reason: str
    reaches: bool

    def table(self) -> list[dict]:
        return [t.row() for t in self.trials]


def choose(vectors: np.ndarray, at: int, budget: float | None, target: float = TARGET_RECALL,
           queries: np.ndarray | None = None, log: Callable[[str], None] = lambda message: None,
           among: tuple[str, ...] | None = None) -> Choice:
    """The first stage of unit gallery `vectors` [N, D] within `budget` bytes per image (None: any), reaching
    `target` recall@`at` on held-out queries (`queries`, the user's; default gallery rows outside the
    tuning sample), cheapest per query, of the factories `among` (default `candidates(N, D)`)."""
    faiss = faiss_module()
    images, dim = vectors.shape
    if budget is not None and 4 * dim <= budget:
        return Choice(EXACT, {}, [Trial(EXACT, 4 * dim, 1.0, note="chosen")],
                      f"exact: its {4 * dim} B per image fit the budget", True)
    budget = math.inf if budget is None else budget
    within = f" within {budget:.0f} B per image" if math.isfinite(budget) else ""
    rows, held = _tuning_rows(images, queries is None)
    trials, fitting = [], []
    for factory in among or candidates(images, dim):
        estimate = estimated_bytes(factory, dim, images)
        if estimate > budget:
            trials.append(Trial(factory, estimate, note=f"over budget before training ({estimate:.0f} B codes)"))
        elif (need := training_rows(factory, dim)) > len(rows):
            trials.append(Trial(factory, estimate, note=f"needs {need:,} training vectors, the gallery gives "
                                                        f"{len(rows):,} (held-out queries aside)"))
        else:
            fitting.append(factory)
    if not fitting:
        if any(not t.note.startswith("over budget") for t in trials):
            return Choice("", {}, trials, f"no candidate{within} trains on {len(rows):,} vectors", False)
        return Choice("", {}, trials, f"no candidate's codes fit {budget:.0f} B per image", False)
    tune = np.ascontiguousarray(vectors[rows], np.float32)
    q = np.ascontiguousarray(vectors[held] if queries is None else queries, np.float32)
    truth = global_shortlist(q, tune, min(at, len(tune)))[1]
    log(f"tuning {len(fitting)} first stages on {len(tune):,} gallery vectors, {len(q)} held-out queries, "
        f"recall@{truth.shape[1]} ≥ {target}")
    quantizers: dict[int, object] = {}
    for i, factory in enumerate(fitting, 1):
        trial = _trial(faiss, factory, tune, q, truth, images, target, quantizers)
        trials.append(trial)
        log(f"[{i}/{len(fitting)}] {factory}: " + (trial.note if trial.recall is None else
            f"{trial.bytes_per_image:.0f} B/image, recall {trial.recall:.3f}, {trial.ms_per_query:.2f} ms/query "
            f"{trial.params or ''} ({trial.build_s:.1f} s)"))
    measured = [t for t in trials if t.recall is not None]
    over = [t for t in measured if t.bytes_per_image > budget]
    for t in over:
        t.note = f"over budget as built ({t.bytes_per_image:.0f} B)"
    fit = [t for t in measured if t.bytes_per_image <= budget]
    reaching = [t for t in fit if t.note == "reaches"]
    if reaching:
        best = min(reaching, key=lambda t: t.ms_per_query or 0.0)
        why = (f"{best.factory}: the fastest of {len(reaching)}{within} reaching recall "
               f"{target} ({best.recall:.3f} at {best.ms_per_query:.2f} ms/query)")
    elif fit:
        best = best_of(fit, lambda t: t.recall or 0.0, lambda t: t.ms_per_query or 0.0, truth.shape[1])
        why = (f"{best.factory}: none{within} reaches recall {target}; the best keeps "
               f"{best.recall:.3f} (the fastest within 1/{truth.shape[1]} of the highest)")
    else:
        return Choice("", {}, trials, f"no candidate fits {budget:.0f} B per image as built", False)
    best.note = "chosen" + ("" if best.note == "reaches" else ", below target")
    return Choice(best.factory, best.params, trials, why, bool(reaching))


def _tuning_rows(images: int, held_from_gallery: bool) -> tuple[np.ndarray, np.ndarray]:
    """(tuning rows, held-out query rows) of the gallery: the queries are never among the rows tuned on."""
    queries = min(TUNE_QUERIES, images // 10) if held_from_gallery else 0
    order = np.random.default_rng(SEED).permutation(images)
    held = np.sort(order[:queries])
    return np.sort(order[queries:queries + TUNE_SAMPLE]), held


def _trial(faiss, factory: str, tune: np.ndarray, queries: np.ndarray, truth: np.ndarray, images: int,
           target: float, quantizers: dict) -> Trial:
    index = without_polysemous(faiss.index_factory(tune.shape[1], factory, faiss.METRIC_INNER_PRODUCT))
    t0 = time.perf_counter()
    plain_ivf = isinstance(faiss.downcast_index(index), faiss.IndexIVF)
    if plain_ivf and (shared := quantizers.get(faiss.extract_index_ivf(index).nlist)) is not None:
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer.add(shared)  # trained once per list count: faiss skips a quantizer already holding nlist
    try:
        index.train(tune)
    except RuntimeError as e:
        return Trial(factory, estimated_bytes(factory, tune.shape[1], images), note=f"faiss cannot train it: {e}"[:200])
    if plain_ivf:
        ivf = faiss.extract_index_ivf(index)
        quantizers.setdefault(ivf.nlist, ivf.quantizer.reconstruct_n(0, ivf.nlist))
    fixed = faiss.serialize_index(index).nbytes
    index.add(tune)
    build_s = time.perf_counter() - t0
    per_image = (faiss.serialize_index(index).nbytes - fixed) / len(tune)
    front = explore(index, queries, truth)
    recall, seconds, params, reaches = pick(front, target, truth.shape[1])
    return Trial(factory, per_image + fixed / images, recall, 1e3 * seconds, build_s, params,
                 "reaches" if reaches else "below target", front)


def confirm(index, probe, front: list, target: float) -> tuple[dict, dict]:
    """The knobs of the built faiss `index` (the whole gallery): the cheapest point of the tuning `front`
    whose recall on the whole, `probe.measure` (`first_stage.RecallProbe`), reaches `target`, walked in time
    order (when none does, the best measured by `best_of`); with that record."""
    measured = []
    for seconds, params in sorted(((p[1], p[2]) for p in front), key=lambda p: p[0]):
        set_params(index, params)
        recall = probe.measure(lambda q, k: faiss_search(index, q, k)[1])
        if recall["value"] >= target:
            return params, recall
        measured.append((seconds, params, recall))
    _, params, recall = best_of(measured, lambda m: m[2]["value"], lambda m: m[0], probe.at)
    set_params(index, params)
    return params, recall


@dataclass(frozen=True)
class Selection:
    """How `auto` chooses: within `budget_bytes` per image (every file of the index, the store included;
    None: no limit), reaching `target_recall` recall@S on held-out queries (`recall_queries` [Q, D], the
    user's, from `recall_source`; default gallery rows), refusing below the target unless
    `allow_below_target`; among `candidates` (faiss factory strings; default `candidates(N, D)`)."""

    budget_bytes: float | None = None
    target_recall: float = TARGET_RECALL
    recall_queries: np.ndarray | None = None
    recall_source: str | None = None
    allow_below_target: bool = False
    candidates: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.target_recall <= 1:
            raise InputError(f"expected a recall in (0, 1], got {self.target_recall}", param="target_recall")
        if self.budget_bytes is not None and self.budget_bytes <= 0:
            raise InputError(f"expected a positive number of bytes per image, got {self.budget_bytes}",
                             param="budget_bytes")

    def first_stage_budget(self, store: float, other: float) -> float | None:
        """The bytes per image left for the first stage beside the store's `store` and the names' and
        manifest's `other`; a budget the store alone exceeds is refused before anything is trained."""
        if self.budget_bytes is None:
            return None
        left = self.budget_bytes - store - other
        if left <= 0:
            taken = (f"the re-ranker's store alone takes {store:,.0f} B per image (and the names and manifest "
                     f"{other:,.0f})" if store else f"the names and manifest take {other:,.0f} B per image")
            raise InputError(f"{self.budget_bytes:,.0f} B per image leaves nothing for a first stage: "
                             f"{taken}", param="budget_bytes")
        return left

    def record(self, choice: Choice, first_budget: float | None) -> dict:
        """The manifest's record of the choice: what was asked, what was tried, why."""
        return {"budget_bytes": self.budget_bytes, "first_stage_budget_bytes": first_budget,
                "target_recall": self.target_recall, "recall_queries": self.recall_source or "gallery",
                "reason": choice.reason, "reaches_target": choice.reaches, "tried": choice.table()}


def table_lines(tried: list[dict]) -> list[str]:
    """What `index build` prints and `index info` shows of the candidates tried."""
    lines = [f"{'first stage':<44} {'B/image':>8} {'recall':>7} {'ms/query':>9} {'build s':>8}  knobs / note"]
    def num(value: float | None, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    for t in tried:
        knobs = ",".join(f"{k}={v}" for k, v in t["params"].items())
        lines.append(f"{t['factory']:<44} {t['bytes_per_image']:>8.0f} {num(t['recall'], '.3f'):>7} "
                     f"{num(t['ms_per_query'], '.3f'):>9} {num(t['build_s'], '.1f'):>8}  {knobs} {t['note']}".rstrip())
    return lines
