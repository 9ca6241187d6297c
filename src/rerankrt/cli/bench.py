"""`rerankrt bench`: the latency profile, a comparison of two runs, or searches timed stage by stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from rerankrt.cli.args import OutputArgs, SettingArgs, log, part_files
from rerankrt.cli.paths import Flags


def _split(text: str | None, kind=str) -> list:
    return [kind(t) for t in (text or "").split(",") if t]


def cmd_bench(args: argparse.Namespace) -> int:
    from rerankrt.bench.profile import preset_settings, run_bench, settings_by_model

    if args.compare:
        from rerankrt.bench.report import compare_runs, load_results

        a, b = args.compare
        print(compare_runs(load_results(a), load_results(b), (Path(a).parent.name or a, Path(b).parent.name or b)),
              end="")
        return 0
    if bool(args.search) != bool(args.images):
        raise ValueError("--search: the indexes to time searches over, with --images: the query images")
    if args.search:
        return _search(args, preset_settings(args.preset)["backends"])
    OutputArgs.check(args, [Path(args.out) / "results.json"])
    settings = preset_settings(args.preset, models=_split(args.models), backends=_split(args.backends),
                               precisions=_split(args.precision), shortlists=_split(args.shortlist, int),
                               batches=_split(args.batch, int), repeat=args.repeat)
    files = {}
    if args.checkpoint or args.detector:
        if len(settings["models"]) != 1:
            raise ValueError(f"--checkpoint: the weights of one model; pass --models with one of "
                             f"{', '.join(settings['models'])}")
        model = settings["models"][0]
        parts = part_files(args, model)
        if not args.checkpoint:
            raise ValueError(f"--detector: {model}'s parts load beside its --checkpoint")
        files[model] = {"checkpoint": args.checkpoint, **parts}
    results = run_bench(settings["models"], settings["backends"], settings["precisions"], settings["shortlists"],
                        settings["repeat"], Path(args.out), Path(args.artifacts) if args.artifacts else None,
                        args.device, args.preset, settings.get("configs"), log=log, batches=settings.get("batches"),
                        files=files, sized_for_gflops=None if args.repeat else settings.get("sized_for_gflops"),
                        settings=settings_by_model(settings["models"], SettingArgs.settings(args)))
    print((Path(args.out) / "results.md").read_text(), end="")
    return 0 if results["results"] else 1


def _search(args: argparse.Namespace, preset_backends: list[str]) -> int:
    from rerankrt.bench.search_latency import markdown, run_search_bench
    from rerankrt.data.extraction import image_list

    unused = [f for f in ("models", "shortlist", "batch", "repeat", "checkpoint", "detector", "setting")
              if getattr(args, f)]
    if unused:
        raise ValueError(f"--{unused[0]}: not a setting of --search (the index holds its models and shortlist)")
    backends = _split(args.backends) or preset_backends
    [precision, *more] = _split(args.precision) or ["fp32"]
    if more:
        raise ValueError(f"--precision: one precision with --search, got {args.precision}")
    OutputArgs.check(args, [Path(args.out) / name for name in ("search.json", "search.md")])
    print(markdown(run_search_bench(args.search, image_list(args.images), backends, args.artifacts,
                                    Path(args.out), precision, args.device, log=log)), end="")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="per-query re-ranking latency across models, backends and precisions")
    f = Flags(p)
    f.value("--preset", default="quick",
            help="quick (under 3 min on a 2-core CPU), paper (released configurations, S up to 1600: "
                 "a GPU job) or edge (batch 1, FP16 and INT8)")
    f.value("--models", help="comma-separated, e.g. ames,locore-small,raml")
    f.value("--backends", help="comma-separated from torch,ort,ort-fused,trt")
    f.value("--precision", help="comma-separated from fp32,fp16,int8")
    f.value("--shortlist", help="comma-separated shortlist sizes, e.g. 100,400,1600")
    f.value("--batch", help="comma-separated batch sizes of the encoders (RAML …), e.g. 1,8")
    p.add_argument("--repeat", type=int, help="timed repeats per case (interleaved across the cases of a size)")
    SettingArgs(fusion=False).add(p)
    f.input("--checkpoint", help="with one model in --models: its official checkpoint (default random weights)")
    f.input("--detector", help="with --models dinov2-extractor: the AMES detector's checkpoint")
    f.value("--device", default="cpu", help="cpu or cuda")
    f.input("--artifacts", help="folder of exported graphs / engines (default OUT/artifacts)")
    OutputArgs("results.json, results.csv, results.md, plots", whole=False, default="bench-results",
               force="replace the results of an earlier run in --out").add(p, f)
    f.input("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
            help="instead of measuring: the ratios of two results.json (e.g. FP32 vs FP16, two machines)")
    f.input("--search", nargs="+", metavar="INDEX",
            help="instead of the re-rankers: searches over each index (its re-ranker and its first stage alone) "
                 "per backend, stage by stage; search.json and search.md in --out")
    f.input("--images", help="with --search: the query images (a file, folder or list file)")
    p.set_defaults(run=cmd_bench)
