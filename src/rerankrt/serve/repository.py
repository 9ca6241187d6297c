"""`rerankrt triton`: a Triton Inference Server model repository from exported graphs and built engines,
validated offline.

Two forms. The production form (the default, for the NGC container) serves each graph on its own backend:
`onnxruntime_onnx` or `tensorrt_plan`. The Python form (`--platform python`, and what `rerankrt serve`
turns a production repository into for a server without an onnxruntime backend, such as the one the
`nvidia-pytriton` wheel bundles) serves each graph as a Python-backend model over rerankrt's ONNX
Runtime backend (`serve.triton_bls.GraphModel`), with the same name, inputs, outputs and batching, so
that the loop models and clients see no difference.

For each exported model in the artifacts folder (`NAME.json` sidecar) the repository gets
`REPO/NAME/config.pbtxt` and `REPO/NAME/1/model.plan` (a TensorRT engine of the chosen precision built
by `rerankrt build`, when there is one) or `model.onnx`, with the sidecars beside them (`model.json`: the
export sidecar of the served file, listing only its precision; `model.plan.json`) so that `--check` can
compare the config with what the model really takes. Every
re-ranker also gets its loop as a Python-backend model (`ames_rerank`, `locore_rerank`;
`serve.triton_bls`). With `--store STORE` (an AMES database store, `rerankrt index build`) and the
variant's encoder and scorer exported, `<variant>_rerank` re-ranks from the store instead: the shortlist
comes in as image indices, the database side out of the store named by the `store` parameter.

Configs are built as `ModelConfig` protobuf messages (tritonclient's `model_config_pb2`) and written
with protobuf's `text_format`, so a field Triton does not know cannot be written; `check_repository`
parses them back with unknown fields as errors and adds the semantic checks the schema cannot make.
The whole repository is assembled in a temporary folder and renamed into place once it validates.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from rerankrt.core.atomic import check_outputs, staging_folder, swap_in
from rerankrt.core.environment import __version__
from rerankrt.core.errors import InputError, ModelFileError, OutputExistsError, OutputPathError
from rerankrt.models import get_info
from rerankrt.runtime.artifacts import Artifacts
from rerankrt.runtime.loops import LOOPS, released_settings
from rerankrt.runtime.naming import plan_sidecar_path
from rerankrt.runtime.plan import read_plan_sidecar
from rerankrt.search.searcher import DEFAULT_TOP, EXTRACTOR, check_extractor_weights
from rerankrt.serve.check import check_repository, served_models
from rerankrt.serve.configs import (
    MAX_SHORTLIST,
    MODEL_FILES,
    PLATFORMS,
    Artifact,
    adapter,
    graph_adapter,
    loop_config,
    model_config,
    python_config,
    schema,
    search_config,
    served_sidecar,
    shard_config,
)
from rerankrt.serve.triton_bls import LOOP_MODELS, TARGET_FILE, AmesShardRerankModel
from rerankrt.serve.triton_search import SearchModel, ShardFirstStageModel, shard_models

#: the file at a repository's root that says rerankrt wrote it: `--force` replaces only such a folder
MARKER = ".rerankrt-repository"
#: the search model's name (`--index`)
SEARCH = "search"


def find_artifacts(artifacts: Path, precision: str, models: list[str] | None = None,
                   platform: str = "production") -> list[Artifact]:
    """The exported models in `artifacts` at `precision`, each as its engine when one was built, else its
    ONNX graph (the Python form: always the graph). At int8 a model no loop drives (a store's encoder) is
    served at FP32, as the runtime runs it (`Artifacts.runs_at`). A model asked for in `models` that is not
    there is an error."""
    found: dict[str, Artifact] = {}
    folder = Artifacts(artifacts)
    for name, meta in folder.exported().items():
        own = folder.runs_at(name, precision)
        if (models is not None and name not in models) or own not in meta["files"]:
            continue
        try:
            path = folder.find(name, precision, "auto" if platform == "production" else "ort")
        except ModelFileError:
            continue  # listed in its sidecar, but not there: reported below when asked for
        if path.suffix == ".plan":
            plan_meta = read_plan_sidecar(path)
            if plan_meta["precision"] != own:
                raise ModelFileError(f"{path}: a {plan_meta['precision']} engine, expected {own}")
            found[name] = Artifact(name, "tensorrt_plan", path, own, meta, plan_meta)
        else:
            found[name] = Artifact(name, "onnxruntime_onnx", path, own, meta, None)
    missing = sorted(set(models or ()) - set(found))
    if missing:
        raise ModelFileError(f"no {precision} graph or engine in {artifacts} for {', '.join(missing)} "
                             f"(export them with `rerankrt export`)", param="models")
    if not found:
        raise ModelFileError(f"no exported {precision} models in {artifacts} "
                             f"(`rerankrt export` writes NAME.onnx, NAME.fp16.onnx and NAME.json)", param="artifacts")
    return list(found.values())


def _write_config(folder: Path, config: dict) -> None:
    model_config_pb2, json_format, text_format = schema()
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
    index: str | os.PathLike | None = None,
) -> Path:
    """Write and validate the repository; `out` appears only once the whole repository checks out.
    `stores`: AMES database stores; each one's variant re-ranks from it (`<variant>_rerank`). `platform`:
    "production" (onnxruntime_onnx / tensorrt_plan) or "python" (graphs as Python-backend models).
    `index`: a search index; the `search` model searches it through the repository's extractor, encoder
    and scorer."""
    if platform not in PLATFORMS:
        raise InputError(f"expected one of {', '.join(PLATFORMS)}, got {platform!r}", param="platform")
    artifacts, out = Path(artifacts), Path(out)
    for param, value in (("instances", instances), ("max_batch", max_batch or 1),
                         ("max_shortlist", max_shortlist)):
        if value < 1:
            raise InputError(f"expected a positive integer, got {value}", param=param)
    if queue_delay_us < 0:
        raise InputError(f"expected ≥ 0, got {queue_delay_us}", param="queue_delay_us")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out} is a file, expected a repository folder", param="out")
    found = find_artifacts(artifacts, precision, models, platform)
    loops = _loops(found, stores or [])
    search = _search_targets(found, Path(index)) if index is not None else None
    inputs = [artifacts, *(a.path for a in found), *(s.path for _, _, s in loops.values() if s),
              *([index] if index is not None else [])]
    check_outputs([out], inputs, force=True)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(f"{out} exists and is not empty (pass `force` to replace it)", param="out")
        if not (out / MARKER).is_file():
            raise OutputExistsError(f"{out} is not a repository rerankrt wrote (no {MARKER}); refusing to "
                                  f"replace it", param="out")
        foreign = sorted(p.name for p in out.iterdir() if p.name != MARKER and not (p / "config.pbtxt").is_file())
        if foreign:
            raise OutputExistsError(f"{out} holds what is not a model folder with a config.pbtxt "
                                  f"({', '.join(foreign)}); refusing to replace it", param="out")
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
            _write_loop(staging / name, a, encoder,
                        loop_config(a, max_batch_sizes[a.name], instances, name, extra, max_shortlist))
            log(f"{name}: the {a.meta['loop']} loop over {a.name}" + (f" from the store {store.path}" if store else "")
                + " (Python backend, BLS)")
        if search is not None:
            _write_search(staging, Path(index).resolve(), search, instances, max_shortlist,  # type: ignore[arg-type]
                          max_batch_sizes, log)
        problems = check_repository(staging)
        if problems:
            raise ModelFileError("the generated repository does not validate:\n  " + "\n  ".join(problems))
        swap_in(staging, out)  # one rename: a kill leaves the old repository or the new one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _search_targets(found: list[Artifact], index: Path) -> dict[str, Artifact]:
    """{role: artifact} of the models the search model calls: the extractor, and the encoder and scorer of
    the index's re-ranker; refused when one is not exported or does not fit the index."""
    from rerankrt.data.extraction import weights_record
    from rerankrt.search.shards import open_index

    opened = open_index(index)
    if opened.store is None:
        raise ModelFileError(f"{index} holds no re-ranker store (build it with `model`)", param="index")
    parts = get_info(opened.store.model).store
    if parts is None:
        raise ModelFileError(f"{index} holds {opened.store.model}'s store; the search model re-ranks with "
                             f"AMES (search a LOCORE index with `rerankrt search`)", param="index")
    by_name = {a.name: a for a in found}
    names = dict(zip(("extractor", "encoder", "scorer"), (EXTRACTOR, *parts),
                     strict=True))
    if opened.desc == "raml":  # RAML's first stage: the student describes the query's global vector
        names["raml"] = "raml"
    missing = [n for n in names.values() if n not in by_name]
    if missing:
        raise ModelFileError(f"the search model needs {' and '.join(missing)} in `artifacts` (export "
                             f"them with `rerankrt export`)", param="index")
    targets = {role: by_name[name] for role, name in names.items()}
    opened.store.check_encoder(targets["encoder"].meta)
    opened.store.check_scorer(targets["scorer"].meta)
    if opened.extractor is not None:
        check_extractor_weights(weights_record(targets["extractor"].meta), opened.extractor,
                                f"`index` {targets['extractor'].path}")
    return targets


def _write_loop(folder: Path, a: Artifact, encoder: Artifact | None, config: dict) -> None:
    """A loop model over `a` (a store loop: over the scorer, `encoder` the query side's), of the loop its
    `config` names."""
    _write_config(folder, config)
    (folder / "1").mkdir()
    kind = config["parameters"]["loop"]["string_value"]
    (folder / "1" / "model.py").write_text(adapter(f"the {kind} loop", LOOP_MODELS[kind]))
    target = {"precision": a.precision, "sidecar": a.meta, **({"encoder": encoder.meta} if encoder else {})}
    (folder / "1" / TARGET_FILE).write_text(json.dumps(target, indent=2) + "\n")


def _write_search(repo: Path, index: Path, targets: dict[str, Artifact], instances: int, max_top: int,
                  max_batch_sizes: dict[str, int], log: Callable[[str], None]) -> None:
    """The search model and, for each shard of `index` (one index: one shard), its first stage and its store
    loop (`serve.triton_search`). A shard takes the front's shortlist or top, whichever is longer."""
    from rerankrt.search.shards import open_index

    opened = open_index(index, first_stage=False)
    shards = getattr(opened, "shards", [opened])
    names = shard_models(SEARCH, len(shards))
    scorer = targets["scorer"]
    max_k = max(max_top, released_settings(scorer.meta)["shortlist"])
    for shard, (first, rerank) in zip(shards, names, strict=True):
        _write_config(repo / first, shard_config(first, str(shard.path.resolve()), shard.dim, instances, max_k))
        (repo / first / "1").mkdir()
        (repo / first / "1" / "model.py").write_text(adapter("a search shard's first stage", ShardFirstStageModel))
        _write_loop(repo / rerank, scorer, None, loop_config(scorer, max_batch_sizes[scorer.name], instances, rerank,
                                                             {"store": str(shard.path.resolve())}, max_k,
                                                             AmesShardRerankModel.kind))
    _write_config(repo / SEARCH, search_config(SEARCH, str(index), targets, names, instances, DEFAULT_TOP, max_top))
    (repo / SEARCH / "1").mkdir()
    (repo / SEARCH / "1" / "model.py").write_text(adapter("the search pipeline", SearchModel))
    target = {"precision": scorer.precision, **{role: a.meta for role, a in targets.items()}}
    (repo / SEARCH / "1" / TARGET_FILE).write_text(json.dumps(target, indent=2) + "\n")
    log(f"{SEARCH}: {index} through {', '.join(a.name for a in targets.values())} and {len(shards)} shard(s): "
        f"{', '.join(f for f, _ in names)} (first stage), {', '.join(r for _, r in names)} (re-rank) "
        f"(Python backend, BLS)")


def _loops(found: list[Artifact], stores: list[str]) -> dict[str, tuple]:
    """{loop model name: (target artifact, encoder artifact or None, store or None)}: `<model>_rerank` for
    every re-ranker; with a store, `<variant>_rerank` re-ranks from it through the variant's scorer."""
    from rerankrt.search.shards import open_store

    by_name = {a.name: a for a in found}
    loops: dict[str, tuple] = {f"{a.name}_rerank": (a, None, None) for a in found
                               if a.meta["loop"] and LOOPS[a.meta["loop"]].whole_model}
    for path in stores:
        store = open_store(path)
        encoder_name, scorer_name = get_info(store.model).store or ("", "")
        missing = [n for n in (encoder_name, scorer_name) if n not in by_name]
        if missing:
            raise ModelFileError(f"{path} is a store of {store.model}; its loop needs "
                                 f"{' and '.join(missing)} (export them with `rerankrt export`)", param="store")
        scorer, encoder = by_name[scorer_name], by_name[encoder_name]
        store.check_scorer(scorer.meta)
        store.check_encoder(encoder.meta)
        loops[f"{store.model}_rerank"] = (scorer, encoder, store)
    return loops


def python_form(repo: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """A copy of `repo` in `out` whose onnxruntime_onnx models are in their Python form (files linked, not
    copied), for a server without an onnxruntime backend; None when `repo` has no such model."""
    model_config_pb2, json_format, text_format = schema()
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
