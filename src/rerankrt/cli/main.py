"""rerankrt: image-retrieval re-rankers (RAML, AMES, LOCORE) from PyTorch checkpoints to ONNX and TensorRT.

Each command group is a module of `rerankrt.cli` that declares its parsers from the shared argument groups
(`cli.args`) and runs one library call; this module composes them and maps failures to exit codes: a
bad input or environment is one line and exit 2, a measurement that refuses (an INT8 graph that would
reorder the shortlists, no first stage within the budget reaching the target recall) its figures and exit 1.
An error names the library parameter at fault (`core.errors`); it is printed in the command's flags
(`core.flags.in_flags`).
"""

from __future__ import annotations

import argparse
import sys

from rerankrt.cli import bench, datasets, export, info, search, serve
from rerankrt.core.errors import QuantizationError, ServerError, TargetNotMetError, UnavailableError
from rerankrt.core.flags import in_flags

#: the command groups, in the order `rerankrt --help` lists them
GROUPS = (info, export, bench, datasets, search, serve)


def build_parser() -> argparse.ArgumentParser:
    from rerankrt.core.environment import __version__

    parser = argparse.ArgumentParser(prog="rerankrt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"rerankrt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
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
    except (QuantizationError, TargetNotMetError) as e:  # measured, not malformed: the figures say why
        print(f"rerankrt {args.command}: {in_flags(e, parser(args))}", file=sys.stderr)
        return 1
    except (ValueError, OSError, UnavailableError, ServerError) as e:  # bad input or environment: the message says it
        print(f"rerankrt {args.command}: error: {in_flags(e, parser(args))}", file=sys.stderr)
        return 2


def parser(args: argparse.Namespace) -> argparse.ArgumentParser | None:
    """The parser of the sub-command that ran (`cli.paths.Flags` carries it)."""
    paths = getattr(args, "paths", None)
    return paths.parser if paths is not None else None
