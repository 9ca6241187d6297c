"""The `rerankrt` command: one entry point, a subcommand per job. Each delegates to a package."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from rerankrt import environment
from rerankrt.models import MODELS


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
        elif value is None:
            value = "not installed"
        print(f"{key:<22} {value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    torch_present = environment.package_version("torch") is not None
    rows = []
    for info in MODELS.values():
        if torch_present:
            from rerankrt.models import parameter_count

            params = f"{parameter_count(info.name):,}"
        else:
            params = "n/a (install rerankrt[export] for torch)"
        rows.append({"name": info.name, "summary": info.summary, "parameters": params,
                     "released_config": dataclasses.asdict(info.config), "checkpoint": info.checkpoint_format})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        config = ", ".join(f"{k}={v}" for k, v in row["released_config"].items())
        print(f"{row['name']}\n  {row['summary']}\n  parameters  {row['parameters']}\n"
              f"  released    {config}\n  checkpoint  {row['checkpoint']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rerankrt import __version__

    parser = argparse.ArgumentParser(prog="rerankrt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rerankrt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="versions, ONNX Runtime providers and the CUDA device")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_info)
    p = sub.add_parser("models", help="registered models: parameters, released configuration, checkpoint format")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # `rerankrt models | head`
        sys.stderr.close()
        return 0
