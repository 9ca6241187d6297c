"""Eager-mode input checks shared by the reference models.

The checks read data (NaN scans), so they are skipped while torch.export traces a model (the exported
graph stays static and the runtime checks its own feeds) and inside `prechecked()` (a backend that
checked its feeds on the host).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from rerankrt.core.errors import InputError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


_PRECHECKED = threading.local()


def tracing() -> bool:
    """True while torch.export / dynamo traces the model (no data-dependent code paths then)."""
    return torch.compiler.is_compiling()


def checking() -> bool:
    """Whether a forward validates its inputs: not while tracing, not inside `prechecked()`."""
    return not tracing() and not getattr(_PRECHECKED, "active", False)


@contextlib.contextmanager
def prechecked() -> Iterator[None]:
    """Forwards in this block skip their input checks: the caller (a backend) has checked the feeds on
    the host already, and a NaN scan on the device would synchronise and break CUDA-graph capture."""
    previous = getattr(_PRECHECKED, "active", False)
    _PRECHECKED.active = True
    try:
        yield
    finally:
        _PRECHECKED.active = previous


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(int(d)) if not isinstance(d, str) else d for d in shape) + "]"


def check_float(name: str, x: torch.Tensor, expected: tuple) -> None:
    """`x` is a floating tensor whose shape matches `expected` (ints fixed, strings free)."""
    want = "[" + ", ".join(str(d) for d in expected) + "]"
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor of shape {want}, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise InputError(f"{name}: expected a floating dtype (float32, float16 or bfloat16), got {x.dtype}")
    if x.dim() != len(expected) or any(
        isinstance(e, int) and d != e for d, e in zip(x.shape, expected, strict=False)
    ):
        raise InputError(f"{name}: expected shape {want}, got {fmt_shape(x.shape)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"{name}: contains {bad} NaN or infinite values")


def check_mask(name: str, mask: torch.Tensor, shape: torch.Size) -> None:
    """`mask` is a bool padding mask (True = padding) of exactly `shape`."""
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"{name}: expected a bool torch.Tensor of shape {fmt_shape(shape)}, "
                         f"got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise InputError(f"{name}: expected dtype torch.bool (True = padding), got {mask.dtype}")
    if mask.shape != shape:
        raise InputError(f"{name}: expected shape {fmt_shape(shape)}, got {fmt_shape(mask.shape)}")


def check_nonempty(name: str, size: int, what: str) -> None:
    if size == 0:
        raise InputError(f"{name}: needs at least one {what}, got 0")
