"""Search: `rerankrt index build`, `index info` and `search`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rerankrt.cli.args import BackendArgs, DatasetArgs, KnobArgs, OutputArgs, SettingArgs, log, report_command
from rerankrt.cli.paths import Flags
from rerankrt.models import MODELS
from rerankrt.runtime.loops import LOOPS
from rerankrt.search.first_stage import AUTO, EXACT_UP_TO, TRAIN_SAMPLE
from rerankrt.search.first_stage_choice import TARGET_RECALL, table_lines
from rerankrt.search.searcher import DEFAULT_TOP


def cmd_index(args: argparse.Namespace) -> int:
    from rerankrt.search.index import build_index
    from rerankrt.search.shards import shards_info

    if args.index_command == "info":
        info = shards_info(args.index)
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        for key, value in info.items():
            if key == "shard_info" or key == "choice" and value:
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
            print(f"{key:<24} {value:.1f}" if isinstance(value, float) else f"{key:<24} {value}")
        if info.get("choice"):
            print(f"{'choice':<24} {info['choice']['reason']}")
            for line in table_lines(info["choice"]["tried"]):
                print(f"  {line}")
        return 0
    from contextlib import nullcontext

    from rerankrt.models import get_info
    from rerankrt.search.backends import open_model
    from rerankrt.search.first_stage_choice import Selection

    selection = Selection(args.budget_bytes, args.target_recall, allow_below_target=args.allow_below_target)
    if args.model is None:
        given = [flag for flag, value in (("--artifacts", args.artifacts), ("--checkpoint", args.checkpoint),
                                          ("--engine", getattr(args, "engine", None))) if value]
        if given:
            raise ValueError(f"{given[0]}: an index without --model holds no re-ranker's store (nothing to encode)")
    parts = get_info(args.model).store if args.model else None
    reranker = parts[0] if parts else args.model  # AMES encodes its store; LOCORE's holds descriptors
    opened = open_model(reranker, BackendArgs.request(args), log=log) if reranker else nullcontext(None)
    with opened as backend:  # an --out over --data: refused
        out = build_index(backend, args.data, args.out, args.desc, args.db_descriptors, args.force, log=log,
                          globals_desc=args.globals, first_stage=args.first_stage, train_sample=args.train_sample,
                          nprobe=args.nprobe, ef_search=args.ef_search, shards=args.shards, selection=selection,
                          recall_queries=args.recall_queries)
    info = shards_info(out)
    log(f"wrote {out}: {info['images']} images, {info['bytes_per_image']:.1f} bytes per image "
        f"({info['bytes_per_image_by_part']['store']:.1f} of them the store)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from rerankrt.core.atomic import write_json
    from rerankrt.search.searcher import Searcher, query_descriptors

    if args.out:
        for index in args.index:
            if Path(index).resolve() in Path(args.out).resolve().parents:
                raise FileExistsError(f"--out: {args.out} is inside the index {index}; choose another output")
        OutputArgs.check(args, [args.out])
    rerank = None if args.rerank == "none" else args.rerank or "index"
    settings = {"top": args.top, "shortlist": args.shortlist, "lam": args.lam, "gamma": args.gamma,
                "nprobe": args.nprobe, "ef_search": args.ef_search, **SettingArgs.settings(args)}
    index = args.index[0] if len(args.index) == 1 else args.index
    weights = {"extractor": args.checkpoint, "detector": args.detector, "rerank": args.rerank_checkpoint,
               "raml": args.raml_checkpoint}
    request = BackendArgs.request(args).replace(checkpoint=None)
    with Searcher(index, request, rerank, weights, {"imsize": args.imsize}, log=log) as searcher:
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
        write_json(args.out, report)
        log(f"wrote {args.out}: {len(results)} queries, the top {args.top} each")
        return 0
    print("".join(result.table() for result in results), end="")
    return 0


def _gallery_files(args: argparse.Namespace) -> list:
    """The files of --data an index is built from."""
    from rerankrt.data.dataset_layout import DatasetLayout

    layout = DatasetLayout(Path(args.data), args.desc)
    first = DatasetLayout(Path(args.data), args.globals or args.desc)
    return [layout.local("gallery"), first.global_("gallery"), layout.images("gallery")]


def register(sub) -> None:
    p = sub.add_parser("index", help="search indexes: `index build` makes one of a gallery, `index info` shows one")
    index = p.add_subparsers(dest="index_command", required=True, metavar="COMMAND")
    q = index.add_parser("build", help="a gallery's search index: its globals (the first stage), its names and, with "
                                       "--model, the re-ranker's store (AMES's encoded locals, LOCORE's FP16 ones)")
    f = Flags(q)
    indexed = [n for n, info in MODELS.items() if info.store or (info.loop and LOOPS[info.loop].reads_globals)]
    q.add_argument("--model", choices=indexed,
                   help="the re-ranker whose database side the index holds: AMES's encoded store, or LOCORE's FP16 "
                        "globals and locals (default: none, an index of the globals alone for --rerank none)")
    DatasetArgs(nn=False, files=_gallery_files, help="dataset folder holding {desc}_gallery_local.hdf5 and "
                                                     "_global.pt (and {desc}_gallery_images.json, written by "
                                                     "extract)").add(q, f)
    BackendArgs("folder of NAME-encoder.onnx / .plan",
                precision="which exported encoder (int8: the FP32 encoder, a store is encoded once per image)",
                checkpoint="the official checkpoint (the torch backend; picked by --backend auto without "
                           "--artifacts)").add(q, f)
    q.add_argument("--db-descriptors", type=int, help="descriptors kept per image (default: released, 50)")
    f.value("--globals", metavar="DESC", help="whose gallery globals are the first stage (default --desc; raml: "
                                              "RAML's teacher vectors, raml_gallery_global.pt)")
    f.value("--first-stage", default=AUTO, metavar="exact|FACTORY|auto",
            help=f"exact, or a faiss index_factory string over the normalised globals (IVF1024,PQ64, HNSW32, …; "
                 f"rerankrt[search]); auto (default): exact up to {EXACT_UP_TO:,} images without --budget-bytes, "
                 f"else the fastest measured candidate within the budget that reaches --target-recall")
    q.add_argument("--budget-bytes", type=float, metavar="B",
                   help="bytes per image for the whole index, every file counted, the store included (auto chooses "
                        "within it)")
    q.add_argument("--target-recall", type=float, default=TARGET_RECALL, metavar="R",
                   help=f"recall@S against the exact scan that auto must reach on held-out queries (default "
                        f"{TARGET_RECALL})")
    f.input("--recall-queries", metavar="DIR", help="a dataset folder whose {globals}_query_global.pt are the "
                                                   "held-out queries (default: gallery images, each removed from "
                                                   "its own ground truth)")
    q.add_argument("--allow-below-target", action="store_true",
                   help="build the best candidate when none reaches --target-recall (said so) instead of refusing")
    q.add_argument("--train-sample", type=int, help=f"gallery vectors a faiss first stage is trained on (default "
                                                    f"min(images, {TRAIN_SAMPLE:,}))")
    KnobArgs("the default a search runs with").add(q)
    q.add_argument("--shards", type=int, default=1, help="split the gallery's rows into this many indexes, each "
                                                         "with its own first stage and store (default 1)")
    OutputArgs("the index folder to write", required=True, force="replace an existing index (or store)").add(q, f)
    q.set_defaults(run=cmd_index)
    report_command(index, "info", "what an index (or a store) holds, and its measured bytes per image", cmd_index,
                   ("index", "the index folder (or an AMES store folder)"))

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
    BackendArgs("folder of the extractor's and re-ranker's graphs / engines", precision="which exported graphs or "
                "engines", checkpoint="torch backend: the extractor's dinov2_vitb14_reg4_pretrain.pth").add(p, f)
    f.input("--detector", help="torch backend: the extractor's dinov2_detector.pt")
    f.input("--rerank-checkpoint", help="torch backend: the re-ranker's checkpoint")
    f.input("--raml-checkpoint", help="an index with RAML's first stage: the 224-px student's checkpoint (torch)")
    f.value("--rerank", help="the index's re-ranker (default) or none: the first stage alone")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"results per query (default {DEFAULT_TOP})")
    SettingArgs(shortlist="images re-ranked per query (default: released, AMES 100)",
                lam="fusion weight (AMES λ); default: released", gamma="fusion temperature (AMES γ); default: "
                "released").add(p)
    KnobArgs("default: the index's").add(p)
    OutputArgs("write the results as JSON (default: a table per query)").add(p, f)
    p.set_defaults(run=cmd_search)
