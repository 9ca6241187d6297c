"""The `rerankrt` command: one entry point, a subcommand per job. Each delegates to a package."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rerankrt.cli.paths import Flags
from rerankrt.core import environment
from rerankrt.core.errors import QuantizationError, ServerError, UnavailableError
from rerankrt.core.optional import require
from rerankrt.export.quantize import METHODS as CALIBRATION_METHODS
from rerankrt.models import MODELS, names
from rerankrt.runtime.loops import LOOPS
from rerankrt.runtime.naming import PRECISIONS
from rerankrt.search.backends import DEFAULT_ARTIFACTS, KINDS
from rerankrt.search.first_stage import AUTO, EXACT_UP_TO, TRAIN_SAMPLE
from rerankrt.search.searcher import DEFAULT_TOP


def cmd_info(args: argparse.Namespace) -> int:
    info = environment.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "onnxruntime_providers":
            value = ", ".join(value) or "none"
        elif key == "cuda_device":
            value = f"{value['name']} (compute capability {value['compute_capability']})" if value else "no CUDA device"
        elif key == "cpu":
            value = f"{value['model']}, {value['cpus']} CPUs, {', '.join(value['isa']) or 'no AVX2'}"
        elif value is None:
            value = "not installed"
        print(f"{key:<22} {value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    torch_present = environment.package_version("torch") is not None
    rows: list[dict[str, Any]] = []
    for info in MODELS.values():
        if torch_present:
            from rerankrt.models import parameter_count

            params = f"{parameter_count(info.name):,}"
        else:
            params = "n/a (install rerankrt[export] for torch)"
        rows.append({"name": info.name, "kind": info.kind, "loop": info.loop, "baseline": info.baseline,
                     "summary": info.summary, "parameters": params,
                     "released_config": dataclasses.asdict(info.config), "checkpoint": info.checkpoint_format})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        config = ", ".join(f"{k}={v}" for k, v in row["released_config"].items())
        role = ", ".join([row["kind"], *([f"{row['loop']} loop"] if row["loop"] else []),
                          *(["baseline"] if row["baseline"] else [])])
        print(f"{row['name']} ({role})\n  {row['summary']}\n  parameters  {row['parameters']}\n"
              f"  released    {config}\n  checkpoint  {row['checkpoint']}")
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_export(args: argparse.Namespace) -> int:
    from rerankrt.core.atomic import check_outputs
    from rerankrt.export.onnx_export import export_model, parse_profile
    from rerankrt.export.validate import validate
    from rerankrt.models import graphs_of, load_model, spec_for
    from rerankrt.runtime.naming import onnx_name

    profiles = dict(parse_profile(p) for p in args.profile)
    require("polygraphy", "export", "the validation ladder after the export")
    files = _part_files(args, args.name)
    graphs = list(graphs_of(args.name, [p for p in args.parts.split(",") if p] if args.parts else None).values())
    dims = {g: set(spec_for(g).profiles) for g in graphs}
    stray = sorted(d for d in profiles if not any(d in own for own in dims.values()))
    if stray:
        raise ValueError(f"--profile: no graph of {', '.join(graphs)} has a dimension {', '.join(stray)}; known: "
                         f"{', '.join(sorted(set().union(*dims.values())))}")
    if (args.precision == "int8") != (args.calibration is not None):
        raise ValueError("--precision int8 needs --calibration DATA (a dataset folder in the official layout)"
                         if args.calibration is None else "--calibration: only --precision int8 is calibrated")
    if args.precision == "int8" and MODELS[args.name].loop is None:
        raise ValueError(f"--precision int8: INT8 graphs are calibrated through a re-ranking loop; {args.name} has "
                         f"none (INT8 takes {', '.join(names(loop=True))})")
    precisions = ["fp32", "fp16"] if args.precision == "both" else [args.precision]
    check_outputs([Path(args.out) / onnx_name(g, p, fused) for g in graphs for p in precisions
                   for fused in ((False, True) if p != "fp16" else (False,))], args.paths.inputs(args), args.force)
    ok = True
    for graph in graphs:  # the encoder and scorer load the same checkpoint: one file, their halves of it
        model = load_model(graph, args.checkpoint, **files)
        own = {d: p for d, p in profiles.items() if d in dims[graph]}
        precision, calibration = args.precision, args.calibration
        if precision == "int8" and MODELS[graph].loop is None:  # a store's encoder: once per image, not quantized
            _log(f"{graph}: no re-ranking loop to calibrate through; it runs FP32 beside the INT8 graphs")
            precision, calibration = "fp32", None
        meta = export_model(graph, args.checkpoint, args.out, precision, args.opset, own, log=_log, model=model,
                            calibration=calibration, calibration_method=args.calibration_method, **files)
        first = "fp16" if precision == "fp16" else "fp32"
        report = validate(meta.with_name(onnx_name(graph, first)), args.checkpoint, model=model)
        print(report.table())
        ok = ok and report.ok
    return 0 if ok else 1


def _part_files(args: argparse.Namespace, model: str) -> dict:
    """The part checkpoints given on the command line that `model` loads (the extractor's --detector)."""
    given = {"detector": getattr(args, "detector", None)}
    unused = [k for k, v in given.items() if v and k not in MODELS[model].parts]
    if unused:
        takers = [n for n, info in MODELS.items() if unused[0] in info.parts]
        raise ValueError(f"--{unused[0]}: {model} has no {unused[0]} (only {', '.join(takers)} takes one)")
    return {k: v for k, v in given.items() if v}


def cmd_validate(args: argparse.Namespace) -> int:
    if args.path.endswith(".plan"):
        require("tensorrt", "trt", "validating a TensorRT engine")
        from rerankrt.engines.validate import validate_engine

        report = validate_engine(args.path)
    else:
        from rerankrt.export.validate import validate

        report = validate(args.path, args.checkpoint)
    print(report.table())
    return 0 if report.ok else 1


def cmd_build(args: argparse.Namespace) -> int:
    from rerankrt.export.onnx_export import parse_profile

    _check_build_outputs(args)
    require("tensorrt", "trt", "building a TensorRT engine")
    from rerankrt.engines.build import build_engine

    profiles = {d: (p.min, p.opt, p.max) for d, p in (parse_profile(t) for t in args.profile)}
    build_engine(args.onnx, args.out, profiles, args.workspace, args.opt_level, args.timing_cache, log=_log)
    return 0


def _check_build_outputs(args: argparse.Namespace) -> None:
    """The engine and its sidecar may replace neither an existing engine (without --force) nor the graph."""
    from rerankrt.core.atomic import check_outputs
    from rerankrt.runtime.naming import plan_sidecar_path
    from rerankrt.runtime.sidecar import sidecar_path

    plan = Path(args.out) if args.out else Path(args.onnx).with_suffix(".plan")
    check_outputs([plan, plan_sidecar_path(plan)], [args.onnx, sidecar_path(args.onnx)], args.force)


def _dataset_files(args: argparse.Namespace) -> list:
    """The files of --data a dataset loop reads: both splits' locals and globals, the ground truth."""
    from rerankrt.data.dataset_layout import DatasetLayout

    layout = DatasetLayout(Path(args.data), args.desc)
    return [*(f(s) for f in (layout.local, layout.global_) for s in ("query", "gallery")),
            *layout.root.glob("gnd_*.pkl")]


def _request(args: argparse.Namespace, precision: str | None = None, parts: dict | None = None):
    """The backend request of --backend, --artifacts, --engine, --precision, --device, --checkpoint and
    `parts` (the extractor's detector)."""
    from rerankrt.runtime.request import BackendRequest

    return BackendRequest(args.backend, args.artifacts, precision or args.precision, args.device,
                          getattr(args, "checkpoint", None), getattr(args, "engine", None), parts or {})


def _backend_for(args: argparse.Namespace, precision: str, model: str | None = None, parts: dict | None = None):
    """The backend of `model` (default --model) from the command's request (`search.backends.open_model`)."""
    from rerankrt.search.backends import open_model

    return open_model(model or args.model, _request(args, precision, parts), log=_log)


def _rerankers(args: argparse.Namespace, precision: str, stack: contextlib.ExitStack) -> dict:
    """`search.backends.open_reranking` of --model, the command's request and --index."""
    from rerankrt.search.backends import open_reranking

    return open_reranking(stack, args.model, _request(args, precision), getattr(args, "index", None), log=_log)


def _reranking_flags(p: argparse.ArgumentParser, f: Flags) -> None:
    """The flags of a dataset loop (`rerank`, `eval`): the re-ranker and how it is opened, the dataset and its
    first-stage shortlist, the run settings."""
    p.add_argument("--model", required=True, choices=names(loop=True))
    p.add_argument("--backend", choices=KINDS, default="auto")
    f.input("--artifacts", help=f"folder of NAME.onnx / NAME.plan (default {DEFAULT_ARTIFACTS})")
    f.input("--engine", help="an explicit .plan or .onnx instead of --artifacts")
    f.input("--checkpoint", help="the official checkpoint (the torch backend; picked by --backend auto without "
                                 "--artifacts)")
    f.input("--index", metavar="INDEX", help="AMES: the database side from this index's store (index build)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="which exported graph or engine")
    f.value("--device", default="cpu", help="torch device, or cuda for ONNX Runtime's CUDA provider")
    f.input("--data", required=True, files=_dataset_files, help="dataset folder in the official layout")
    f.value("--desc", default="dinov2", help="descriptor prefix of the files (default dinov2)")
    f.input("--nn", default="nn_superglobal.pkl", files=_in_data("nn"), help="first-stage shortlist file in --data")
    p.add_argument("--shortlist", type=int, help="images re-ranked per query (AMES 100, LOCORE 400)")
    p.add_argument("--lambda", dest="lam", type=float, help="fusion weight (AMES λ, LOCORE α); default: released")
    p.add_argument("--gamma", type=float, help="fusion temperature (AMES γ, LOCORE t); default: released")
    _setting_flag(p)


def _run_setting(text: str) -> tuple[str, int | float | str]:
    """`NAME=VALUE` of `--setting`: the value as a whole number, a number or text (the loop checks its type)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


#: the settings a command takes by a flag of their own (its dest: the name), so not by --setting as well
OWN_FLAGS = {"shortlist": "--shortlist", "lam": "--lambda", "gamma": "--gamma", "top": "--top", "nprobe": "--nprobe",
             "ef_search": "--ef-search"}


def _setting_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--setting", type=_run_setting, action="append", default=[], metavar="NAME=VALUE",
                   help="any other run setting of the model's loop, repeated (AMES: db_descriptors, batch; LOCORE: "
                        "window, stride, order, alpha, temperature); default: released")


def _settings(args: argparse.Namespace) -> dict:
    """--setting's pairs by name; one that the command takes by its own flag is refused, so that each setting
    has one way in and none silently beats another."""
    settings = dict(args.setting)
    for name in settings:
        if name in OWN_FLAGS and hasattr(args, name):
            raise ValueError(f"--setting {name}: set by {OWN_FLAGS[name]}, not --setting")
    return settings


def cmd_rerank(args: argparse.Namespace) -> int:
    from rerankrt.core.atomic import check_outputs
    from rerankrt.search.rerank_dataset import rerank_dataset

    check_outputs([args.out], args.paths.inputs(args), args.force)
    with contextlib.ExitStack() as stack:
        loop = _rerankers(args, args.precision, stack)
        out = rerank_dataset(loop.pop("backend"), args.data, args.out, args.shortlist, args.desc, args.nn,
                             args.lam, args.gamma, log=_log, settings=_settings(args), **loop)
    _log(f"wrote {out}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from rerankrt.core.atomic import check_outputs
    from rerankrt.core.progress import progress
    from rerankrt.data.descriptors import read_gnd
    from rerankrt.data.extraction import extract, image_list, output_paths, query_boxes
    from rerankrt.search.backends import open_raml

    if args.imsize <= 0 or args.topk <= 0 or args.batch <= 0:
        bad = next(f"--{k}" for k in ("imsize", "topk", "batch") if getattr(args, k) <= 0)
        raise ValueError(f"{bad}: expected a positive integer, got {getattr(args, bad[2:])}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: is a file, expected a dataset folder")
    targets = output_paths(out, args.split, raml=bool(args.raml_checkpoint)).values()
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.force:
        raise FileExistsError(f"--out: {', '.join(existing)} exist (pass --force to replace them)")
    images = image_list(args.images)
    check_outputs(list(targets), [*images, *args.paths.inputs(args)], force=True)
    boxes = query_boxes(read_gnd(args.gnd), images) if args.gnd else None
    if boxes and args.split != "query":
        raise ValueError("--gnd: query boxes crop query images; this is --split gallery")
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(_backend_for(args, args.precision, "dinov2-extractor",
                                                   _part_files(args, "dinov2-extractor")))
        raml = open_raml(stack, args.split, args.raml_checkpoint, args.device) if args.raml_checkpoint else None
        out.mkdir(parents=True, exist_ok=True)
        written = extract(backend, images, out, args.split, args.imsize, args.topk, boxes, args.batch, raml=raml,
                          progress=lambda done, total: progress("extracting", done, total))
    _log(f"wrote {', '.join(str(p) for p in written.values())}: {len(images)} images")
    return 0


def cmd_shortlist(args: argparse.Namespace) -> int:
    from rerankrt.core.atomic import check_outputs
    from rerankrt.data.dataset_layout import DatasetLayout
    from rerankrt.data.descriptors import read_global, write_nn
    from rerankrt.search.exact import global_shortlist

    layout = DatasetLayout(Path(args.data), args.desc)
    out = layout.root / args.out
    check_outputs([out], args.paths.inputs(args), args.force)
    query, gallery = (read_global(layout.global_(s), args.dim) for s in ("query", "gallery"))
    sims, idx = global_shortlist(query, gallery, args.k)
    write_nn(out, sims, idx)
    _log(f"wrote {out}: the {sims.shape[1]} nearest of {len(gallery)} gallery images for {len(query)} queries")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from rerankrt.search.index import build_index
    from rerankrt.search.shards import shards_info

    if args.index_command == "info":
        info = shards_info(args.index)
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        for key, value in info.items():
            if key == "shard_info":
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
            print(f"{key:<24} {value:.1f}" if isinstance(value, float) else f"{key:<24} {value}")
        return 0
    from rerankrt.models import get_info

    parts = get_info(args.model).store
    reranker = parts[0] if parts else args.model  # AMES encodes its store; LOCORE's holds descriptors
    with _backend_for(args, args.precision, reranker) as backend:  # an --out over --data: refused in main
        out = build_index(backend, args.data, args.out, args.desc, args.db_descriptors, args.force, log=_log,
                          globals_desc=args.globals, first_stage=args.first_stage, train_sample=args.train_sample,
                          nprobe=args.nprobe, ef_search=args.ef_search, shards=args.shards)
    info = shards_info(out)
    _log(f"wrote {out}: {info['images']} images, {info['bytes_per_image']:.1f} bytes per image "
         f"({info['bytes_per_image_by_part']['store']:.1f} of them the store)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from rerankrt.core.atomic import atomic_output, check_outputs
    from rerankrt.search.searcher import Searcher, query_descriptors

    if args.out:
        for index in args.index:
            if Path(index).resolve() in Path(args.out).resolve().parents:
                raise FileExistsError(f"--out: {args.out} is inside the index {index}; choose another output")
        check_outputs([args.out], args.paths.inputs(args), args.force)
    rerank = None if args.rerank == "none" else args.rerank or "index"
    settings = {"top": args.top, "shortlist": args.shortlist, "lam": args.lam, "gamma": args.gamma,
                "nprobe": args.nprobe, "ef_search": args.ef_search, **_settings(args)}
    index = args.index[0] if len(args.index) == 1 else args.index
    weights = {"extractor": args.checkpoint, "detector": args.detector, "rerank": args.rerank_checkpoint,
               "raml": args.raml_checkpoint}
    with Searcher(index, _request(args).replace(checkpoint=None), rerank, weights, {"imsize": args.imsize},
                  log=_log) as searcher:
        queries: list  # of QueryDescriptors, or of image paths
        if args.queries:
            queries, extractor = query_descriptors(args.queries, args.desc, searcher.index.desc, searcher.index.dim)
            if extractor is not None:
                searcher.check_extractor(extractor)
        else:
            from rerankrt.data.extraction import image_list

            queries = list(image_list(args.images))
        results = searcher.search_many(queries, **settings)
    if args.out:
        report = {"index": str(index) if len(args.index) == 1 else index, "queries": [r.as_dict() for r in results]}
        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        _log(f"wrote {args.out}: {len(results)} queries, the top {args.top} each")
        return 0
    print("".join(result.table() for result in results), end="")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rerankrt.bench.eval import comparison, format_comparison, format_table, rankings, score
    from rerankrt.core.atomic import atomic_output, check_outputs
    from rerankrt.runtime.loops import released_settings

    precisions = args.compare.split(",") if args.compare else [args.precision]
    if any(p not in PRECISIONS for p in precisions):
        raise ValueError(f"--compare: expected two of {', '.join(PRECISIONS)}, got {args.compare!r}")
    if args.out:  # checked, and its folder made, before the evaluation
        check_outputs([args.out], args.paths.inputs(args), args.force)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results, tables = {}, {}
    for precision in precisions:
        with contextlib.ExitStack() as stack:
            loop = _rerankers(args, precision, stack)
            backend = loop.pop("backend")
            results[precision] = rankings(backend, args.data, args.dataset, args.shortlist, args.desc,
                                          args.nn, args.lam, args.gamma, args.plus1m, log=_log,
                                          settings=_settings(args), **loop)
            tables[f"{args.model} {precision}"] = score(args.dataset, results[precision])
            shortlist = args.shortlist or released_settings(backend.meta)["shortlist"]
    print(format_table(args.dataset, tables))
    report: dict = {"settings": {k: v for k, v in vars(args).items() if k not in ("run", "paths")}, "tables": tables,
                    "environment": environment.describe()}
    if len(precisions) == 2:
        names = (precisions[0], precisions[1])
        report |= comparison(results[names[0]], results[names[1]], tables[f"{args.model} {names[0]}"],
                             tables[f"{args.model} {names[1]}"], shortlist)
        print(format_comparison(names, report))
    if args.out:
        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    require("tensorrt", "trt", "inspecting a TensorRT engine")
    from rerankrt.engines.inspect import inspect_engine

    report = inspect_engine(args.plan)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['plan']}: TensorRT {report['tensorrt']}, {report['sidecar']['precision']}")
    for t in report["io"]:
        print(f"  {t['mode']:<6} {t['name']:<16} {t['dtype']:<16} {t['shape']}  {' / '.join(t.get('profile', []))}")
    for layer in report["layers"]:
        print(f"  {layer['type']:<20} {layer['name']}  {layer['tactic']}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from rerankrt.bench.synth import synthesize

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise FileExistsError(f"data synth: {out} exists and is not empty (pass --force to replace its files)")
    root = synthesize(args.out, queries=args.queries, database=args.database, dim=args.dim, seed=args.seed)
    _log(f"wrote a synthetic dataset to {root} (evaluate with --dataset synth)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rerankrt.bench.profile import preset_settings, run_bench, settings_by_model

    if args.compare:
        from rerankrt.bench.report import compare_runs, load_results

        a, b = args.compare
        print(compare_runs(load_results(a), load_results(b), (Path(a).parent.name or a, Path(b).parent.name or b)),
              end="")
        return 0
    from rerankrt.core.atomic import check_outputs

    split = lambda text, kind=str: [kind(t) for t in (text or "").split(",") if t]  # noqa: E731
    if bool(args.search) != bool(args.images):
        raise ValueError("--search: the indexes to time searches over, with --images: the query images")
    if args.search:
        from rerankrt.bench.search_latency import markdown, run_search_bench
        from rerankrt.data.extraction import image_list

        unused = [f for f in ("models", "shortlist", "batch", "repeat", "checkpoint", "detector", "setting")
                  if getattr(args, f)]
        if unused:
            raise ValueError(f"--{unused[0]}: not a setting of --search (the index holds its models and shortlist)")
        backends = split(args.backends) or preset_settings(args.preset)["backends"]
        [precision, *more] = split(args.precision) or ["fp32"]
        if more:
            raise ValueError(f"--precision: one precision with --search, got {args.precision}")
        check_outputs([Path(args.out) / name for name in ("search.json", "search.md")], args.paths.inputs(args),
                      args.force)
        print(markdown(run_search_bench(args.search, image_list(args.images), backends, args.artifacts,
                                        Path(args.out), precision, args.device, log=_log)), end="")
        return 0
    check_outputs([Path(args.out) / "results.json"], args.paths.inputs(args), args.force)
    settings = preset_settings(args.preset, models=split(args.models), backends=split(args.backends),
                               precisions=split(args.precision), shortlists=split(args.shortlist, int),
                               batches=split(args.batch, int), repeat=args.repeat)
    files = {}
    if args.checkpoint or args.detector:
        if len(settings["models"]) != 1:
            raise ValueError(f"--checkpoint: the weights of one model; pass --models with one of "
                             f"{', '.join(settings['models'])}")
        model = settings["models"][0]
        parts = _part_files(args, model)
        if not args.checkpoint:
            raise ValueError(f"--detector: {model}'s parts load beside its --checkpoint")
        files[model] = {"checkpoint": args.checkpoint, **parts}
    results = run_bench(settings["models"], settings["backends"], settings["precisions"], settings["shortlists"],
                        settings["repeat"], Path(args.out), Path(args.artifacts) if args.artifacts else None,
                        args.device, args.preset, settings.get("configs"), log=_log, batches=settings.get("batches"),
                        files=files, sized_for_gflops=None if args.repeat else settings.get("sized_for_gflops"),
                        settings=settings_by_model(settings["models"], _settings(args)))
    print((Path(args.out) / "results.md").read_text(), end="")
    return 0 if results["results"] else 1


def cmd_triton(args: argparse.Namespace) -> int:
    from rerankrt.serve.check import check_repository
    from rerankrt.serve.repository import write_repository

    if args.check:
        problems = check_repository(args.check)
        for problem in problems:
            print(problem)
        print(f"{args.check}: {len(problems)} problem(s)" if problems else f"{args.check}: the repository validates")
        return 1 if problems else 0
    if not (args.artifacts and args.out):
        raise ValueError("expected --artifacts DIR --out REPO (to write a repository) or --check REPO")
    models = [m for m in args.models.split(",") if m] if args.models else None
    repo = write_repository(args.artifacts, args.out, args.precision, models, args.max_batch, args.instances,
                            args.queue_delay_us, args.force, log=_log, stores=args.store, platform=args.platform,
                            index=args.index,
                            max_shortlist=args.max_shortlist)
    print(f"{repo}: the repository validates; serve it with `rerankrt serve {repo}` (or `tritonserver "
          f"--model-repository {repo.resolve()}` in the NGC container)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Triton on the repository until SIGTERM or SIGINT, which go to the server; exits when it has stopped."""
    import signal

    from rerankrt.serve.server import TritonServer

    server = TritonServer(args.repo, args.http_port, args.grpc_port, args.metrics_port, args.host,
                          args.tritonserver, args.python_env, log=_log)
    stopping: list[int] = []

    def forward(signum, frame) -> None:
        stopping.append(signum)
        server.signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with server:
            ports = ", ".join(f"{k} {v}" for k, v in server.ports.items())
            print(f"rerankrt serve: ready: {len(server.models)} models ({', '.join(server.models)}) on "
                  f"{server.host}: {ports}", flush=True)
            code = server.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        _log(f"rerankrt serve: stopped ({signal.Signals(stopping[0]).name}), tritonserver exited with {code}"
             + (f": {server.last_error()}" if code else ""))
        return 0
    _log(f"rerankrt serve: tritonserver exited with {code}: {server.last_error()}")
    return 1


def _gallery_files(args: argparse.Namespace) -> list:
    """The files of --data an index is built from."""
    from rerankrt.data.dataset_layout import DatasetLayout

    layout = DatasetLayout(Path(args.data), args.desc)
    first = DatasetLayout(Path(args.data), args.globals or args.desc)
    return [layout.local("gallery"), first.global_("gallery"), layout.images("gallery")]


def _first_stage_knobs(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--nprobe", type=int, help=f"inverted lists a faiss IVF first stage probes ({default})")
    parser.add_argument("--ef-search", type=int, help=f"a faiss HNSW first stage's efSearch ({default})")


def _in_data(name: str):
    """`files=` of a flag naming a file inside --data."""

    return lambda args: [Path(args.data) / getattr(args, name)]


def build_parser() -> argparse.ArgumentParser:
    from rerankrt.core.environment import __version__

    parser = argparse.ArgumentParser(prog="rerankrt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rerankrt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="versions, ONNX Runtime providers and the CUDA device")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_info)
    p = sub.add_parser("models", help="registered models: parameters, released configuration, checkpoint format")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("export", help="export a model (and the encoder and scorer its store uses) to FP32 and FP16 "
                                      "ONNX with their sidecars, then validate")
    f = Flags(p)
    p.add_argument("name", choices=list(MODELS), metavar="NAME", help=f"one of {', '.join(MODELS)}")
    f.input("--checkpoint", help="the official checkpoint (default: random weights)")
    f.input("--detector", help="dinov2-extractor: the AMES detector's checkpoint (dinov2_detector.pt)")
    f.output("--out", default="exported", whole=False, help="output folder (default: exported)")
    f.value("--parts", help="comma-separated from whole,encoder,scorer (default: every graph the model's loops use: "
                            "ames and ames-dist also export their store's encoder and scorer)")
    p.add_argument("--precision", choices=[*PRECISIONS, "both"], default="both",
                   help="both: fp32 and fp16; int8: the FP32 graph quantized on --calibration")
    f.input("--calibration", metavar="DATA", help="--precision int8: a dataset folder in the official layout whose "
                                                  "queries calibrate the quantization and check its ranking")
    p.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax",
                   help="how an activation's INT8 range is set: minmax (its largest |x|) or percentile (99.99th)")
    p.add_argument("--opset", type=int, default=20, help="ONNX opset, 17–20 (default 20)")
    f.value("--profile", action="append", default=[], metavar="DIM:MIN,OPT,MAX",
            help="override a TensorRT optimisation profile, e.g. pairs:1,100,400 (repeatable; each graph takes "
                 "the dimensions it has)")
    p.add_argument("--force", action="store_true", help="replace existing graphs of the same name")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("build", help="build a strongly typed TensorRT engine from an exported graph")
    f = Flags(p)
    f.input("onnx", help="DIR/NAME.fp16.onnx (or NAME.onnx) with its sidecar DIR/NAME.json")
    f.output("--out", help="the plan (default: the graph's path with .plan)")
    f.value("--profile", action="append", default=[], metavar="DIM:MIN,OPT,MAX",
            help="override the sidecar's optimisation profile of a dimension (repeatable)")
    p.add_argument("--workspace", type=float, default=4.0, metavar="GB", help="workspace pool limit (default 4)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="0-5",
                   help="builder optimisation level (default 3)")
    f.input("--timing-cache", help="timing cache file, loaded when present and saved after the build")
    p.add_argument("--force", action="store_true", help="replace an existing engine")
    p.set_defaults(run=cmd_build)

    p = sub.add_parser("inspect", help="a TensorRT engine's I/O and layers (TensorRT and the GPU it was built for)")
    f = Flags(p)
    f.input("plan", help="NAME.plan with its sidecar NAME.plan.json")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("bench", help="per-query re-ranking latency across models, backends and precisions")
    f = Flags(p)
    f.value("--preset", default="quick",
            help="quick (under 3 min on a 2-core CPU), paper (released configurations, S up to 1600: "
                 "a GPU job) or edge (batch 1, FP16)")
    f.value("--models", help="comma-separated, e.g. ames,locore-small,raml")
    f.value("--backends", help="comma-separated from torch,ort,trt")
    f.value("--precision", help="comma-separated from fp32,fp16")
    f.value("--shortlist", help="comma-separated shortlist sizes, e.g. 100,400,1600")
    f.value("--batch", help="comma-separated batch sizes of the encoders (RAML …), e.g. 1,8")
    p.add_argument("--repeat", type=int, help="timed repeats per case (interleaved across the cases of a size)")
    _setting_flag(p)
    f.input("--checkpoint", help="with one model in --models: its official checkpoint (default random weights)")
    f.input("--detector", help="with --models dinov2-extractor: the AMES detector's checkpoint")
    f.value("--device", default="cpu", help="cpu or cuda")
    f.input("--artifacts", help="folder of exported graphs / engines (default OUT/artifacts)")
    f.output("--out", default="bench-results", whole=False, help="results.json, results.csv, results.md, plots")
    f.input("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
            help="instead of measuring: the ratios of two results.json (e.g. FP32 vs FP16, two machines)")
    f.input("--search", nargs="+", metavar="INDEX",
            help="instead of the re-rankers: searches over each index (its re-ranker and its first stage alone) "
                 "per backend, stage by stage; search.json and search.md in --out")
    f.input("--images", help="with --search: the query images (a file, folder or list file)")
    p.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("eval", help="retrieval accuracy of a re-ranker on a dataset in the official layout")
    f = Flags(p)
    _reranking_flags(p, f)
    f.value("--dataset", required=True, help="roxford5k, rparis6k, gldv2 or synth (its gnd_DATASET.pkl in --data)")
    f.value("--compare", help="e.g. fp32,int8: run both, report mAP deltas, Kendall tau, top-10 overlap")
    p.add_argument("--plus1m", action="store_true",
                   help="the folder holds the +1M files (virtual gallery + R1M HDF5 and its shortlist)")
    f.output("--out", help="write the tables and every setting as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("data", help="datasets: `data synth DIR` writes a small synthetic one")
    data = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    q = data.add_parser("synth", help="a synthetic dataset in the official layout with planted matches")
    f = Flags(q)
    f.output("out", whole=False, help="folder to write")
    q.add_argument("--queries", type=int, default=6)
    q.add_argument("--database", type=int, default=120)
    q.add_argument("--dim", type=int, default=768)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--force", action="store_true", help="write into a folder that is not empty")
    q.set_defaults(run=cmd_data_synth)

    p = sub.add_parser("rerank", help="re-rank every query of a dataset in the official layout")
    f = Flags(p)
    _reranking_flags(p, f)
    f.output("--out", required=True, help="the re-ranked shortlist, nn_*.pkl layout")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(run=cmd_rerank)

    p = sub.add_parser("extract", help="images in, DINOv2 descriptors out: the official dataset files")
    f = Flags(p)
    f.input("--images", required=True, help="a folder (sorted file names) or a list file (one path a line)")
    p.add_argument("--split", required=True, choices=["query", "gallery"])
    f.output("--out", required=True, whole=False, help="the dataset folder (it may hold the other split already)")
    p.add_argument("--imsize", type=int, default=770, help="the longer side in pixels (default 770)")
    p.add_argument("--topk", type=int, default=700, help="descriptors kept per image (default 700)")
    f.input("--gnd", help="a revisited gnd_*.pkl: query images are cropped to their bbx")
    p.add_argument("--backend", choices=KINDS, default="auto")
    f.input("--artifacts", help=f"folder of dinov2-extractor.onnx / .plan (default {DEFAULT_ARTIFACTS})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="which exported graph or engine")
    f.input("--checkpoint", help="torch backend: dinov2_vitb14_reg4_pretrain.pth (picked by --backend auto "
                                 "without --artifacts)")
    f.input("--detector", help="torch backend: dinov2_detector.pt")
    f.input("--raml-checkpoint", help="also RAML's global vectors (raml_SPLIT_global.pt), torch backend: the "
                                      "448-px teacher's checkpoint for the gallery, the 224-px student's for queries")
    p.add_argument("--batch", type=int, default=8, help="images of one size per backend call (default 8)")
    f.value("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="replace the files of this split")
    p.set_defaults(run=cmd_extract)

    p = sub.add_parser("shortlist", help="a first stage from the extracted global vectors: exact cosine top-k")
    f = Flags(p)
    f.input("--data", required=True, help="dataset folder: {desc}_query_global.pt, {desc}_gallery_global.pt",
            files=lambda a: [Path(a.data) / f"{a.desc}_{s}_global.pt" for s in ("query", "gallery")])
    f.value("--desc", default="dinov2", help="which global vectors (default dinov2; raml for RAML's)")
    p.add_argument("--dim", type=int, default=768, help="their dimension (DINOv2 768, RAML 512)")
    p.add_argument("--k", type=int, default=1600, help="neighbours kept per query (default 1600)")
    f.output("--out", default="nn_dinov2.pkl", files=_in_data("out"),
             help="file name in --data (default nn_dinov2.pkl)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(run=cmd_shortlist)

    p = sub.add_parser("index", help="search indexes: `index build` makes one of a gallery, `index info` shows one")
    index = p.add_subparsers(dest="index_command", required=True, metavar="COMMAND")
    q = index.add_parser("build", help="a gallery's search index: its globals (the first stage), its names and its "
                                       "local descriptors encoded into a memory-mapped AMES store")
    f = Flags(q)
    indexed = [n for n, info in MODELS.items() if info.store or (info.loop and LOOPS[info.loop].reads_globals)]
    q.add_argument("--model", required=True, choices=indexed,
                   help="the re-ranker whose database side the index holds: AMES's encoded store, or LOCORE's FP16 "
                        "globals and locals")
    f.input("--data", required=True, help="dataset folder holding {desc}_gallery_local.hdf5 and _global.pt "
                                          "(and {desc}_gallery_images.json, written by extract)",
            files=_gallery_files)
    f.value("--desc", default="dinov2", help="descriptor prefix of the files (default dinov2)")
    q.add_argument("--backend", choices=KINDS, default="auto")
    f.input("--artifacts", help=f"folder of NAME-encoder.onnx / .plan (default {DEFAULT_ARTIFACTS})")
    f.input("--checkpoint", help="the official checkpoint (the torch backend; picked by --backend auto without "
                                 "--artifacts)")
    q.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="which exported encoder (int8: the FP32 encoder, a store's query side runs once per query)")
    f.value("--device", default="cpu")
    q.add_argument("--db-descriptors", type=int, help="descriptors kept per image (default: released, 50)")
    f.value("--globals", metavar="DESC", help="whose gallery globals are the first stage (default --desc; raml: "
                                              "RAML's teacher vectors, raml_gallery_global.pt)")
    f.value("--first-stage", default=AUTO, metavar="exact|FACTORY|auto",
            help=f"exact, or a faiss index_factory string over the normalised globals (IVF1024,PQ64, HNSW32, …; "
                 f"rerankrt[search]); auto (default): exact up to {EXACT_UP_TO:,} images, IVF-PQ above")
    q.add_argument("--train-sample", type=int, help=f"gallery vectors a faiss first stage is trained on (default "
                                                    f"min(images, {TRAIN_SAMPLE:,}))")
    _first_stage_knobs(q, "the default a search runs with")
    q.add_argument("--shards", type=int, default=1, help="split the gallery's rows into this many indexes, each "
                                                         "with its own first stage and store (default 1)")
    f.output("--out", required=True, help="the index folder to write")
    q.add_argument("--force", action="store_true", help="replace an existing index (or store)")
    q.set_defaults(run=cmd_index)
    q = index.add_parser("info", help="what an index (or a store) holds, and its measured bytes per image")
    f = Flags(q)
    f.input("index", help="the index folder (or an AMES store folder)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=cmd_index)

    p = sub.add_parser("search", help="query images in, ranked gallery images out: extract, first stage, re-rank")
    f = Flags(p)
    f.input("--index", required=True, nargs="+", metavar="INDEX",
            help="the search index (rerankrt index build), a shard set (--shards), or several indexes of disjoint "
                 "galleries searched as one (their rows counted in the order given)")
    queries = f.exclusive(required=True)
    queries.input("--images", help="a query image, a folder of them (sorted names) or a list file")
    queries.input("--queries", help="instead: a dataset folder with query descriptor files (official layout)")
    f.value("--desc", default="dinov2", help="--queries: the descriptor prefix of the files (default dinov2)")
    p.add_argument("--imsize", type=int, help="the query's longer side in pixels (default: the gallery's)")
    p.add_argument("--backend", choices=KINDS, default="auto")
    f.input("--artifacts", help=f"folder of the extractor's and re-ranker's graphs / engines (default "
                                f"{DEFAULT_ARTIFACTS})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="which exported graphs or engines")
    f.input("--checkpoint", help="torch backend: the extractor's dinov2_vitb14_reg4_pretrain.pth")
    f.input("--detector", help="torch backend: the extractor's dinov2_detector.pt")
    f.input("--rerank-checkpoint", help="torch backend: the re-ranker's checkpoint")
    f.input("--raml-checkpoint", help="an index with RAML's first stage: the 224-px student's checkpoint (torch)")
    f.value("--rerank", help="the index's re-ranker (default) or none: the first stage alone")
    p.add_argument("--shortlist", type=int, help="images re-ranked per query (default: released, AMES 100)")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"results per query (default {DEFAULT_TOP})")
    p.add_argument("--lambda", dest="lam", type=float, help="fusion weight (AMES λ); default: released")
    p.add_argument("--gamma", type=float, help="fusion temperature (AMES γ); default: released")
    _setting_flag(p)
    _first_stage_knobs(p, "default: the index's")
    f.value("--device", default="cpu")
    f.output("--out", help="write the results as JSON (default: a table per query)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("triton", help="a Triton Inference Server model repository from exported graphs and engines")
    f = Flags(p)
    f.input("--artifacts", help="folder of exported NAME.onnx / NAME.fp16.onnx (+ NAME.json) and NAME*.plan")
    f.output("--out", help="the repository folder to write")
    f.input("--check", metavar="REPO", help="only validate an existing repository")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="which graph or engine to serve")
    f.value("--models", help="comma-separated subset of the exported models (default: all)")
    p.add_argument("--max-batch", type=int, help="cap max_batch_size (default: each profile's maximum)")
    p.add_argument("--instances", type=int, default=1, help="instances of each model (default 1)")
    p.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batching queue delay (default 100)")
    p.add_argument("--force", action="store_true", help="replace a repository rerankrt wrote before")
    f.input("--store", action="append", default=[], metavar="STORE",
            help="a search index (or an AMES store): its variant's loop re-ranks from its store (needs the encoder "
                 "and scorer exported)")
    f.input("--index", help="a search index: the `search` model searches it (needs the extractor, encoder and "
                            "scorer exported)")
    p.add_argument("--max-shortlist", type=int, default=1600,
                   help="the longest shortlist a loop model takes in one request (default 1600)")
    p.add_argument("--platform", choices=["production", "python"], default="production",
                   help="production: onnxruntime_onnx / tensorrt_plan (the NGC container); python: every graph as a "
                        "Python-backend model over rerankrt's ONNX Runtime backend (any tritonserver)")
    p.set_defaults(run=cmd_triton)

    p = sub.add_parser("serve", help="Triton Inference Server on a repository `rerankrt triton` wrote")
    f = Flags(p)
    f.input("repo", metavar="REPO", help="the model repository")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    f.value("--host", default="127.0.0.1", help="the address to bind (default loopback; 0.0.0.0 for every one)")
    f.input("--tritonserver", metavar="PATH",
            help="the server binary (default: tritonserver on PATH, else the one nvidia-pytriton bundles)")
    f.input("--python-env", metavar="DIR",
            help="the Python backend's environment, with rerankrt[serve] and numpy<2 (default $RERANKRT_SERVE_ENV, "
                 "else this interpreter's)")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("validate", help="the validation ladder of an exported graph, or an engine against ORT")
    f = Flags(p)
    f.input("path", help="DIR/NAME.onnx or DIR/NAME.fp16.onnx (with DIR/NAME.json beside it), or NAME.plan")
    f.input("--checkpoint", help="the checkpoint, when not at the path the sidecar records")
    p.set_defaults(run=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "paths", None) is not None:  # an output is never an input, whatever --force says
            args.paths.check(args)
        return args.run(args)
    except BrokenPipeError:  # `rerankrt models | head`
        sys.stderr.close()
        return 0
    except QuantizationError as e:  # measured, not malformed: the figures say why the INT8 graph was not kept
        print(f"rerankrt {args.command}: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError, UnavailableError, ServerError) as e:  # bad input or environment: the message says it
        print(f"rerankrt {args.command}: error: {e}", file=sys.stderr)
        return 2
