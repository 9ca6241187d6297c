"""`rerankrt triton --check`: a repository validated offline, every problem one line naming the file and
the field. Configs are parsed back with unknown fields as errors, then checked against what the schema
cannot see: the sidecars (names, dtypes, dims, the served file's precision as its sidecar records it),
batch limits, the loops' targets, parameters and stores. Both forms of a graph model check.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import onnx

from rerankrt.core.errors import ModelFileError
from rerankrt.runtime.loops import LOOPS
from rerankrt.runtime.naming import plan_sidecar_path
from rerankrt.runtime.plan import PLAN_FORMAT
from rerankrt.runtime.sidecar import check_sidecar
from rerankrt.serve.configs import (
    MODEL_FILES,
    SHARD,
    TRITON_DTYPES,
    batch_dim,
    loop_tensor_config,
    schema,
    tensor_config,
)
from rerankrt.serve.triton_bls import LOOP_MODELS, TARGET_FILE, AmesShardRerankModel


def _dims(msg) -> list[int]:
    return [int(d) for d in msg.dims]


def check_repository(repo: str | os.PathLike) -> list[str]:
    """Every problem in the repository, one line each naming the file and the field; [] if it is sound."""
    repo = Path(repo)
    model_config_pb2, _, text_format = schema()
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
        problems += _compare_io(field, tensors, [tensor_config(t, precision, lead is not None) for t in expected])
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        problems.append("dynamic_batching: needs max_batch_size > 0")
    return problems + _check_warmup(config, meta, precision, lead is not None)


def _check_warmup(config, meta: dict, precision: str, batched: bool) -> list[str]:
    """Each warm-up sample against the model's inputs: every input named once, its type, and its dims those of
    the input (without the batch dimension of a batched model), a symbolic one inside its profile: Triton
    refuses to load a model whose warm-up its backend rejects."""
    model_config_pb2, _, _ = schema()
    problems = []
    inputs = {t["name"]: t for t in meta["inputs"]}
    for w in config.model_warmup:
        if set(w.inputs) != set(inputs):
            problems.append(f"model_warmup {w.name!r}: inputs {sorted(w.inputs)}, expected {sorted(inputs)}")
            continue
        for name, t in inputs.items():  # in the model's input order
            sample = w.inputs[name]
            want_type = TRITON_DTYPES[t["dtype"][precision]]
            if model_config_pb2.DataType.Name(sample.data_type) != want_type:
                problems.append(f"model_warmup {w.name!r} input {name}: data_type "
                                f"{model_config_pb2.DataType.Name(sample.data_type)}, expected {want_type}")
            shape = t["shape"][1 if batched else 0:]
            dims = list(sample.dims)
            fits = len(dims) == len(shape) and all(
                d == s if isinstance(s, int) else meta["profiles"][s]["min"] <= d <= meta["profiles"][s]["max"]
                for d, s in zip(dims, shape, strict=True))
            if not fits:
                limits = [s if isinstance(s, int) else f"{s} {meta['profiles'][s]['min']}…{meta['profiles'][s]['max']}"
                          for s in shape]
                problems.append(f"model_warmup {w.name!r} input {name}: dims {dims}, expected {limits}")
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
    model_config_pb2, _, text_format = schema()
    out = {}
    for name in served_models(repo):
        config = text_format.Parse((Path(repo) / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        out[name] = config.platform or config.backend
    return out


def served_models(repo: str | os.PathLike) -> list[str]:
    """The models of a repository: its folders with a config.pbtxt."""
    return sorted(p.name for p in Path(repo).iterdir() if (p / "config.pbtxt").is_file())


def _compare_io(field: str, tensors, expected: list[dict]) -> list[str]:
    names = [t.name for t in tensors]
    want = [e["name"] for e in expected]
    if names != want:
        return [f"{field}: names {names}, the sidecar says {want}"]
    problems = []
    data_type = schema()[0].DataType
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


def _check_store_loop(params: dict, configs: dict, encoded: bool) -> list[str]:
    """The store loop's encoder (unless its query comes `encoded`) is a model of the repository and its store
    opens."""
    from rerankrt.search.shards import open_store

    if not encoded and params.get("encoder_model") not in configs:
        return [f"parameters encoder_model: {params.get('encoder_model')!r} is not a model of this repository"]
    try:
        open_store(params.get("store", ""))
    except ModelFileError as e:
        return [f"parameters store: {e}"]
    return []


def _check_loop_numbers(params: dict) -> list[str]:
    """The loop's released settings as its parameters: positive whole batch, window and shortlist sizes,
    finite fusion weights."""
    problems = []
    for key, value in params.items():
        if key in ("batch", "window", "stride", "shortlist", "max_shortlist", "top", "max_top", "max_k"):
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
    if kind == "search":
        return _check_search(config, configs, version, params)
    if kind == SHARD:
        return _check_shard(config, params)
    if kind not in LOOP_MODELS:
        return [f"parameters loop: expected one of {', '.join([*LOOP_MODELS, 'search', SHARD])}, got {kind!r}"]
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
    inputs, outputs = LOOPS[kind].io(meta["config"])
    problems = _check_loop_numbers(params)
    for field, tensors, expected in (("input", config.input, inputs), ("output", config.output, outputs)):
        problems += _compare_io(field, tensors, [loop_tensor_config(t) for t in expected])
    if LOOPS[kind].stored:
        problems += _check_store_loop(params, configs, LOOPS[kind].encoded)
    if config.max_batch_size != 0:
        problems.append(f"max_batch_size: {config.max_batch_size}, expected 0 (one query per request)")
    target_inputs = [t.name for t in configs[target].input]
    if target_inputs != [t["name"] for t in meta["inputs"]]:
        problems.append(f"parameters target_model: {target}'s inputs {target_inputs} are not the ones in {TARGET_FILE}")
    return problems


def _check_search(config, configs: dict, version: Path, params: dict) -> list[str]:
    """The search model: its three models are in the repository, its targets' sidecars read, its index opens
    and fits the encoder and scorer, and its I/O is the search pipeline's."""
    from rerankrt.search.shards import open_index
    from rerankrt.serve.triton_search import roles, search_io

    missing = [f"parameters {role}_model: {params.get(f'{role}_model')!r} is not a model of this repository"
               for role in roles(params) if params.get(f"{role}_model") not in configs]
    if missing:
        return missing
    try:
        target = json.loads((version / TARGET_FILE).read_text())
        metas = {role: check_sidecar(target[role], version / TARGET_FILE) for role in roles(params)}
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        return [f"{version / TARGET_FILE} is unreadable ({type(e).__name__}: {e})"]
    except ModelFileError as e:
        return [str(e)]
    inputs, outputs = search_io()
    problems = _check_loop_numbers(params)
    for field, tensors, expected in (("input", config.input, inputs), ("output", config.output, outputs)):
        problems += _compare_io(field, tensors, [loop_tensor_config(t) for t in expected])
    if config.max_batch_size != 0:
        problems.append(f"max_batch_size: {config.max_batch_size}, expected 0 (one query per request)")
    try:
        index = open_index(params.get("index", ""), first_stage=False)
        if index.store is None:
            raise ModelFileError(f"index {params.get('index')}: holds no re-ranker store")
        index.store.check_encoder(metas["encoder"])
        index.store.check_scorer(metas["scorer"])
    except ModelFileError as e:
        return problems + [f"parameters index: {e}"]
    return problems + _check_shards(params, configs, [s.path for s in getattr(index, "shards", [index])])


def _check_shards(params: dict, configs: dict, shards: list[Path]) -> list[str]:
    """The search model's shard models: one first stage and one store loop per shard of its index, in
    gallery order, each over its shard's folder, the loops fusing with the search model's settings."""
    names = {part: params.get(f"{part}_models", "").split(",") for part in ("shard", "rerank")}
    for part, models in names.items():
        if len(models) != len(shards):
            return [f"parameters {part}_models: {len(models)} models, the index has {len(shards)} shard(s)"]
        missing = [m for m in models if m not in configs]
        if missing:
            return [f"parameters {part}_models: {', '.join(missing)} not models of this repository"]
    problems = []
    for path, first, rerank in zip(shards, names["shard"], names["rerank"], strict=True):
        want = str(path.resolve())
        for model, key, loop in ((first, "index", SHARD), (rerank, "store", AmesShardRerankModel.kind)):
            theirs = {k: v.string_value for k, v in configs[model].parameters.items()}
            if theirs.get("loop") != loop or theirs.get(key) != want:
                problems.append(f"parameters: {model} is not the {loop} model over the shard {want} (its loop "
                                f"{theirs.get('loop')!r}, {key} {theirs.get(key)!r})")
            elif loop != SHARD and any(theirs.get(k) != params.get(k) for k in ("lambda", "gamma")):
                problems.append(f"parameters: {model} fuses with lambda {theirs.get('lambda')}, gamma "
                                f"{theirs.get('gamma')}; the search model with {params.get('lambda')}, "
                                f"{params.get('gamma')}")
    return problems


def _check_shard(config, params: dict) -> list[str]:
    """A shard first-stage model: its index opens and its I/O fits the index's dimension."""
    from rerankrt.search.index import SearchIndex
    from rerankrt.serve.triton_search import shard_io

    problems = _check_loop_numbers(params)
    if config.max_batch_size != 0:
        problems.append(f"max_batch_size: {config.max_batch_size}, expected 0 (one query per request)")
    try:
        index = SearchIndex(params.get("index", ""))
    except (ModelFileError, FileNotFoundError) as e:
        return problems + [f"parameters index: {e}"]
    inputs, outputs = shard_io(index.dim)
    for field, tensors, expected in (("input", config.input, inputs), ("output", config.output, outputs)):
        problems += _compare_io(field, tensors, [loop_tensor_config(t) for t in expected])
    return problems
