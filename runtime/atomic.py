"""Atomic file output: write to a temporary file beside the target, rename when complete.

A reader never sees half a file, and a failure (or Ctrl-C) leaves the previous file, or nothing. The
temporary files are named `.NAME.<random>.tmp` in the target's folder and get the mode a plain `open`
would (the umask's), not mkstemp's 0600.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def _temporary(path: Path) -> Path:
    """A new empty file beside `path`, created exclusively with the umask's mode."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield a temporary path beside each of `paths`; they replace their targets, in order, only if the
    block succeeds (a set of files written together: a graph pair and its sidecar)."""
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            temps.append(_temporary(target))
        yield temps
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; it replaces `path` only if the block succeeds."""
    with atomic_outputs([path]) as (tmp,):
        yield tmp
