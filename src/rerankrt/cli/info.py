"""`rerankrt info` and `rerankrt models`: the machine, and the registered models."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from rerankrt.cli.args import report_command
from rerankrt.core import environment
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


def register(sub) -> None:
    report_command(sub, "info", "versions, the CPU and its instruction sets, ONNX Runtime providers, the CUDA device",
                   cmd_info)
    report_command(sub, "models", "registered models: parameters, released configuration, checkpoint format",
                   cmd_models)
