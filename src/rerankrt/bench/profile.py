"""`rerankrt bench`: per-query latency of re-ranking a shortlist, side by side in one run, with FLOPs,
bytes moved, the roofline's two probed roofs, memory and database storage per image.

A case is (model, backend, precision, size): a re-ranker at shortlist S, an encoder at a batch of
images. Pair-wise models (AMES, RRT, R2Former, CVNet-Rerank's head) score S pairs of one query in
batches of their profile's opt size (AMES's store scorer after encoding the query once); LOCORE runs the
sliding windows over S (one call per window), and `locore-hf` the same windows through Hugging Face's
Longformer; image models (RAML, CVNet's backbone) and store encoders encode one batch. The cases of one
size are opened together, warmed up, then timed interleaved (A, B, A, B …, `repeat` rounds) so that
drift hits every case alike; each figure is a median with p90 and min/max over the repeats. Timers:
CUDA events for torch on a GPU, else perf_counter. A backend that cannot run here is skipped with its
reason, never silently.

results.json (schema "rerankrt-bench/2"): {"schema", "preset", "settings", "environment", "measured_at",
"roofs": {"<backend> <precision>": {"compute": {"gflops", "kernels"}, "memory": {"gb_per_s", "where"}}},
"results": [one row per case: model, label, kind, backend, precision, shortlist or batch, calls,
median/p90/p99/mean/std/min/max/n (ms), flops, bytes_fed, bytes_moved (inputs, outputs and the weights
of every call), intensity (FLOP per byte), gflops_per_s, bound_gflops (the roofline at that intensity),
roofline_fraction, vs_baseline and vs_published (speed-ups, `bench.report.add_ratios`),
storage_bytes_per_image, storage_measured, peak_rss_mb, peak_device_mb], "skipped":
[{"case", "reason"}]}; the report (results.md, two plots, results.csv) is `bench.report`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt.bench import op_profile
from rerankrt.bench.locore_hf import HF_BASELINES, HfLocoreBackend
from rerankrt.bench.probes import bound, compute_roof, memory_roof
from rerankrt.bench.report import SCHEMA, add_ratios, write_report
from rerankrt.bench.timing import summarize
from rerankrt.core import environment
from rerankrt.core.atomic import write_json
from rerankrt.core.errors import InputError, ModelFileError, UnavailableError
from rerankrt.core.optional import require
from rerankrt.core.progress import progress
from rerankrt.models import ENCODER, EXTRACTOR, IMAGE, LIST_WISE, MODELS, PAIR_WISE, encoder_of, get_info, spec_for
from rerankrt.runtime.artifacts import Artifacts
from rerankrt.runtime.loops import LOOPS, architecture
from rerankrt.runtime.naming import PRECISIONS
from rerankrt.runtime.ort_backend import OrtBackend
from rerankrt.runtime.request import BackendRequest
from rerankrt.runtime.sliding import window_starts
from rerankrt.search.backends import open_model

PRESETS: dict[str, dict] = {
    # < 3 minutes on a 2-core CPU, the main job's profile step: AMES (whole and as stored) and LOCORE-small in
    # every deployed form (torch, ONNX Runtime on the standard and the fused graph, INT8) beside the pair-wise
    # re-rankers they are compared with at a shortlist of 25, two of those at reduced sizes (named as such in
    # the tables and never the headline ratio; RRT at 500 locals and CVNet-Rerank at 48×64 maps take seconds to
    # minutes per query on a CPU), and RAML's query encoder apart. INT8 graphs come from `rerankrt export
    # --precision int8 --calibration DATA` (the main job exports them on its synthetic dataset).
    # Its repeats are sized for a best compute roof of `sized_for_gflops` and scaled down by the probed roof on
    # a slower machine (`scaled_repeat`).
    "quick": {"models": ["ames", "ames-scorer", "locore-small", "rrt", "r2former", "cvnet-rerank", "raml"],
              "backends": ["torch", "ort", "ort-fused"], "precisions": ["fp32", "int8"], "shortlists": [25],
              "batches": [1], "repeat": 3, "sized_for_gflops": 200,
              "configs": {"rrt": {"local_descriptors": 100}, "cvnet-rerank": {"map_height": 12, "map_width": 16}}},
    # the extractor at AMES's and LOCORE's published 770 px and at 448 px (the RAML teacher's database side)
    "paper": {"models": ["ames", "rrt", "r2former", "cvnet-rerank", "cvnet-backbone", "locore", "locore-hf", "raml",
                         "dinov2-extractor"],
              "backends": ["torch", "ort", "ort-fused", "trt"], "precisions": ["fp32", "fp16", "int8"],
              "shortlists": [100, 400, 1600],
              "batches": [1, 8], "repeat": 10, "configs": {"dinov2-extractor": [{"imsize": 448}, {}]}},
    "edge": {"models": ["ames", "locore-small", "raml"], "backends": ["trt", "ort", "torch"],
             "precisions": ["fp16", "int8"],
             "shortlists": [100], "batches": [1], "repeat": 10},
}


#: what a case runs on: PyTorch, ONNX Runtime on the standard graph (what TensorRT parses), ONNX Runtime on
#: the graph fused for it (`NAME[.int8].ort.onnx`), a TensorRT engine
BACKENDS = ("torch", "ort", "ort-fused", "trt")


def _times_int8(model: str, backend: str, backends: list[str]) -> bool:
    """INT8 is a re-ranker's exported graph, timed in the form ONNX Runtime runs it (the fused one where
    `ort-fused` is profiled) or as an engine."""
    if not get_info(registered(model)).loop or backend == "torch":
        return False
    return backend != "ort" or "ort-fused" not in backends


def profiled_models() -> list[str]:
    """What `rerankrt bench --models` takes: the registered models and the published code paths."""
    return [*MODELS, *HF_BASELINES]


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    backend: str
    precision: str
    size: int  #: a re-ranker's shortlist S, an encoder's batch of images
    config: dict = dataclasses.field(default_factory=dict, compare=False)  #: overrides of the released one
    #: the weights: {"checkpoint": path, and the parts such as "detector"}; random weights when empty
    files: dict = dataclasses.field(default_factory=dict, compare=False)
    #: run settings of its loop by name (`runtime.loops`) over the released ones: the graph is the same
    settings: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def encoder(self) -> bool:
        return get_info(registered(self.model)).kind in ENCODERS

    def __str__(self) -> str:
        return f"{variant(self.model, self.config, self.settings)} {self.backend} {self.precision} " + (
            f"batch={self.size}" if self.encoder else f"S={self.size}")


#: kinds timed as encoders (a batch of images), not as re-rankers of a shortlist
ENCODERS = (IMAGE, ENCODER, EXTRACTOR)


def registered(model: str) -> str:
    """The registered model behind a profiler name (`locore-hf` runs `locore`'s weights and configuration)."""
    return HF_BASELINES.get(model, model)


def model_variants(configs: dict, model: str) -> list[dict]:
    """The configurations a model is profiled in: `configs[model]` is one dict of overrides or a list of
    them (the extractor at 448 and 770 px); `locore-hf` takes locore's."""
    chosen = configs.get(model, configs.get(registered(model), {}))
    return list(chosen) if isinstance(chosen, list) else [chosen]


def variant(model: str, config: dict, settings: dict | None = None) -> str:
    """How the tables name a model in a configuration other than the released one, or run with other
    settings of its loop: `rrt (num_layers=2)`, `locore-small (window=50)`."""
    released = dataclasses.asdict(get_info(registered(model)).config)
    changed = {**{k: v for k, v in config.items() if released.get(k) != v}, **(settings or {})}
    return model + (f" ({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else "")


def _loop_settings(model: str) -> tuple[str, ...]:
    """The run settings the loop of a profiled model takes by name (none for a model no loop drives)."""
    loop = get_info(registered(model)).loop
    return LOOPS[loop].names() if loop else ()


def settings_by_model(models: list[str], named: dict) -> dict:
    """Run settings given by name alone (`rerankrt bench --setting window=50`) as `run_bench` takes them: each
    for every model in `models` whose loop takes it; one that none takes is refused."""
    out: dict[str, dict] = {}
    for name, value in named.items():
        takers = [m for m in models if name in _loop_settings(m)]
        if not takers:
            raise InputError(f"{name}: no loop of the models profiled takes it ({', '.join(models)})", param="setting")
        for model in takers:
            out.setdefault(model, {})[name] = value
    return out


def check_settings(models: list[str], settings: dict) -> None:
    """Refuse run settings (per model, by name) of a model not profiled, or that the model's loop does not
    take, naming those it does."""
    for model, named in settings.items():
        if model not in models:
            raise InputError(f"{model} is not profiled here (`models`: {', '.join(models)})", param="setting")
        names = _loop_settings(model)
        unknown = [name for name in named if name not in names]
        if unknown:
            takes = f"its settings: {', '.join(names)}" if names else "no loop runs it"
            raise InputError(f"{unknown[0]}: not a run setting of {model} ({takes})", param="setting")


def _graph_folder(artifacts: Path, model: str, config: dict, files: dict) -> Artifacts:
    """Released configurations with random weights in `artifacts`; any other configuration, or weights
    from files, in a folder of its own below it (keyed by the files' sha256), so that a reduced size or
    random weights never stand in for the released graph (or the other way round)."""
    from rerankrt.runtime.sidecar import sha256

    wanted = _architecture(model, config)
    if wanted == _architecture(model, {}) and not files:
        return Artifacts(artifacts)
    key = [wanted, {k: sha256(Path(v)) for k, v in sorted(files.items())}]
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Artifacts(artifacts / "variants" / f"{model}-{digest}")


def _architecture(model: str, config: dict) -> dict:
    """The graph a case asks for: the model's configuration with `config`, without its loop's run settings
    (those are the case's, applied at run time: a new λ or window needs no other graph)."""
    info = get_info(model)
    full = json.loads(json.dumps(dataclasses.asdict(dataclasses.replace(info.config, **config))))  # tuples: lists
    return LOOPS[info.loop].architecture(full) if info.loop else full


def _open(case: Case, artifacts: Path, device: str, config: dict, log: Callable[[str], None], model: str = ""):
    """The backend of the case's model (or `model`): torch (or the Hugging Face path) from the registry,
    else the exported graph or engine of the wanted configuration (a missing graph is exported, without
    the validation ladder). INT8 is what a re-ranker runs at: a scorer's encoder runs its FP32 graph."""
    model = model or case.model
    checkpoint = case.files.get("checkpoint")
    parts = {k: v for k, v in case.files.items() if k in get_info(registered(model)).parts}
    if model in HF_BASELINES and case.backend != "torch":
        raise UnavailableError(f"{model} is the Hugging Face PyTorch path: torch backend only")
    if case.backend == "torch":
        if case.precision == "int8":
            raise UnavailableError("torch runs no INT8 graph (INT8 is an exported graph: ort, ort-fused, trt)")
        if case.precision == "fp16" and not device.startswith("cuda"):
            raise UnavailableError("torch FP16 on the CPU is an overflow check, not a deployment: skipped")
        dtype = "float16" if case.precision == "fp16" else "float32"
        if model in HF_BASELINES:
            return HfLocoreBackend(registered(model), device=device, dtype=dtype, checkpoint=checkpoint, **config)
        from rerankrt.models.torch_backend import TorchBackend

        return TorchBackend(model, device=device, dtype=dtype, checkpoint=checkpoint, **parts, **config)
    folder = _graph_folder(artifacts, model, config, case.files)
    request = BackendRequest("trt" if case.backend == "trt" else "ort", folder.root, case.precision, device)
    if case.backend == "trt":
        try:
            return open_model(model, request, log=lambda m: None)
        except ModelFileError as e:
            raise UnavailableError(str(e)) from None
    fused = case.backend == "ort-fused"
    try:
        graph = folder.find(model, case.precision, "ort", fused=fused)
    except ModelFileError:
        if case.precision == "int8":
            raise UnavailableError(f"no INT8 graph {folder.onnx(model, 'int8')}: export it with `rerankrt export "
                                   f"{model} --precision int8 --calibration DATA --out {folder.root}` (INT8 is "
                                   f"calibrated on your data)") from None
        from rerankrt.export.onnx_export import export_model

        log(f"exporting {model} {case.precision} to {folder.root} (no validation ladder)")
        folder.root.mkdir(parents=True, exist_ok=True)
        export_model(model, checkpoint, out_dir=folder.root, precision=case.precision, **parts, **config)
        graph = folder.find(model, case.precision, "ort", fused=fused)
    if fused and model == case.model and not graph.name.endswith(".ort.onnx"):  # a scorer's encoder: as it is
        raise UnavailableError(f"no fused graph {folder.onnx(model, case.precision, fused=True)}: nothing of "
                               f"{model} fuses for ONNX Runtime (its standard graph is what ONNX Runtime runs)")
    backend = open_model(model, request.replace(engine=graph), log=lambda m: None)
    if architecture(backend.meta) != _architecture(model, config):
        raise UnavailableError(f"{graph} was exported in another configuration than the one asked for; "
                               f"export it again or profile from another `artifacts` folder")
    return backend


def _backends(case: Case, artifacts: Path, device: str, config: dict, log: Callable[[str], None],
              stack: contextlib.ExitStack) -> list:
    """The entered backends of a case: the model's, and for a store scorer the encoder of its query side."""
    backends = [stack.enter_context(_open(case, artifacts, device, config, log))]
    loop = get_info(registered(case.model)).loop
    if loop and LOOPS[loop].stored:
        backends.append(stack.enter_context(_open(case, artifacts, device, config, log, encoder_of(case.model))))
    return backends


def _workload(case: Case, backends: list, config: dict) -> tuple[list[tuple], int]:
    """The (backend, feeds) calls of one query's re-ranking (or one image's encoding) and their FLOPs, at the
    released per-item sizes (each profile's opt) of the model as the backend runs it, its loop's run settings
    as `config` sets them. A store scorer's query is encoded first, once."""
    backend = backends[0]
    info = get_info(registered(case.model))
    model_config = type(info.config)(**backend.config)
    spec = spec_for(info.name, model_config)
    sizes = {d: p["opt"] for d, p in backend.profiles().items()}
    loop = LOOPS[info.loop] if info.loop else None
    settings = loop.settings(backend.meta, {**loop.from_config(config), **case.settings}) if loop else {}
    if info.kind == PAIR_WISE:  # S pairs of one query in batches (the loop's, else the profile's opt size)
        batch = settings.get("batch", sizes["pairs"])
        sizes |= {k: settings[k] for k in ("db_descriptors",) if k in settings}
        calls = [{**sizes, "pairs": min(batch, case.size - i)} for i in range(0, case.size, batch)]
    elif info.kind == LIST_WISE:  # the sliding windows over S (released, or as the case sets them)
        starts = window_starts(case.size, settings["window"], settings["stride"], settings["order"])
        calls = [{**sizes, "batch": 1, "images": min(settings["window"], case.size)}] * len(starts)
    elif info.kind == ENCODER:  # a batch of database images
        calls = [{**sizes, "images": case.size}]
    else:  # a batch of images
        calls = [{**sizes, "batch": case.size}]
    work = [(backend, call, spec) for call in calls]
    if len(backends) > 1:  # the query through the encoder
        encoder = backends[1]
        query = {"images": 1, "descriptors": sizes["query_descriptors"]}
        work.insert(0, (encoder, query, spec_for(encoder.meta["model"], type(info.config)(**encoder.config))))
    made: dict[tuple, dict] = {}  # identical calls (LOCORE's windows) share their feeds
    out = []
    for b, call, s in work:
        key = (b.meta["model"], *sorted(call.items()))
        if key not in made:
            cast = {i.name: i.dtype for i in b.input_specs()}
            made[key] = {k: v.astype(cast[k]) for k, v in s.feeds(call, one_query=True).items()}
        out.append((b, made[key]))
    flops = sum(get_info(b.meta["model"]).flops(type(info.config)(**b.config), call) for b, call, _ in work)
    return out, flops


def measured_storage(model: str, config: dict) -> tuple[int | float, bool]:
    """(bytes per database image, measured): for a model served from a store, the bytes per image of a store
    of `STORE_IMAGES` synthetic images built here (every file counted); else the card's formula."""
    info = get_info(registered(model))
    cfg = dataclasses.replace(info.config, **config)
    parent = next((i for i in MODELS.values() if i.store and info.name in (i.name, *i.store)), None)
    if parent is None or parent.store is None or not _torch_available():
        return info.storage(cfg), False
    key = json.dumps([parent.name, dataclasses.asdict(cfg)], sort_keys=True, default=str)
    if key not in _STORES:
        import tempfile

        from rerankrt.data.descriptors import write_local
        from rerankrt.models.torch_backend import TorchBackend
        from rerankrt.search.store import build_store, store_info

        rng = np.random.default_rng(0)
        t = cfg.db_descriptors
        desc = rng.standard_normal((STORE_IMAGES, t, cfg.local_dim)).astype(np.float32)
        mask = np.arange(t) >= rng.integers(t // 2, t + 1, STORE_IMAGES)[:, None]
        with tempfile.TemporaryDirectory() as tmp, \
                TorchBackend(parent.store[0], **{k: v for k, v in config.items()}) as encoder:
            write_local(Path(tmp) / "gallery.hdf5", desc, mask)
            build_store(encoder, Path(tmp) / "gallery.hdf5", Path(tmp) / "store")
            _STORES[key] = store_info(Path(tmp) / "store")["bytes_per_image"]
    return _STORES[key], True


#: images of the store `measured_storage` builds (its manifest adds about 4 bytes an image)
STORE_IMAGES = 256
_STORES: dict[str, float] = {}


def _torch_available() -> bool:
    try:
        require("torch", "export", "a measured store")
    except UnavailableError:
        return False
    return True


def _timer(backend, device: str) -> Callable[[Callable[[], object]], float]:
    if device.startswith("cuda") and getattr(backend, "name", "").startswith("torch"):
        import torch

        def cuda_ms(fn: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return cuda_ms

    def wall_ms(fn: Callable[[], object]) -> float:
        start = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - start) / 1e6

    return wall_ms


def _device_memory(backend, device: str) -> Callable[[], float | None]:
    """Peak device memory of a case in MB: torch's allocator on a GPU (reset now, read after the runs).
    None where it cannot be read in-process (CPU, and ONNX Runtime's or TensorRT's own allocators)."""
    if not (device.startswith("cuda") and getattr(backend, "name", "").startswith("torch")):
        return lambda: None
    import torch

    torch.cuda.reset_peak_memory_stats()
    return lambda: torch.cuda.max_memory_allocated() / 2**20


@dataclasses.dataclass
class Prepared:
    """An opened, warmed-up case: its calls and what one query costs besides time."""

    case: Case
    label: str
    work: list[tuple]  #: (backend, feeds) per backend call of one query
    flops: int
    bytes_fed: int
    bytes_moved: int  #: inputs, outputs and every call's weights
    storage: float
    storage_measured: bool
    peak_device_mb: float | None
    timer: Callable[[Callable[[], object]], float]
    times: list[float] = dataclasses.field(default_factory=list)

    def one_query(self) -> int:
        return _run(self.work)


def _prepare(case: Case, artifacts: Path, device: str, config: dict, log: Callable[[str], None],
             stack: contextlib.ExitStack) -> Prepared:
    """Open the case's backends on `stack` (all of them, or none when one fails), build its workload and
    warm it up (the peak device memory is read around the warm-up)."""
    with contextlib.ExitStack() as own:
        opened = _backends(case, artifacts, device, config, log, own)
        work, flops = _workload(case, opened, config)
        storage, measured = measured_storage(case.model, config)
        memory = _device_memory(opened[0], device)
        out_bytes = _run(work)
        peak = memory()
        fed = sum(x.nbytes for _, feeds in work for x in feeds.values())
        weights = sum(b.weight_bytes() or 0 for b, _ in work)
        prepared = Prepared(case, variant(case.model, config, case.settings), work, flops, fed,
                            fed + out_bytes + weights, storage, measured, peak, _timer(opened[0], device))
        stack.enter_context(own.pop_all())
    return prepared


def _run(work: list[tuple]) -> int:
    """Run one query's calls; the bytes of their outputs."""
    return sum(x.nbytes for b, feeds in work for x in b.infer(feeds).values())


def run_bench(
    models: list[str], backends: list[str], precisions: list[str], shortlists: list[int], repeat: int, out: Path,
    artifacts: Path | None = None, device: str = "cpu", preset: str = "custom", configs: dict | None = None,
    log: Callable[[str], None] = print, batches: list[int] | None = None, files: dict | None = None,
    sized_for_gflops: float | None = None, settings: dict | None = None,
) -> dict:
    """Run every case, write results.json and the report (`bench.report`) to `out`; returns the results.
    `configs`: per model, configuration overrides (reduced sizes; a list of them profiles each), named as
    such in the tables; `batches`: the encoders' batch sizes (default [1]); `files`: per model, its
    checkpoint and parts ({"checkpoint": …, "detector": …}; default random weights); `sized_for_gflops`:
    the compute roof `repeat` was sized for, scaled by the first probed roofs (`scaled_repeat`); `settings`:
    per model, run settings of its loop by name (`{"locore-small": {"window": 50}}`; the same graph)."""

    require("matplotlib", "bench", "the profiler's plots")
    unknown = [m for m in models if m not in profiled_models()]
    if unknown:
        raise InputError(f"unknown {unknown}; known: {', '.join(profiled_models())}", param="models")
    if repeat < 1:
        raise InputError(f"expected at least 1, got {repeat}", param="repeat")
    for param, given, known in (("backends", backends, BACKENDS), ("precisions", precisions, PRECISIONS)):
        if any(g not in known for g in given):
            raise InputError(f"expected some of {', '.join(known)}, got {', '.join(given)}", param=param)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts or out / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    configs, batches = configs or {}, batches or [1]
    files, settings = files or {}, settings or {}
    check_settings(models, settings)
    cases = [Case(m, b, p, s, c, files.get(m, {}), settings.get(m, {}))
             for m in models for c in model_variants(configs, m) for b in backends for p in precisions
             for s in (batches if get_info(registered(m)).kind in ENCODERS else shortlists)
             if p != "int8" or _times_int8(m, b, backends)]
    groups: dict[tuple[bool, int], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.encoder, case.size), []).append(case)
    rows, skipped, done = [], [], 0
    # each roof probed before the first cases that run on it and again after all of them, the best of both: a
    # machine whose clock or load changed during the run gets its better roof, and a case above it is flagged
    roofs: dict[str, dict] = {}
    sizing: dict | None = None  # how `repeat` was scaled, once the first roofs are probed (`scaled_repeat`)
    rounds = repeat
    for (encoder, size), group in groups.items():
        with contextlib.ExitStack() as stack:
            prepared = []
            for case in group:
                done += 1
                log(f"[{done}/{len(cases)}] {case}")
                try:
                    prepared.append(_prepare(case, artifacts, device, case.config, log, stack))
                except UnavailableError as e:
                    skipped.append({"case": str(case), "reason": str(e)})
                    log(f"  skipped: {e}")
            roofs |= _roofs(_roof_keys(p.case for p in prepared) - set(roofs), device)
            if sizing is None and roofs:
                rounds = scaled_repeat(repeat, roofs, sized_for_gflops)
                sizing = {"repeat": repeat, "sized_for_gflops": sized_for_gflops,
                          "roof_gflops": max(r["compute"]["gflops"] for r in roofs.values())}
                if rounds != repeat:
                    log(f"timing {rounds} rounds instead of {repeat}: the best compute roof here is "
                        f"{sizing['roof_gflops']:.0f} GFLOP/s, the preset is sized for {sized_for_gflops:.0f}")
            label = f"{'batch' if encoder else 'S'}={size}, {len(prepared)} cases interleaved"
            for r in range(rounds):
                for p in prepared:
                    p.times.append(p.timer(p.one_query))
                progress(label, r + 1, rounds)
            rows += [_row(p, device) | {"ops": _ops(p)} for p in prepared]  # profiled after the timed rounds
    roofs = _roofs(_roof_keys(Case(r["model"], r["backend"], r["precision"], 0) for r in rows), device, roofs)
    for row in rows:
        roof = roofs[roof_key(row["backend"], row["precision"])]
        row["bound_gflops"] = bound(row["intensity"], roof["compute"], roof["memory"])
        row["roofline_fraction"] = row["gflops_per_s"] / row["bound_gflops"]
        row["above_roof"] = row["roofline_fraction"] > 1.0
        if row["precision"] == "int8":  # its attention and normalisations stay FP32: both roofs bound it
            fp32 = roofs[roof_key(row["backend"], "fp32")]
            row["fp32_roof_fraction"] = row["gflops_per_s"] / bound(row["intensity"], fp32["compute"], fp32["memory"])
    add_ratios(rows)
    results = {"schema": SCHEMA, "preset": preset,
               "settings": {"models": models, "backends": backends, "precisions": precisions,
                            "shortlists": shortlists, "batches": batches, "repeat": rounds,
                            "device": device, "configs": configs, "files": files, "run_settings": settings,
                            "sizing": sizing if rounds != repeat else None},
               "environment": environment.describe(),
               "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "roofs": roofs, "results": rows, "skipped": skipped}
    write_json(out / "results.json", results)
    write_report(results, out)
    return results


def _ops(p: Prepared) -> dict | None:
    """Where an ONNX Runtime case's time goes by operator type (`bench.op_profile`), its calls summed; None
    for other backends."""
    by_backend: dict = {}
    for backend, feeds in p.work:
        if isinstance(backend, OrtBackend):
            by_backend.setdefault(backend.path, []).append(feeds)
    if not by_backend:
        return None
    total: dict[str, float] = {}
    for path, calls in by_backend.items():
        for op, ms in op_profile.profile(path, calls).items():
            total[op] = total.get(op, 0.0) + ms
    return op_profile.shares(dict(sorted(total.items(), key=lambda kv: -kv[1])))


def _row(p: Prepared, device: str) -> dict:
    stats = summarize(p.times)
    achieved = p.flops / (stats["median"] / 1e3) / 1e9
    info = get_info(registered(p.case.model))
    main = p.work[-1][0]  # the model's own backend (a scorer's encoder runs first)
    quantization = main.meta.get("quantization") or {}
    if p.case.backend == "ort-fused":  # the fused form's own agreement, measured at export beside the graph's
        quantization = quantization.get("fused") or {}
    agreement = quantization.get("agreement") if p.case.precision == "int8" else None
    return {"model": p.case.model, "label": p.label, "kind": info.kind, "baseline": info.baseline,
            "reduced": bool(p.case.config), "graph": str(getattr(main, "path", "")) or None, "agreement": agreement,
            "backend": p.case.backend, "precision": p.case.precision, "device": device,
            "shortlist": None if p.case.encoder else p.case.size, "batch": p.case.size if p.case.encoder else None,
            "calls": len(p.work), **stats, "flops": p.flops, "bytes_fed": p.bytes_fed, "bytes_moved": p.bytes_moved,
            "intensity": p.flops / p.bytes_moved, "gflops_per_s": achieved,
            "storage_bytes_per_image": p.storage, "storage_measured": p.storage_measured,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_device_mb": p.peak_device_mb}


def roof_key(backend: str, precision: str) -> str:
    """The roof a case is measured against: its backend's kernels at its precision (a graph fused for ONNX
    Runtime runs ONNX Runtime's kernels: one roof for both forms)."""
    return f"{'ort' if backend == 'ort-fused' else backend} {precision}"


def _roofs(keys: set[str], device: str, previous: dict | None = None) -> dict:
    """The compute roof of every "backend precision" in `keys` and the memory roof of its backend, each
    kernel's and the copy's best of this probe and `previous` (an earlier probe of the same run)."""
    roofs: dict[str, dict] = {}
    memory: dict[str, dict] = {}
    for key in sorted(keys):
        backend, precision = key.split(" ")
        if backend not in memory:
            memory[backend] = memory_roof(backend, device)
        compute = compute_roof(backend, precision, device)
        copy = memory[backend]
        if previous and key in previous:
            before = previous[key]
            kernels = {k: max(v, before["compute"]["kernels"].get(k, 0.0)) for k, v in compute["kernels"].items()}
            compute = {"gflops": max(kernels.values()), "kernels": kernels}
            copy = max(copy, before["memory"], key=lambda m: m["gb_per_s"])
        roofs[key] = {"compute": compute, "memory": copy}
    return roofs


def _roof_keys(cases) -> set[str]:
    """The roofs some cases are measured against (an INT8 case against the FP32 roof of its backend too)."""
    keys = set()
    for case in cases:
        keys.add(roof_key(case.backend, case.precision))
        if case.precision == "int8":
            keys.add(roof_key(case.backend, "fp32"))
    return keys


def scaled_repeat(repeat: int, roofs: dict, sized_for_gflops: float | None) -> int:
    """`repeat` scaled by the best probed compute roof of `roofs` over `sized_for_gflops`, the roof a preset's
    repeats were sized for, rounded, at least 1 and at most `repeat`: a preset keeps its time on a slower
    machine by timing fewer rounds of the same cases (what it measures stays comparable; its medians have
    fewer samples, and the report says so). Unscaled without `sized_for_gflops`."""
    if not sized_for_gflops or not roofs:
        return repeat
    best = max(roof["compute"]["gflops"] for roof in roofs.values())
    return max(1, min(repeat, round(repeat * best / sized_for_gflops)))


def preset_settings(name: str, **overrides) -> dict:
    """The preset `name`'s settings, each of `overrides` (models, backends, precisions, shortlists, batches,
    repeat) that is given (not None, not empty) in place of the preset's."""
    if name not in PRESETS:
        raise InputError(f"expected one of {', '.join(PRESETS)}, got {name!r}", param="preset")
    unknown = sorted(set(overrides) - {"models", "backends", "precisions", "shortlists", "batches", "repeat"})
    if unknown:
        raise TypeError(f"preset_settings: not a setting of a preset: {', '.join(unknown)}")
    return dict(PRESETS[name]) | {k: v for k, v in overrides.items() if v}
