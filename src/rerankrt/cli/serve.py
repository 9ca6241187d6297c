"""Serving: `rerankrt triton` (a model repository, or its check) and `rerankrt serve` (a real server)."""

from __future__ import annotations

import argparse

from rerankrt.cli.args import OutputArgs, log
from rerankrt.cli.paths import Flags
from rerankrt.runtime.naming import PRECISIONS


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
                            args.queue_delay_us, args.force, log=log, stores=args.store, platform=args.platform,
                            index=args.index, max_shortlist=args.max_shortlist)
    print(f"{repo}: the repository validates; serve it with `rerankrt serve {repo}` (or `tritonserver "
          f"--model-repository {repo.resolve()}` in the NGC container)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Triton on the repository until SIGTERM or SIGINT, which go to the server; exits when it has stopped."""
    import signal

    from rerankrt.serve.server import TritonServer

    server = TritonServer(args.repo, args.http_port, args.grpc_port, args.metrics_port, args.host,
                          args.tritonserver, args.python_env, log=log)
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
        log(f"rerankrt serve: stopped ({signal.Signals(stopping[0]).name}), tritonserver exited with {code}"
            + (f": {server.last_error()}" if code else ""))
        return 0
    log(f"rerankrt serve: tritonserver exited with {code}: {server.last_error()}")
    return 1


def register(sub) -> None:
    p = sub.add_parser("triton", help="a Triton Inference Server model repository from exported graphs and engines")
    f = Flags(p)
    f.input("--artifacts", help="folder of exported NAME.onnx / NAME.fp16.onnx (+ NAME.json) and NAME*.plan")
    OutputArgs("the repository folder to write", force="replace a repository rerankrt wrote before").add(p, f)
    f.input("--check", metavar="REPO", help="only validate an existing repository")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="which graph or engine to serve")
    f.value("--models", help="comma-separated subset of the exported models (default: all)")
    p.add_argument("--max-batch", type=int, help="cap max_batch_size (default: each profile's maximum)")
    p.add_argument("--instances", type=int, default=1, help="instances of each model (default 1)")
    p.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batching queue delay (default 100)")
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
