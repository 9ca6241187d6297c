"""A one-line progress bar on an interactive terminal (stderr); piped output and logs get none, only the
commands' own lines."""

from __future__ import annotations

import sys


def progress(label: str, done: int, total: int) -> None:
    """Draw `label [####....] done/total`, ending the line when done == total."""
    if not sys.stderr.isatty():
        return
    width = 24
    filled = width * done // total
    sys.stderr.write(f"\r  {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
                     + ("\n" if done == total else ""))
    sys.stderr.flush()
