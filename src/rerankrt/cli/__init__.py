"""The `rerankrt` command line: parse, one library call, print."""

from rerankrt.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
