"""Datasets in the official layout: `rerankrt rerank`, `eval`, `extract`, `shortlist` and `data synth`."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from rerankrt.cli.args import BackendArgs, DatasetArgs, OutputArgs, SettingArgs, in_data, log, part_files
from rerankrt.cli.paths import Flags
from rerankrt.core import environment
from rerankrt.models import names
from rerankrt.runtime.naming import PRECISIONS

#: how a dataset loop's re-ranker is opened (`rerank`, `eval`)
RERANKER = BackendArgs("folder of NAME.onnx / NAME.plan", engine=True,
                       checkpoint="the official checkpoint (the torch backend; picked by --backend auto without "
                                  "--artifacts)")


def _loop_flags(p: argparse.ArgumentParser, f: Flags) -> None:
    """A dataset loop's flags: the re-ranker and how it is opened, its store, the dataset, the run settings."""
    p.add_argument("--model", required=True, choices=names(loop=True))
    RERANKER.add(p, f)
    f.input("--index", metavar="INDEX", help="AMES: the database side from this index's store (index build)")
    DatasetArgs().add(p, f)
    SettingArgs().add(p)


def cmd_rerank(args: argparse.Namespace) -> int:
    from rerankrt.search.backends import open_reranking
    from rerankrt.search.rerank_dataset import rerank_dataset

    OutputArgs.check(args, [args.out])
    with contextlib.ExitStack() as stack:
        loop = open_reranking(stack, args.model, BackendArgs.request(args), args.index, log=log)
        out = rerank_dataset(loop.pop("backend"), args.data, args.out, args.shortlist, args.desc, args.nn,
                             args.lam, args.gamma, log=log, settings=SettingArgs.settings(args), **loop)
    log(f"wrote {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rerankrt.bench.eval import evaluate, format_comparison, format_table
    from rerankrt.core.atomic import write_json

    precisions = args.compare.split(",") if args.compare else [args.precision]
    if any(p not in PRECISIONS for p in precisions):
        raise ValueError(f"--compare: expected two of {', '.join(PRECISIONS)}, got {args.compare!r}")
    if args.out:  # checked, and its folder made, before the evaluation
        OutputArgs.check(args, [args.out])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = evaluate(args.model, BackendArgs.request(args), args.data, args.dataset, precisions, args.shortlist,
                      args.desc, args.nn, args.lam, args.gamma, args.plus1m, args.index,
                      SettingArgs.settings(args), log)
    print(format_table(args.dataset, report["tables"]))
    if len(precisions) == 2:
        print(format_comparison((precisions[0], precisions[1]), report))
    if args.out:
        report = {"settings": {k: v for k, v in vars(args).items() if k not in ("run", "paths")},
                  **report, "environment": environment.describe()}
        write_json(args.out, report, default=str)
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from rerankrt.core.atomic import check_outputs
    from rerankrt.core.progress import progress
    from rerankrt.data.descriptors import read_gnd
    from rerankrt.data.extraction import extract, image_list, output_paths, query_boxes
    from rerankrt.search.backends import open_model, open_raml

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
    request = BackendArgs.request(args, parts=part_files(args, "dinov2-extractor"))
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(open_model("dinov2-extractor", request, log=log))
        raml = open_raml(stack, args.split, args.raml_checkpoint, args.device) if args.raml_checkpoint else None
        out.mkdir(parents=True, exist_ok=True)
        written = extract(backend, images, out, args.split, args.imsize, args.topk, boxes, args.batch, raml=raml,
                          progress=lambda done, total: progress("extracting", done, total))
    log(f"wrote {', '.join(str(p) for p in written.values())}: {len(images)} images")
    return 0


def cmd_shortlist(args: argparse.Namespace) -> int:
    from rerankrt.data.dataset_layout import DatasetLayout
    from rerankrt.data.descriptors import read_global, write_nn
    from rerankrt.search.exact import global_shortlist

    layout = DatasetLayout(Path(args.data), args.desc)
    out = layout.root / args.out
    OutputArgs.check(args, [out])
    query, gallery = (read_global(layout.global_(s), args.dim) for s in ("query", "gallery"))
    sims, idx = global_shortlist(query, gallery, args.k)
    write_nn(out, sims, idx)
    log(f"wrote {out}: the {sims.shape[1]} nearest of {len(gallery)} gallery images for {len(query)} queries")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from rerankrt.bench.synth import synthesize

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise FileExistsError(f"data synth: {out} exists and is not empty (pass --force to replace its files)")
    root = synthesize(args.out, queries=args.queries, database=args.database, dim=args.dim, seed=args.seed)
    log(f"wrote a synthetic dataset to {root} (evaluate with --dataset synth)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("rerank", help="re-rank every query of a dataset in the official layout")
    f = Flags(p)
    _loop_flags(p, f)
    OutputArgs("the re-ranked shortlist, nn_*.pkl layout", required=True).add(p, f)
    p.set_defaults(run=cmd_rerank)

    p = sub.add_parser("eval", help="retrieval accuracy of a re-ranker on a dataset in the official layout")
    f = Flags(p)
    _loop_flags(p, f)
    f.value("--dataset", required=True, help="roxford5k, rparis6k, gldv2 or synth (its gnd_DATASET.pkl in --data)")
    f.value("--compare", help="e.g. fp32,int8: run both, report mAP deltas, Kendall tau, top-10 overlap")
    p.add_argument("--plus1m", action="store_true",
                   help="the folder holds the +1M files (virtual gallery + R1M HDF5 and its shortlist)")
    OutputArgs("write the tables and every setting as JSON").add(p, f)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("data", help="datasets: `data synth DIR` writes a small synthetic one")
    data = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    q = data.add_parser("synth", help="a synthetic dataset in the official layout with planted matches")
    f = Flags(q)
    OutputArgs("folder to write", whole=False, positional=True, force="write into a folder that is not empty").add(q, f)
    q.add_argument("--queries", type=int, default=6)
    q.add_argument("--database", type=int, default=120)
    q.add_argument("--dim", type=int, default=768)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(run=cmd_data_synth)

    p = sub.add_parser("extract", help="images in, DINOv2 descriptors out: the official dataset files")
    f = Flags(p)
    f.input("--images", required=True, help="a folder (sorted file names) or a list file (one path a line)")
    p.add_argument("--split", required=True, choices=["query", "gallery"])
    OutputArgs("the dataset folder (it may hold the other split already)", required=True, whole=False,
               force="replace the files of this split").add(p, f)
    p.add_argument("--imsize", type=int, default=770, help="the longer side in pixels (default 770)")
    p.add_argument("--topk", type=int, default=700, help="descriptors kept per image (default 700)")
    f.input("--gnd", help="a revisited gnd_*.pkl: query images are cropped to their bbx")
    BackendArgs("folder of dinov2-extractor.onnx / .plan",
                checkpoint="torch backend: dinov2_vitb14_reg4_pretrain.pth (picked by --backend auto without "
                           "--artifacts)").add(p, f)
    f.input("--detector", help="torch backend: dinov2_detector.pt")
    f.input("--raml-checkpoint", help="also RAML's global vectors (raml_SPLIT_global.pt), torch backend: the "
                                      "448-px teacher's checkpoint for the gallery, the 224-px student's for queries")
    p.add_argument("--batch", type=int, default=8, help="images of one size per backend call (default 8)")
    p.set_defaults(run=cmd_extract)

    p = sub.add_parser("shortlist", help="a first stage from the extracted global vectors: exact cosine top-k")
    f = Flags(p)
    f.input("--data", required=True, help="dataset folder: {desc}_query_global.pt, {desc}_gallery_global.pt",
            files=lambda a: [Path(a.data) / f"{a.desc}_{s}_global.pt" for s in ("query", "gallery")])
    f.value("--desc", default="dinov2", help="which global vectors (default dinov2; raml for RAML's)")
    p.add_argument("--dim", type=int, default=768, help="their dimension (DINOv2 768, RAML 512)")
    p.add_argument("--k", type=int, default=1600, help="neighbours kept per query (default 1600)")
    OutputArgs("file name in --data (default nn_dinov2.pkl)", default="nn_dinov2.pkl", files=in_data("out")).add(p, f)
    p.set_defaults(run=cmd_shortlist)
