"""Library parameters as the command-line flags that set them: the one translation between the two
vocabularies. The library's errors name its parameters (`core.errors`); every command line (`rerankrt`, and
the `python -m rerankrt.bench.…` scripts) prints them through `in_flags`, so a flag renamed in a parser is
renamed in its errors too."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

#: library parameters set by a flag of another name (its dest); any other parameter is the dest of its flag
DESTS = {"weights.rerank": "rerank_checkpoint", "weights.raml": "raml_checkpoint", "globals_desc": "globals",
         "precisions": "precision"}


def _flags(parser: argparse.ArgumentParser | None) -> Callable[[str], str | None]:
    """The flag of `parser` that sets a library parameter (None: no flag of it does)."""
    flags = {a.dest: a.option_strings[0] if a.option_strings else a.dest.upper()
             for a in (parser._actions if parser else ())}  # argparse has no public list of a parser's flags
    return lambda param: flags.get(DESTS.get(param, param))


def text_in_flags(text: str, parser: argparse.ArgumentParser | None) -> str:
    """`text` (an error's message, a report) with each parameter named in backquotes as its flag."""
    flag = _flags(parser)
    return re.sub(r"`([a-z][a-z0-9_.]*)`", lambda m: flag(m[1]) or m[0], text)


def in_flags(error: BaseException, parser: argparse.ArgumentParser | None) -> str:
    """`error`'s message in the command's words: its parameter (`error.param`) and each parameter it names in
    backquotes as the flag of `parser` that sets it; a parameter no flag of the command sets stays as it is."""
    param = getattr(error, "param", None)
    flag = _flags(parser)(param) if param else None
    text = f"{flag}: {error.detail}" if flag else str(error)  # type: ignore[attr-defined]
    return text_in_flags(text, parser)
