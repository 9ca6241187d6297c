"""`rerankrt bench`: per-query latency of re-ranking a shortlist, side by side in one run, with FLOPs, a
matrix-multiply roofline probe, memory and database storage per image.

A case is (model, backend, precision, shortlist S). Pair-wise models (AMES, RRT, R2Former, CVNet-Rerank's
head) score S pairs of one query in batches of their profile's opt size; LOCORE runs the sliding windows
over S (one call per window), and `locore-hf` the same windows through Hugging Face's Longformer; RAML
encodes one query image (student 224 px), `cvnet-backbone` one 768×1024 image to its stage-3 maps (image
models have no shortlist: the CVNet head's database maps are stored; the original recomputes them per
pair). Timers: CUDA events for torch on a GPU, else perf_counter. A backend that cannot run here is
skipped with its reason, never silently.

results.json (schema "rerankrt-bench/1"): {"schema", "preset", "settings", "environment", "probes":
{"<backend> <precision>": {"gflops", "n"}}, "results": [one row per case: model, backend, precision,
shortlist, calls, median/p90/p99/mean/std/n (ms), flops, gflops_per_s, roofline_fraction,
storage_bytes_per_image, peak_rss_mb (the process so far), peak_device_mb (torch on a GPU, else null)],
"skipped": [{"case", "reason"}]}; plus results.csv,
results.md and two PNG plots (latency vs shortlist, roofline).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import hashlib
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt import environment
from rerankrt.errors import ModelFileError, UnavailableError
from rerankrt.models import ENCODER, IMAGE, LIST_WISE, MODELS, PAIR_WISE, encoder_of, get_info, spec_for
from rerankrt.optional import require
from rerankrt.runtime.artifacts import Artifacts
from rerankrt.runtime.atomic import atomic_output
from rerankrt.runtime.rerankers import released_settings
from rerankrt.runtime.sliding import window_starts

from .locore_hf import HF_BASELINES, HfLocoreBackend
from .timing import summarize

SCHEMA = "rerankrt-bench/1"
PRESETS: dict[str, dict] = {
    # < 3 minutes on a 2-core CPU, the main job's profile step: AMES and LOCORE-small beside the pair-wise
    # re-rankers they are compared with, those at reduced sizes (named as such in the tables; RRT at 500 locals
    # and CVNet-Rerank at 48×64 maps take seconds to minutes per query on a CPU).
    "quick": {"models": ["ames", "locore-small", "rrt", "r2former", "cvnet-rerank", "raml"],
              "backends": ["torch", "ort"], "precisions": ["fp32"], "shortlists": [100], "repeat": 3,
              "configs": {"rrt": {"local_descriptors": 100}, "cvnet-rerank": {"map_height": 12, "map_width": 16}}},
    "paper": {"models": ["ames", "rrt", "r2former", "cvnet-rerank", "cvnet-backbone", "locore", "locore-hf", "raml"],
              "backends": ["torch", "ort", "trt"],
              "precisions": ["fp32", "fp16"], "shortlists": [100, 400, 1600], "repeat": 10},
    "edge": {"models": ["ames", "locore-small", "raml"], "backends": ["trt", "ort", "torch"], "precisions": ["fp16"],
             "shortlists": [100], "repeat": 10},
}


def profiled_models() -> list[str]:
    """What `rerankrt bench --models` takes: the registered models and the published code paths."""
    return [*MODELS, *HF_BASELINES]


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    backend: str
    precision: str
    shortlist: int

    def __str__(self) -> str:
        return f"{self.model} {self.backend} {self.precision} S={self.shortlist}"


def registered(model: str) -> str:
    """The registered model behind a profiler name (`locore-hf` runs `locore`'s weights and configuration)."""
    return HF_BASELINES.get(model, model)


def variant(model: str, config: dict) -> str:
    """How the tables name a model in a configuration other than the released one: `rrt (num_layers=2)`."""
    released = dataclasses.asdict(get_info(registered(model)).config)
    changed = {k: v for k, v in config.items() if released.get(k) != v}
    return model + (f" ({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else "")


def _graph_folder(artifacts: Path, model: str, config: dict) -> Artifacts:
    """Released configurations in `artifacts`; any other in a folder of its own below it, so that a reduced
    size never stands in for the released graph (or the other way round)."""
    info = get_info(model)
    wanted = dataclasses.asdict(dataclasses.replace(info.config, **config))
    if wanted == dataclasses.asdict(info.config):
        return Artifacts(artifacts)
    digest = hashlib.sha1(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:10]
    return Artifacts(artifacts / "variants" / f"{model}-{digest}")


def _open(case: Case, artifacts: Path, device: str, config: dict, log: Callable[[str], None], model: str = ""):
    """The backend of the case's model (or `model`): torch (or the Hugging Face path) from the registry,
    else the exported graph or engine of the wanted configuration (a missing graph is exported, without
    the validation ladder)."""
    from rerankrt.runtime.artifacts import open_backend

    model = model or case.model
    if model in HF_BASELINES and case.backend != "torch":
        raise UnavailableError(f"{model} is the Hugging Face PyTorch path: torch backend only")
    if case.backend == "torch":
        if case.precision == "fp16" and not device.startswith("cuda"):
            raise UnavailableError("torch FP16 on the CPU is an overflow check, not a deployment: skipped")
        dtype = "float16" if case.precision == "fp16" else "float32"
        if model in HF_BASELINES:
            return HfLocoreBackend(registered(model), device=device, dtype=dtype, **config)
        from rerankrt.models.torch_backend import TorchBackend

        return TorchBackend(model, device=device, dtype=dtype, **config)
    folder = _graph_folder(artifacts, model, config)
    if case.backend == "trt":
        try:
            return open_backend(folder.find(model, case.precision, "trt"), "trt", device, log=lambda m: None)
        except ModelFileError as e:
            raise UnavailableError(str(e)) from None
    graph = folder.onnx(model, case.precision)
    if not graph.is_file():
        from rerankrt.export.onnx_export import export_model

        log(f"exporting {model} {case.precision} to {folder.root} (no validation ladder)")
        folder.root.mkdir(parents=True, exist_ok=True)
        export_model(model, out_dir=folder.root, precision=case.precision, **config)
    backend = open_backend(graph, "ort", device)
    wanted = dataclasses.asdict(dataclasses.replace(get_info(model).config, **config))
    if backend.config != json.loads(json.dumps(wanted)):  # as the sidecar holds it: tuples are lists
        raise UnavailableError(f"{graph} was exported in another configuration than the one asked for; "
                               f"export it again or profile from another --artifacts folder")
    return backend


def _backends(case: Case, artifacts: Path, device: str, config: dict, log: Callable[[str], None],
              stack: contextlib.ExitStack) -> list:
    """The entered backends of a case: the model's, and for a store scorer the encoder of its query side."""
    backends = [stack.enter_context(_open(case, artifacts, device, config, log))]
    if get_info(registered(case.model)).loop == "ames-store":
        backends.append(stack.enter_context(_open(case, artifacts, device, config, log, encoder_of(case.model))))
    return backends


def _workload(case: Case, backends: list) -> tuple[list[tuple], int]:
    """The (backend, feeds) calls of one query's re-ranking (or one image's encoding) and their FLOPs, at the
    released per-item sizes (each profile's opt) of the model as the backend runs it. A store scorer's
    query is encoded first, once."""
    backend = backends[0]
    info = get_info(registered(case.model))
    model_config = type(info.config)(**backend.config)
    spec = spec_for(info.name, model_config)
    sizes = {d: p["opt"] for d, p in backend.profiles().items()}
    if info.kind == PAIR_WISE:  # S pairs of one query in batches of the profile's opt size
        batch = sizes["pairs"]
        calls = [{**sizes, "pairs": min(batch, case.shortlist - i)} for i in range(0, case.shortlist, batch)]
    elif info.kind == LIST_WISE:  # the released sliding windows over S
        settings = released_settings(backend.meta)
        starts = window_starts(case.shortlist, settings["window"], settings["stride"], settings["order"])
        calls = [{**sizes, "batch": 1, "images": min(settings["window"], case.shortlist)}] * len(starts)
    elif info.kind == ENCODER:  # one batch of database images
        calls = [sizes]
    else:  # one image
        calls = [{**sizes, "batch": 1}]
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
    if parent is None or not _torch_available():
        return info.storage(cfg), False
    key = json.dumps([parent.name, dataclasses.asdict(cfg)], sort_keys=True, default=str)
    if key not in _STORES:
        import tempfile

        from rerankrt.models.torch_backend import TorchBackend
        from rerankrt.runtime.descriptors import write_local
        from rerankrt.runtime.store import build_store, store_info

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


def progress(label: str, done: int, total: int) -> None:
    """A one-line progress bar of a case's repeats on an interactive terminal (stderr); piped output and
    logs get only the per-case lines."""
    if not sys.stderr.isatty():
        return
    width = 24
    filled = width * done // total
    sys.stderr.write(f"\r  {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
                     + ("\n" if done == total else ""))
    sys.stderr.flush()


def _device_memory(backend, device: str) -> Callable[[], float | None]:
    """Peak device memory of a case in MB: torch's allocator on a GPU (reset now, read after the runs).
    None where it cannot be read in-process (CPU, and ONNX Runtime's or TensorRT's own allocators)."""
    if not (device.startswith("cuda") and getattr(backend, "name", "").startswith("torch")):
        return lambda: None
    import torch

    torch.cuda.reset_peak_memory_stats()
    return lambda: torch.cuda.max_memory_allocated() / 2**20


def matmul_probe(backend: str, precision: str, device: str, n: int = 1024, repeat: int = 5) -> float:
    """GFLOP/s of an n×n matrix product on the same backend and precision (the roofline's roof)."""
    dtype = np.float16 if precision == "fp16" else np.float32
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    if backend == "torch":
        import torch

        x = torch.from_numpy(a).to(device)

        def run() -> object:
            return x @ x
    else:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        elem = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "a"], ["b"])], "probe",
                                  [helper.make_tensor_value_info("a", elem, [n, n])],
                                  [helper.make_tensor_value_info("b", elem, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
        provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
        session = ort.InferenceSession(model.SerializeToString(), providers=[provider])

        def run() -> object:
            return session.run(None, {"a": a})
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        if backend == "torch" and device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / float(np.median(times)) / 1e9


def run_bench(
    models: list[str], backends: list[str], precisions: list[str], shortlists: list[int], repeat: int, out: Path,
    artifacts: Path | None = None, device: str = "cpu", preset: str = "custom", configs: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every case, write results.json/.csv/.md and the plots to `out`; returns the results. `configs`:
    per model, configuration overrides (reduced sizes), named as such in the tables."""
    require("matplotlib", "bench", "the profiler's plots")
    unknown = [m for m in models if m not in profiled_models()]
    if unknown:
        raise ValueError(f"--models: unknown {unknown}; known: {', '.join(profiled_models())}")
    out.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts or out / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    configs = configs or {}
    cases = [Case(m, b, p, s) for m in models for b in backends for p in precisions
             for s in (shortlists[:1] if get_info(registered(m)).kind == IMAGE else shortlists)]
    rows, skipped, probes = [], [], {}
    for i, case in enumerate(cases, 1):
        log(f"[{i}/{len(cases)}] {case}")
        config = configs.get(case.model, configs.get(registered(case.model), {}))  # locore-hf: locore's
        try:
            with contextlib.ExitStack() as stack:
                opened = _backends(case, artifacts, device, config, log, stack)
                work, flops = _workload(case, opened)
                backend = opened[0]
                storage, measured = measured_storage(case.model, config)
                fed = sum(x.nbytes for _, feeds in work for x in feeds.values())
                timer = _timer(backend, device)

                def one_query(work=work) -> None:
                    for b, feeds in work:
                        b.infer(feeds)

                memory = _device_memory(backend, device)
                one_query()  # warm-up
                times = []
                for r in range(repeat):
                    times.append(timer(one_query))
                    progress(str(case), r + 1, repeat)
                stats = summarize(times)
                peak_device_mb = memory()
        except UnavailableError as e:
            skipped.append({"case": str(case), "reason": str(e)})
            log(f"  skipped: {e}")
            continue
        key = f"{case.backend} {case.precision}"
        if key not in probes:
            probes[key] = {"gflops": matmul_probe(case.backend, case.precision, device), "n": 1024}
        achieved = flops / (stats["median"] / 1e3) / 1e9
        rows.append({**dataclasses.asdict(case), "label": variant(case.model, config), "device": device,
                     "calls": len(work), **stats, "flops": flops, "bytes_fed": fed,
                     "gflops_per_s": achieved, "roofline_fraction": achieved / probes[key]["gflops"],
                     "storage_bytes_per_image": storage, "storage_measured": measured,
                     "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     "peak_device_mb": peak_device_mb})
        log(f"  median {stats['median']:.1f} ms, {achieved:.1f} GFLOP/s")
    results = {"schema": SCHEMA, "preset": preset,
               "settings": {"models": models, "backends": backends, "precisions": precisions,
                            "shortlists": shortlists, "repeat": repeat, "device": device, "configs": configs},
               "environment": environment.describe(),
               "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "probes": probes, "results": rows, "skipped": skipped}
    write_outputs(results, out)
    return results


COLUMNS = ["model", "label", "backend", "precision", "shortlist", "calls", "median", "p90", "p99", "mean", "std", "n",
           "flops", "bytes_fed", "gflops_per_s", "roofline_fraction", "storage_bytes_per_image", "storage_measured",
           "peak_rss_mb", "peak_device_mb"]


def write_outputs(results: dict, out: Path) -> None:
    with atomic_output(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_output(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results["results"])
    lines = ["| model | backend | precision | S | median ms | p90 ms | GFLOP/s | roofline | MB fed/query "
             "| bytes/image |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['backend']} | {r['precision']} | {r['shortlist']} | {r['median']:.1f} | "
              f"{r['p90']:.1f} | {r['gflops_per_s']:.1f} | {100 * r['roofline_fraction']:.0f} % | "
              f"{r['bytes_fed'] / 1e6:.2f} | {r['storage_bytes_per_image']:.0f}"
              f"{'' if r['storage_measured'] else ' (formula)'} |" for r in results["results"]]
    lines += [f"\nskipped: {s['case']}: {s['reason']}" for s in results["skipped"]]
    with atomic_output(out / "results.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    plot(results, out)


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list] = {}
    for r in results["results"]:
        series.setdefault(f"{r['label']} {r['backend']} {r['precision']}", []).append((r["shortlist"], r["median"]))
    for label, points in sorted(series.items()):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="shortlist size S", ylabel="latency per query (ms)",
           title="Re-ranking latency per query")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, out / "latency_vs_shortlist.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, probe in results["probes"].items():
        ax.axhline(probe["gflops"], linestyle="--", alpha=0.5)
        ax.annotate(f"matmul peak {key}", (0.01, probe["gflops"]), xycoords=("axes fraction", "data"), fontsize=7)
    for r in results["results"]:
        ax.scatter(r["flops"] / 1e9, r["gflops_per_s"], label=f"{r['label']} {r['backend']} {r['precision']} "
                                                               f"S={r['shortlist']}")
    ax.set(xscale="log", xlabel="GFLOP per query", ylabel="achieved GFLOP/s", title="Roofline (measured peak)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    _save(fig, out / "roofline.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def preset_settings(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"--preset: expected one of {', '.join(PRESETS)}, got {name!r}")
    return dict(PRESETS[name])
