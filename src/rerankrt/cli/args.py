"""The argument groups of the command line, each declared once (Polygraphy's argument groups are the model):
how a model is run (`BackendArgs`), what a command writes (`OutputArgs`), the dataset it reads
(`DatasetArgs`), a faiss first stage's search knobs (`KnobArgs`) and a loop's run settings (`SettingArgs`).
A command adds the groups it takes and reads each group's value back through it, so a flag's name, help
and meaning are the same in every command. Errors of the library name its parameters; `main` prints
them under the command's name."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from rerankrt.cli.paths import Flags
from rerankrt.models import MODELS
from rerankrt.runtime.naming import PRECISIONS
from rerankrt.runtime.request import DEFAULT_ARTIFACTS, KINDS, BackendRequest


def log(message: str) -> None:
    """Progress and what was written: stderr, so that stdout holds only a command's result."""
    print(message, file=sys.stderr, flush=True)


class BackendArgs:
    """--backend, --artifacts, --precision, --device, and where a command takes them --engine (an explicit
    file) and --checkpoint (the torch backend's weights): one `BackendRequest`."""

    def __init__(self, artifacts: str, precision: str = "which exported graph or engine", default: str = "fp32",
                 engine: bool = False, checkpoint: str | None = None) -> None:
        self.artifacts, self.precision, self.default = artifacts, precision, default
        self.engine, self.checkpoint = engine, checkpoint

    def add(self, p: argparse.ArgumentParser, f: Flags) -> None:
        p.add_argument("--backend", choices=KINDS, default="auto")
        f.input("--artifacts", help=f"{self.artifacts} (default {DEFAULT_ARTIFACTS})")
        if self.engine:
            f.input("--engine", help="an explicit .plan or .onnx instead of --artifacts")
        if self.checkpoint:
            f.input("--checkpoint", help=self.checkpoint)
        p.add_argument("--precision", choices=PRECISIONS, default=self.default, help=self.precision)
        f.value("--device", default="cpu", help="torch device, or cuda for ONNX Runtime's CUDA provider")

    @staticmethod
    def request(args: argparse.Namespace, precision: str | None = None, parts: dict | None = None) -> BackendRequest:
        """The request of the parsed flags (`precision` and `parts` where the command sets them itself)."""
        return BackendRequest(args.backend, args.artifacts, precision or args.precision, args.device,
                              getattr(args, "checkpoint", None), getattr(args, "engine", None), parts or {})


class OutputArgs:
    """--out and --force: what a command writes, refused where it exists unless --force, and never one of its
    inputs (`cli.paths`: checked in `main` for an output replaced whole, by `check` for the files a command
    writes into a folder)."""

    def __init__(self, help: str, required: bool = False, whole: bool = True, default: str | None = None,
                 files: Callable | None = None, force: str = "replace an existing --out", positional: bool = False):
        self.help, self.required, self.whole, self.default = help, required, whole, default
        self.files, self.force, self.positional = files, force, positional

    def add(self, p: argparse.ArgumentParser, f: Flags) -> None:
        kwargs: dict = {"help": self.help, "whole": self.whole, "files": self.files}
        if not self.positional:
            kwargs |= {"required": self.required, "default": self.default}
        f.output("out" if self.positional else "--out", **kwargs)
        p.add_argument("--force", action="store_true", help=self.force)

    @staticmethod
    def check(args: argparse.Namespace, outputs: Iterable[str | Path], inputs: Iterable[str | Path] = ()) -> None:
        """Refuse `outputs` that exist (without --force) or are inputs of the run, before any work."""
        from rerankrt.core.atomic import check_outputs

        check_outputs(list(outputs), [*inputs, *args.paths.inputs(args)], args.force)


def dataset_files(args: argparse.Namespace) -> list:
    """The files of --data a dataset loop reads: both splits' locals and globals, the ground truth."""
    from rerankrt.data.dataset_layout import DatasetLayout

    layout = DatasetLayout(Path(args.data), args.desc)
    return [*(f(s) for f in (layout.local, layout.global_) for s in ("query", "gallery")),
            *layout.root.glob("gnd_*.pkl")]


def in_data(name: str) -> Callable:
    """`files=` of a flag naming a file inside --data."""
    return lambda args: [Path(args.data) / getattr(args, name)]


class DatasetArgs:
    """--data (a folder in the official layout), --desc (its descriptor prefix) and, for a dataset loop,
    --nn (its first-stage shortlist)."""

    def __init__(self, nn: bool = True, files: Callable = dataset_files,
                 help: str = "dataset folder in the official layout") -> None:
        self.nn, self.files, self.help = nn, files, help

    def add(self, p: argparse.ArgumentParser, f: Flags) -> None:
        f.input("--data", required=True, files=self.files, help=self.help)
        f.value("--desc", default="dinov2", help="descriptor prefix of the files (default dinov2)")
        if self.nn:
            f.input("--nn", default="nn_superglobal.pkl", files=in_data("nn"),
                    help="first-stage shortlist file in --data")


class KnobArgs:
    """A faiss first stage's search knobs."""

    def __init__(self, default: str) -> None:
        self.default = default

    def add(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--nprobe", type=int, help=f"inverted lists a faiss IVF first stage probes ({self.default})")
        p.add_argument("--ef-search", type=int, help=f"a faiss HNSW first stage's efSearch ({self.default})")


#: the settings a command takes by a flag of their own (its dest: the name), so not by --setting as well
OWN_FLAGS = {"shortlist": "--shortlist", "lam": "--lambda", "gamma": "--gamma", "top": "--top", "nprobe": "--nprobe",
             "ef_search": "--ef-search"}


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


class SettingArgs:
    """A loop's run settings: --shortlist, --lambda, --gamma where the command takes them, and --setting
    NAME=VALUE for any other (the graph unchanged)."""

    def __init__(self, fusion: bool = True, shortlist: str = "images re-ranked per query (AMES 100, LOCORE 400)",
                 lam: str = "fusion weight (AMES λ, LOCORE α); default: released",
                 gamma: str = "fusion temperature (AMES γ, LOCORE t); default: released") -> None:
        self.fusion, self.shortlist, self.lam, self.gamma = fusion, shortlist, lam, gamma

    def add(self, p: argparse.ArgumentParser) -> None:
        if self.fusion:
            p.add_argument("--shortlist", type=int, help=self.shortlist)
            p.add_argument("--lambda", dest="lam", type=float, help=self.lam)
            p.add_argument("--gamma", type=float, help=self.gamma)
        p.add_argument("--setting", type=_run_setting, action="append", default=[], metavar="NAME=VALUE",
                       help="any other run setting of the model's loop, repeated (AMES: db_descriptors, batch; "
                            "LOCORE: window, stride, order, alpha, temperature); default: released")

    @staticmethod
    def settings(args: argparse.Namespace) -> dict:
        """--setting's pairs by name; one the command takes by its own flag is refused, so that each setting
        has one way in and none silently beats another."""
        settings = dict(args.setting)
        for name in settings:
            if name in OWN_FLAGS and hasattr(args, name):
                raise ValueError(f"--setting {name}: set by {OWN_FLAGS[name]}, not --setting")
        return settings


def part_files(args: argparse.Namespace, model: str) -> dict:
    """The part checkpoints given on the command line that `model` loads (the extractor's --detector)."""
    given = {"detector": getattr(args, "detector", None)}
    unused = [k for k, v in given.items() if v and k not in MODELS[model].parts]
    if unused:
        takers = [n for n, info in MODELS.items() if unused[0] in info.parts]
        raise ValueError(f"--{unused[0]}: {model} has no {unused[0]} (only {', '.join(takers)} takes one)")
    return {k: v for k, v in given.items() if v}


def report_command(sub, name: str, help: str, run: Callable, reads: tuple[str, str] | None = None) -> None:
    """A command that reports what it finds, as text or (`--json`) JSON: `reads` (positional name, help) is
    what it reads, where it reads a path."""
    p = sub.add_parser(name, help=help)
    if reads is not None:
        Flags(p).input(reads[0], help=reads[1])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)
