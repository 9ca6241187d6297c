"""`rerankrt triton`: a Triton Inference Server model repository from exported graphs and built engines,
validated offline.

Two forms. The production form (the default, for the NGC container) serves each graph on its own backend:
`onnxruntime_onnx` or `tensorrt_plan`. The Python form (`--platform python`, and what `rerankrt serve`
turns a production repository into for a server without an onnxruntime backend, such as the one the
`nvidia-pytriton` wheel bundles) serves each graph as a Python-backend model over rerankrt's ONNX
Runtime backend (`runtime.triton_bls.GraphModel`), with the same name, inputs, outputs and batching, so
that the loop models and clients see no difference.

For each exported model in the artifacts folder (`NAME.json` sidecar) the repository gets
`REPO/NAME/config.pbtxt` and `REPO/NAME/1/model.plan` (a TensorRT engine of the chosen precision built
by `rerankrt build`, when there is one) or `model.onnx`, with the sidecars beside them (`model.json`: the
export sidecar of the served file, listing only its precision; `model.plan.json`) so that `--check` can
compare the config with what the model really takes. Every
re-ranker also gets its loop as a Python-backend model (`ames_rerank`, `locore_rerank`;
`runtime.triton_bls`). With `--store STORE` (an AMES database store, `rerankrt index build`) and the
variant's encoder and scorer exported, `<variant>_rerank` re-ranks from the store instead: the shortlist
comes in as image indices, the database side out of the store named by the `store` parameter.

Configs are built as `ModelConfig` protobuf messages (tritonclient's `model_config_pb2`) and written
with protobuf's `text_format`, so a field Triton does not know cannot be written; `check_repository`
parses them back with unknown fields as errors and adds the semantic checks the schema cannot make.
The whole repository is assembled in a temporary folder and renamed into place once it validates.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from rerankrt import __version__
from rerankrt.errors import ModelFileError
from rerankrt.models import get_info
from rerankrt.optional import require
from rerankrt.runtime.artifacts import Artifacts
from rerankrt.runtime.atomic import check_outputs, staging_folder, swap_in
from rerankrt.runtime.naming import plan_sidecar_path
from rerankrt.runtime.plan import PLAN_FORMAT, read_plan_sidecar
from rerankrt.runtime.rerankers import released_settings
from rerankrt.runtime.sidecar import check_sidecar
from rerankrt.runtime.triton_bls import LOOP_MODELS, TARGET_FILE, rerank_io, triton_dims

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bool": "TYPE_BOOL", "int64": "TYPE_INT64"}
MODEL_FILES = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx", "python": "model.py"}
#: the file at a repository's root that says rerankrt wrote it: `--force` replaces only such a folder
MARKER = ".rerankrt-repository"
ADAPTER = '''"""Triton Python-backend adapter written by `rerankrt triton`: {what} is rerankrt's own
(`rerankrt.runtime.triton_bls`). rerankrt is installed in the Python backend's environment (the NGC
container), or `rerankrt serve` names an environment with it in RERANKRT_PYTHON_SITE: its site-packages go
first on the path, before the interpreter's own (whose numpy 2 the stub would read tensors wrong with)."""

import os
import site
import sys

_SITE = os.environ.get("RERANKRT_PYTHON_SITE")
if _SITE and _SITE not in sys.path:
    _before = list(sys.path)
    site.addsitedir(_SITE)  # its .pth files too: an editable rerankrt
    sys.path[:] = [p for p in sys.path if p not in _before] + _before

from rerankrt.runtime.triton_bls import {cls} as TritonPythonModel  # noqa: E402

__all__ = ["TritonPythonModel"]
'''
#: the platforms of the two forms of a graph model: `--platform production` (by file) and `--platform python`
PLATFORMS = ("production", "python")


def _pb():
    """tritonclient's ModelConfig schema and protobuf's text and JSON formats."""
    model_config_pb2 = require("tritonclient.grpc.model_config_pb2", "serve", "Triton model configs")
    json_format = require("google.protobuf.json_format", "serve", "Triton model configs")
    text_format = require("google.protobuf.text_format", "serve", "Triton model configs")
    return model_config_pb2, json_format, text_format


@dataclass(frozen=True)
class Artifact:
    name: str  #: the model's name in the repository: the exported model's name
    platform: str  #: tensorrt_plan or onnxruntime_onnx
    path: Path  #: the engine or graph
    precision: str
    meta: dict  #: the export sidecar
    plan_meta: dict | None  #: the engine's sidecar, for engines


def find_artifacts(artifacts: Path, precision: str, models: list[str] | None = None,
                   platform: str = "production") -> list[Artifact]:
    """The exported models in `artifacts` at `precision`, each as its engine when one was built, else its
    ONNX graph (the Python form: always the graph). A model asked for in `models` that is not there is an
    error."""
    found: dict[str, Artifact] = {}
    folder = Artifacts(artifacts)
    for name, meta in folder.exported().items():
        if (models is not None and name not in models) or precision not in meta["files"]:
            continue
        try:
            path = folder.find(name, precision, "auto" if platform == "production" else "ort")
        except ModelFileError:
            continue  # listed in its sidecar, but not there: reported below when asked for
        if path.suffix == ".plan":
            plan_meta = read_plan_sidecar(path)
            if plan_meta["precision"] != precision:
                raise ModelFileError(f"{path}: a {plan_meta['precision']} engine, expected {precision}")
            found[name] = Artifact(name, "tensorrt_plan", path, precision, meta, plan_meta)
        else:
            found[name] = Artifact(name, "onnxruntime_onnx", path, precision, meta, None)
    missing = sorted(set(models or ()) - set(found))
    if missing:
        raise ModelFileError(f"--models: no {precision} graph or engine in {artifacts} for {', '.join(missing)} "
                             f"(export them with `rerankrt export`)")
    if not found:
        raise ModelFileError(f"--artifacts: no exported {precision} models in {artifacts} "
                             f"(`rerankrt export` writes NAME.onnx, NAME.fp16.onnx and NAME.json)")
    return list(found.values())


def batch_dim(meta: dict) -> str | None:
    """The leading symbolic dimension every input and output shares: Triton's batch dimension. None for a
    model whose requests cannot be merged (a store scorer: its query comes once, without the pairs)."""
    tensors = meta["inputs"] + meta["outputs"]
    first = tensors[0]["shape"][0]
    if not isinstance(first, str) or any(t["shape"][0] != first for t in tensors):
        return None
    return first


def _tensor(t: dict, precision: str, batched: bool) -> dict:
    """A tensor's config entry: for a batched model dims without the batch dimension (Triton wants a tensor
    that is only the batch, [pairs] logits, as dims [1] reshaped to []); else the whole shape."""
    dims = [d if isinstance(d, int) else -1 for d in t["shape"][1 if batched else 0:]]
    entry = {"name": t["name"], "data_type": TRITON_DTYPES[t["dtype"][precision]], "dims": dims or [1]}
    return entry if dims else {**entry, "reshape": {"shape": []}}


def model_config(a: Artifact, max_batch: int | None, instances: int, queue_delay_us: int) -> dict:
    """The ModelConfig (as a dict in protobuf's JSON mapping) of an exported model."""
    meta, profiles = a.meta, a.meta["profiles"]
    lead = batch_dim(meta)
    batch = profiles[lead] if lead else None
    max_batch_size = min(max_batch or batch["max"], batch["max"]) if batch else 0
    group: dict = {"kind": "KIND_GPU", "count": instances}
    if a.platform == "tensorrt_plan":
        group["profile"] = ["0"]  # the one profile `rerankrt build` writes
    warm_batch = min(batch["opt"], max_batch_size) if batch else 1
    warmup = {"name": "opt_shapes", "batch_size": warm_batch, "inputs": {
        t["name"]: {"data_type": TRITON_DTYPES[t["dtype"][a.precision]],
                    "dims": [d if isinstance(d, int) else profiles[d]["opt"] for d in t["shape"][1 if batch else 0:]],
                    # zeros: finite (Triton's random_data is random bytes, NaN among them, which the feed check
                    # refuses), and masks all False (nothing padded: random masks could pad a whole image)
                    "zero_data": True}
        for t in meta["inputs"]}}
    config = {
        "name": a.name, "platform": a.platform, "max_batch_size": max_batch_size,
        "input": [_tensor(t, a.precision, batch is not None) for t in meta["inputs"]],
        "output": [_tensor(t, a.precision, batch is not None) for t in meta["outputs"]],
        "instance_group": [group], "model_warmup": [warmup],
    }
    if batch and get_info(a.meta["model"]).dynamic_batching:
        preferred = [b for b in (batch["opt"],) if 1 < b <= max_batch_size]
        config["dynamic_batching"] = {"max_queue_delay_microseconds": queue_delay_us,
                                      **({"preferred_batch_size": preferred} if preferred else {})}
    return config


def python_config(config: dict) -> dict:
    """A graph model's production config in its Python form: the same name, I/O, batching and warm-up,
    run by rerankrt's ONNX Runtime backend in a Python-backend model on the CPU."""
    out = {k: v for k, v in config.items() if k != "platform"}
    out["backend"] = "python"
    out["instance_group"] = [{"kind": "KIND_CPU", "count": g.get("count", 1)} for g in config["instance_group"]]
    return out


def served_sidecar(meta: dict, precision: str, file: str) -> dict:
    """The export sidecar of the one file a repository serves: its precision alone, under the file's name
    (so the runtime's backends open it, and `--check` reads its precision from it)."""
    return {**meta, "files": {precision: file}, "precisions": [precision]}


def graph_adapter() -> str:
    return ADAPTER.format(what="the graph model (ONNX Runtime behind rerankrt's feed checks)", cls="GraphModel")


#: the longest shortlist a loop model takes by default (the paper's largest S): a request is one query, and
#: a bound on it bounds what one request can make the server hold
MAX_SHORTLIST = 1600


def loop_config(a: Artifact, max_batch_size: int, instances: int, name: str, extra: dict | None = None,
                max_shortlist: int = MAX_SHORTLIST) -> dict:
    """The ModelConfig of the re-ranking loop `name` over `a`, with the released settings as parameters
    (and `extra` ones: the store loop's encoder model and store path), and the longest shortlist a request
    may carry."""
    kind, cfg = a.meta["loop"], a.meta["config"]
    inputs, outputs = rerank_io(kind, cfg["local_dim"], cfg.get("local_descriptors", 0))
    params = released_settings(a.meta)
    if kind != "locore":  # pairs per BLS request: what the dynamic batcher merges across queries (a store
        # scorer is not batched by Triton: max_batch_size 0, its own profile bounds the pairs)
        batch = min(params["batch"], max_batch_size) if max_batch_size else params["batch"]
        params = {"lambda": params["lam"], "gamma": params["gamma"], "batch": batch}
    params = {"loop": kind, "target_model": a.name, **params, "max_shortlist": max_shortlist, **(extra or {})}
    return {
        "name": name, "backend": "python", "max_batch_size": 0,
        "input": [_loop_tensor(t) for t in inputs], "output": [_loop_tensor(t) for t in outputs],
        "instance_group": [{"kind": "KIND_CPU", "count": instances}],
        "parameters": {k: {"string_value": str(v)} for k, v in params.items()},
    }


def _loop_tensor(spec) -> dict:
    return {"name": spec.name, "data_type": TRITON_DTYPES[spec.dtype.name], "dims": triton_dims(spec)}


def _write_config(folder: Path, config: dict) -> None:
    model_config_pb2, json_format, text_format = _pb()
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(message))


def write_repository(
    artifacts: str | os.PathLike,
    out: str | os.PathLike,
    precision: str = "fp16",
    models: list[str] | None = None,
    max_batch: int | None = None,
    instances: int = 1,
    queue_delay_us: int = 100,
    force: bool = False,
    log: Callable[[str], None] = lambda message: None,
    stores: list[str] | None = None,
    platform: str = "production",
    max_shortlist: int = MAX_SHORTLIST,
) -> Path:
    """Write and validate the repository; `out` appears only once the whole repository checks out.
    `stores`: AMES database stores; each one's variant re-ranks from it (`<variant>_rerank`). `platform`:
    "production" (onnxruntime_onnx / tensorrt_plan) or "python" (graphs as Python-backend models)."""
    if platform not in PLATFORMS:
        raise ValueError(f"--platform: expected one of {', '.join(PLATFORMS)}, got {platform!r}")
    artifacts, out = Path(artifacts), Path(out)
    for flag, value in (("--instances", instances), ("--max-batch", max_batch or 1),
                        ("--max-shortlist", max_shortlist)):
        if value < 1:
            raise ValueError(f"{flag}: expected a positive integer, got {value}")
    if queue_delay_us < 0:
        raise ValueError(f"--queue-delay-us: expected ≥ 0, got {queue_delay_us}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {out} is a file, expected a repository folder")
    found = find_artifacts(artifacts, precision, models, platform)
    loops = _loops(found, stores or [])
    inputs = [artifacts, *(a.path for a in found), *(s.path for _, _, s in loops.values() if s)]
    check_outputs([out], inputs, force=True)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"--out: {out} exists and is not empty (pass --force to replace it)")
        if not (out / MARKER).is_file():
            raise FileExistsError(f"--out: {out} is not a repository rerankrt wrote (no {MARKER}); refusing to "
                                  f"replace it")
        foreign = sorted(p.name for p in out.iterdir() if p.name != MARKER and not (p / "config.pbtxt").is_file())
        if foreign:
            raise FileExistsError(f"--out: {out} holds what is not a model folder with a config.pbtxt "
                                  f"({', '.join(foreign)}); refusing to replace it")
    staging = staging_folder(out)
    try:
        (staging / MARKER).write_text(json.dumps({"written_by": "rerankrt triton", "version": __version__}) + "\n")
        max_batch_sizes = {}
        for a in found:
            config = model_config(a, max_batch, instances, queue_delay_us)
            max_batch_sizes[a.name] = config["max_batch_size"]
            version = staging / a.name / "1"
            _write_config(staging / a.name, python_config(config) if platform == "python" else config)
            version.mkdir()
            file = MODEL_FILES[a.platform]
            shutil.copyfile(a.path, version / file)
            (version / "model.json").write_text(json.dumps(served_sidecar(a.meta, a.precision, file), indent=2) + "\n")
            if platform == "python":
                (version / "model.py").write_text(graph_adapter())
            if a.plan_meta is not None:
                plan_side = plan_sidecar_path(version / file)
                plan_side.write_text(json.dumps(a.plan_meta, indent=2) + "\n")
            form = "python (ONNX Runtime)" if platform == "python" else a.platform
            log(f"{a.name}: {form} ({a.precision}), max_batch_size {config['max_batch_size']}")
        for name, (a, encoder, store) in loops.items():
            extra = {"encoder_model": encoder.name, "store": str(store.path.resolve())} if encoder else None
            loop = loop_config(a, max_batch_sizes[a.name], instances, name, extra, max_shortlist)
            folder = staging / name
            _write_config(folder, loop)
            (folder / "1").mkdir()
            kind = a.meta["loop"]
            adapter = ADAPTER.format(what=f"the {kind} loop", cls=LOOP_MODELS[kind].__name__)
            (folder / "1" / "model.py").write_text(adapter)
            target = {"precision": a.precision, "sidecar": a.meta, **({"encoder": encoder.meta} if encoder else {})}
            (folder / "1" / TARGET_FILE).write_text(json.dumps(target, indent=2) + "\n")
            log(f"{name}: the {kind} loop over {a.name}" + (f" from the store {store.path}" if store else "")
                + " (Python backend, BLS)")
        problems = check_repository(staging)
        if problems:
            raise ModelFileError("the generated repository does not validate:\n  " + "\n  ".join(problems))
        swap_in(staging, out)  # one rename: a kill leaves the old repository or the new one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _loops(found: list[Artifact], stores: list[str]) -> dict[str, tuple]:
    """{loop model name: (target artifact, encoder artifact or None, store or None)}: `<model>_rerank` for
    every re-ranker; with a store, `<variant>_rerank` re-ranks from it through the variant's scorer."""
    from rerankrt.runtime.store import AmesStore

    by_name = {a.name: a for a in found}
    loops: dict[str, tuple] = {f"{a.name}_rerank": (a, None, None) for a in found if a.meta["loop"] in
                               ("ames", "locore")}
    for path in stores:
        store = AmesStore(path)
        encoder_name, scorer_name = get_info(store.model).store or ("", "")
        missing = [n for n in (encoder_name, scorer_name) if n not in by_name]
        if missing:
            raise ModelFileError(f"--store: {path} is a store of {store.model}; its loop needs "
                                 f"{' and '.join(missing)} (export them with `rerankrt export`)")
        scorer, encoder = by_name[scorer_name], by_name[encoder_name]
        store.check_scorer(scorer.meta)
        store.check_encoder(encoder.meta)
        loops[f"{store.model}_rerank"] = (scorer, encoder, store)
    return loops


def _dims(msg) -> list[int]:
    return [int(d) for d in msg.dims]


def check_repository(repo: str | os.PathLike) -> list[str]:
    """Every problem in the repository, one line each naming the file and the field; [] if it is sound."""
    repo = Path(repo)
    model_config_pb2, _, text_format = _pb()
    if not repo.is_dir():
        return [f"{repo}: not a folder"]
    problems: list[str] = []
    configs = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = folder / "config.pbtxt"
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        try:
            configs[folder.name] = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        except (text_format.ParseError, UnicodeDecodeError) as e:
            problems.append(f"{path}: not a readable ModelConfig in text format ({e})")
    if not configs and not problems:
        problems.append(f"{repo}: no models (expected REPO/<model>/config.pbtxt)")
    for name, config in configs.items():
        problems += [f"{repo / name / 'config.pbtxt'}: {p}" for p in _check_model(repo, name, config, configs)]
    return problems


def _check_model(repo: Path, name: str, config, configs: dict) -> list[str]:
    problems = []
    if config.name and config.name != name:
        problems.append(f"name: {config.name!r}, but the folder is {name!r}")
    kind = config.platform or config.backend
    if kind not in MODEL_FILES:
        return problems + [f"platform: expected one of {', '.join(MODEL_FILES)}, got {kind!r}"]
    versions = sorted((p for p in (repo / name).iterdir() if p.is_dir() and p.name.isdigit()),
                      key=lambda p: int(p.name))  # Triton serves the highest number: "10" after "9"
    if not versions:
        return problems + ["no version folder (expected 1/)"]
    file = config.default_model_filename or MODEL_FILES[kind]
    version = versions[-1]
    if not (version / file).is_file():
        problems.append(f"{version / file} is missing")
    problems += _check_scheduling(config)
    served = "model.onnx" if kind == "python" else file  # a graph model's Python form serves its graph
    if kind == "python" and not (version / served).is_file():
        return problems + _check_loop(config, configs, version)
    try:
        meta = check_sidecar(json.loads((version / "model.json").read_text()), version / "model.json")
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        return problems + [f"the export sidecar {version / 'model.json'} is unreadable ({e})"]
    except ModelFileError as e:
        return problems + [str(e)]
    precision = _precision(meta, version, served, kind, problems)
    if precision is None:
        return problems
    lead = batch_dim(meta)
    if lead is None and config.max_batch_size != 0:
        problems.append(f"max_batch_size: {config.max_batch_size}, expected 0 (the inputs share no batch dimension)")
    if lead is not None and not 0 < config.max_batch_size <= meta["profiles"][lead]["max"]:
        problems.append(f"max_batch_size: {config.max_batch_size}, expected 1…{meta['profiles'][lead]['max']} "
                        f"(the profile's maximum)")
    for field, tensors, expected in (("input", config.input, meta["inputs"]),
                                     ("output", config.output, meta["outputs"])):
        problems += _compare_io(field, tensors, [_tensor(t, precision, lead is not None) for t in expected])
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        problems.append("dynamic_batching: needs max_batch_size > 0")
    return problems


def _check_scheduling(config) -> list[str]:
    """Instance counts, the batcher's preferred sizes and the warm-up batches against max_batch_size."""
    problems = [f"instance_group {i}: count {g.count}, expected at least 1"
                for i, g in enumerate(config.instance_group) if g.count < 1]
    limit = config.max_batch_size
    if config.HasField("dynamic_batching"):
        problems += [f"dynamic_batching preferred_batch_size: {b}, expected 1…{limit} (max_batch_size)"
                     for b in config.dynamic_batching.preferred_batch_size if not 1 <= b <= max(limit, 1)]
    problems += [f"model_warmup {w.name!r}: batch_size {w.batch_size}, expected 1…{max(limit, 1)} (max_batch_size)"
                 for w in config.model_warmup if not 1 <= w.batch_size <= max(limit, 1)]
    return problems


def _precision(meta: dict, version: Path, served: str, kind: str, problems: list[str]) -> str | None:
    """The precision of the served file, as its sidecar records it (`served_sidecar`: one precision, under
    the file's name); an engine's own sidecar must agree, and a graph's input types must be that precision's."""
    if list(meta["files"].values()) != [served]:
        problems.append(f"{version / 'model.json'}: files {meta['files']}, expected one precision for {served}")
        return None
    precision = next(iter(meta["files"]))
    if kind == "tensorrt_plan":
        side = plan_sidecar_path(version / served)
        try:
            plan_meta = json.loads(side.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as e:
            problems.append(f"the engine sidecar {side} is unreadable ({e})")
            return None
        if plan_meta.get("format") != PLAN_FORMAT:
            problems.append(f"{side}: expected format {PLAN_FORMAT!r}")
            return None
        if plan_meta["precision"] != precision:
            problems.append(f"{side}: a {plan_meta['precision']} engine, but model.json says {precision}")
            return None
        return precision
    path = version / served
    if not path.is_file():
        return None  # reported as a missing model file
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # protobuf's DecodeError and friends: the file is not an ONNX model
        problems.append(f"{path}: not a readable ONNX model ({type(e).__name__})")
        return None
    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BOOL: "bool"}
    have = [names.get(i.type.tensor_type.elem_type, str(i.type.tensor_type.elem_type)) for i in graph.input]
    want = [t["dtype"][precision] for t in meta["inputs"]]
    if have != want:
        problems.append(f"{path}: input types {have}, but its sidecar's {precision} inputs are {want}")
        return None
    return precision


def platforms(repo: str | os.PathLike) -> dict[str, str]:
    """{model: its platform or backend} of a repository that validates."""
    model_config_pb2, _, text_format = _pb()
    out = {}
    for name in served_models(repo):
        config = text_format.Parse((Path(repo) / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        out[name] = config.platform or config.backend
    return out


def served_models(repo: str | os.PathLike) -> list[str]:
    """The models of a repository: its folders with a config.pbtxt."""
    return sorted(p.name for p in Path(repo).iterdir() if (p / "config.pbtxt").is_file())


def python_form(repo: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """A copy of `repo` in `out` whose onnxruntime_onnx models are in their Python form (files linked, not
    copied), for a server without an onnxruntime backend; None when `repo` has no such model."""
    model_config_pb2, json_format, text_format = _pb()
    repo, out = Path(repo), Path(out)
    configs = {name: text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
               for name in served_models(repo)}
    if not any(c.platform == "onnxruntime_onnx" for c in configs.values()):
        return None
    for name, config in configs.items():
        for source in (repo / name).rglob("*"):
            target = out / name / source.relative_to(repo / name)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif source.name != "config.pbtxt":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source.resolve())
        if config.platform == "onnxruntime_onnx":
            as_dict = json_format.MessageToDict(config, preserving_proto_field_name=True)
            message = json_format.ParseDict(python_config(as_dict), model_config_pb2.ModelConfig())
            (out / name / "config.pbtxt").write_text(text_format.MessageToString(message))
            for version in (p for p in (repo / name).iterdir() if p.is_dir() and p.name.isdigit()):
                (out / name / version.name / "model.py").write_text(graph_adapter())
        else:
            (out / name / "config.pbtxt").symlink_to((repo / name / "config.pbtxt").resolve())
    return out


def _compare_io(field: str, tensors, expected: list[dict]) -> list[str]:
    names = [t.name for t in tensors]
    want = [e["name"] for e in expected]
    if names != want:
        return [f"{field}: names {names}, the sidecar says {want}"]
    problems = []
    data_type = _pb()[0].DataType
    for t, e in zip(tensors, expected, strict=True):
        dtype = data_type.Name(t.data_type)
        if dtype != e["data_type"]:
            problems.append(f"{field} {t.name}: data_type {dtype}, the sidecar says {e['data_type']}")
        if _dims(t) != e["dims"]:
            problems.append(f"{field} {t.name}: dims {_dims(t)}, the sidecar says {e['dims']}")
        reshape = [int(d) for d in t.reshape.shape] if t.HasField("reshape") else None
        if reshape != (e["reshape"]["shape"] if "reshape" in e else None):
            problems.append(f"{field} {t.name}: reshape {reshape}, expected {e.get('reshape', {}).get('shape')}")
    return problems


def _check_store_loop(params: dict, configs: dict) -> list[str]:
    """The store loop's encoder is a model of the repository and its store opens and fits the scorer."""
    from rerankrt.runtime.store import AmesStore

    if params.get("encoder_model") not in configs:
        return [f"parameters encoder_model: {params.get('encoder_model')!r} is not a model of this repository"]
    try:
        AmesStore(params.get("store", ""))
    except ModelFileError as e:
        return [f"parameters store: {e}"]
    return []


def _check_loop_numbers(params: dict) -> list[str]:
    """The loop's released settings as its parameters: positive whole batch, window and shortlist sizes,
    finite fusion weights."""
    problems = []
    for key, value in params.items():
        if key in ("batch", "window", "stride", "shortlist", "max_shortlist"):
            if not (value.isdigit() and int(value) >= 1):
                problems.append(f"parameters {key}: {value!r}, expected a positive whole number")
        elif key in ("lambda", "gamma", "alpha", "temperature"):
            try:
                ok = math.isfinite(float(value))
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"parameters {key}: {value!r}, expected a finite number")
    return problems


def _check_loop(config, configs: dict, version: Path) -> list[str]:
    params = {k: v.string_value for k, v in config.parameters.items()}
    kind, target = params.get("loop"), params.get("target_model")
    if kind not in LOOP_MODELS:
        return [f"parameters loop: expected one of {', '.join(LOOP_MODELS)}, got {kind!r}"]
    if target not in configs:
        why = "has no valid config.pbtxt" if (version.parent.parent / str(target)).is_dir() else \
            "is not a model of this repository"
        return [f"parameters target_model: {target!r} {why}"]
    try:
        meta = check_sidecar(json.loads((version / TARGET_FILE).read_text())["sidecar"], version / TARGET_FILE)
        if not isinstance(meta["config"].get("local_dim"), int):
            raise KeyError("config.local_dim")
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        return [f"{version / TARGET_FILE} is unreadable ({type(e).__name__}: {e})"]
    except ModelFileError as e:
        return [str(e)]
    inputs, outputs = rerank_io(kind, meta["config"]["local_dim"], meta["config"].get("local_descriptors", 0))
    problems = _check_loop_numbers(params)
    for field, tensors, expected in (("input", config.input, inputs), ("output", config.output, outputs)):
        problems += _compare_io(field, tensors, [_loop_tensor(t) for t in expected])
    if kind == "ames-store":
        problems += _check_store_loop(params, configs)
    if config.max_batch_size != 0:
        problems.append(f"max_batch_size: {config.max_batch_size}, expected 0 (one query per request)")
    target_inputs = [t.name for t in configs[target].input]
    if target_inputs != [t["name"] for t in meta["inputs"]]:
        problems.append(f"parameters target_model: {target}'s inputs {target_inputs} are not the ones in {TARGET_FILE}")
    return problems
