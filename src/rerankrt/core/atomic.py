"""Atomic output: files and folders are written under a staging name beside their target and renamed
into place when complete.

- A reader never sees half a file, and a failure, Ctrl-C or kill leaves the previous file or folder (or
  nothing): the target is touched only by the final rename.
- Staging names are `.NAME.<pid>-<random>.rerankrt-partial`, recognisable in a listing. A process killed
  with SIGKILL cannot remove its own, so every later write of the same target first removes those that
  a process no longer running left (`clean_stale`).
- Files get the mode a plain `open` would (the umask's), not mkstemp's 0600.
- A folder replaces an existing one in one step where the OS has it (Linux's renameat2 with
  RENAME_EXCHANGE): a kill leaves either the old folder or the new one in place, never neither. Elsewhere
  the old folder is moved aside first, and a kill between the two renames leaves it under its staging name.
- A set of files written together (a graph pair and its sidecar) is renamed file by file, the sidecar
  last: a kill in that window of a few renames can leave a mix, which is why readers check a sidecar
  against its graph.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rerankrt.core.errors import OutputExistsError

#: the suffix of every staging file and folder
SUFFIX = ".rerankrt-partial"


def check_outputs(outputs: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike | None] = (),
                  force: bool = False, param: str = "out") -> None:
    """Before any work: refuse an output that exists (unless `force`), and, even with `force`, one that is
    an input of the run or a folder holding one (real paths compared, so `.` and symlinks count)."""
    given = [Path(i) for i in inputs if i]
    real = [i.resolve() for i in given]
    for out in map(Path, outputs):
        target = out.resolve()
        for path, resolved in zip(given, real, strict=True):
            if resolved == target or target in resolved.parents:
                relation = "is" if resolved == target else "holds"
                raise OutputExistsError(f"{out} {relation} an input of this run ({path}); choose another output",
                                        param=param)
        if out.exists() and not force:
            raise OutputExistsError(f"{out} exists (pass `force` to replace it)", param=param)


def check_replaceable(out: str | os.PathLike, force: bool, marker: str, what: str) -> None:
    """A folder written whole (an index, a store) replaces only one of its kind (`out` holds `marker`), and only
    with `force`: a user's folder is never emptied by a mistyped output path."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists (pass `force` to replace it)", param="out")
    if out.exists() and not (out / marker).is_file():
        raise OutputExistsError(f"{out} exists and is not {what}; refusing to replace it", param="out")


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}")


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or no way to tell: leave its files
        return True
    return True


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the staging files and folders of `path` left by processes that are no longer running (a
    killed export, Triton or index build); returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{8}}{re.escape(SUFFIX)}$")
    removed = []
    for sibling in path.parent.iterdir():
        match = pattern.match(sibling.name)
        if match and not _running(int(match.group(1))):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def _temporary(path: Path) -> Path:
    """A new empty file beside `path`, created exclusively with the umask's mode."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    clean_stale(path)
    while True:
        tmp = _staging(path)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield a temporary path beside each of `paths`; they replace their targets, in order, only if the
    block succeeds (a set of files written together: a graph pair and its sidecar, the sidecar last)."""
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


def write_json(path: str | os.PathLike, value, **dumps) -> None:
    """`value` as indented JSON with a final newline at `path`, atomically (the reports and measured/ files)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, **dumps) + "\n")


def staging_folder(path: str | os.PathLike) -> Path:
    """A new empty staging folder beside `path` (its folder created if needed, stale ones removed), for a
    writer that fills it over time and then calls `swap_in`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    staging = _staging(path)
    staging.mkdir()
    return staging


def swap_in(staging: Path, path: str | os.PathLike) -> None:
    """Put the folder `staging` at `path`, replacing the folder there in one step where the OS allows,
    then remove the old one."""
    path = Path(path)
    if not path.exists():
        os.replace(staging, path)
        return
    if not _exchange(staging, path):
        aside = _staging(path)
        os.replace(path, aside)
        os.replace(staging, path)
        os.replace(aside, staging)
    shutil.rmtree(staging, ignore_errors=True)  # the old folder; a kill here leaves it to `clean_stale`


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; it replaces `path` (an existing folder, or nothing)
    only if the block succeeds. Whether an existing folder may be replaced is the caller's decision."""
    staging = staging_folder(path)
    try:
        yield staging
        swap_in(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the OS or the file
    system has no such call."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))
