"""The backend contract: feeds in, outputs out, checked the same way whatever runs the model.

A backend is a context manager with `infer(feeds: dict[str, array]) → dict[str, np.ndarray]`, as
Polygraphy's runners are. `Backend` holds what every backend shares: the sidecar (`meta`: model, kind,
loop, configuration, I/O, profiles), the entered state, and the feed check that runs before every call
(names, dtypes, fixed sizes, one size per symbolic dimension, sizes inside the optimisation profile,
no NaN or infinity), so a bad feed fails with the same message on TensorRT, ONNX Runtime, torch or a
Triton BLS call. Subclasses implement `open`, `close` and `infer_impl`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from rerankrt.core.errors import InputError, OutputError

DTYPES = {"float32": np.float32, "float16": np.float16, "bool": np.bool_, "int64": np.int64}


@dataclass(frozen=True)
class IOSpec:
    """A graph input or output with a concrete dtype (the sidecar's dtype at one precision)."""

    name: str
    dtype: np.dtype
    shape: tuple[str | int, ...]  #: symbolic dimensions by name, fixed ones by size


def _shape_and_dtype(x) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) of a numpy array or a CUDA array (`__cuda_array_interface__`, e.g. a torch tensor)."""
    if isinstance(x, np.ndarray):
        return x.shape, x.dtype
    iface = getattr(x, "__cuda_array_interface__", None)
    if iface is not None:
        return tuple(iface["shape"]), np.dtype(iface["typestr"])
    return None


class FeedChecker:
    """Checks feeds against a sidecar's inputs and profiles (shared by every backend)."""

    def __init__(self, meta: dict, precision: str) -> None:
        self.inputs = [IOSpec(t["name"], np.dtype(DTYPES[t["dtype"][precision]]), tuple(t["shape"]))
                       for t in meta["inputs"]]
        self.outputs = [IOSpec(t["name"], np.dtype(DTYPES[t["dtype"][precision]]), tuple(t["shape"]))
                        for t in meta["outputs"]]
        self.profiles: dict[str, dict[str, int]] = meta["profiles"]

    def __call__(self, feeds: dict) -> dict[str, int]:
        """Raises InputError on the first problem; returns the size of every symbolic dimension."""
        names = [s.name for s in self.inputs]
        missing, extra = [n for n in names if n not in feeds], sorted(set(feeds) - set(names))
        if missing or extra:
            raise InputError(f"feeds: expected inputs {names}; missing {missing}, unexpected {extra}")
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            described = _shape_and_dtype(feeds[spec.name])
            if described is None:
                raise InputError(f"{spec.name}: expected a numpy array (or a CUDA array), "
                                 f"got {type(feeds[spec.name]).__name__}")
            shape, dtype = described
            if dtype != spec.dtype:
                raise InputError(f"{spec.name}: expected dtype {spec.dtype}, got {dtype}")
            if len(shape) != len(spec.shape):
                raise InputError(f"{spec.name}: expected {len(spec.shape)} dimensions {list(spec.shape)}, "
                                 f"got shape {list(shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise InputError(f"{spec.name}: expected size {want} on axis {axis}, got shape {list(shape)}")
                if isinstance(want, str):
                    if sizes.setdefault(want, got) != got:
                        raise InputError(f"{spec.name}: dimension {want} is {got} here but {sizes[want]} in an "
                                         f"earlier input")
                    p = self.profiles[want]
                    if not p["min"] <= got <= p["max"]:
                        raise InputError(f"{spec.name}: {want}={got} is outside the optimisation profile "
                                         f"{p['min']}…{p['max']} (opt {p['opt']})")
        return sizes

    def finite(self, feeds: dict, trusted: Collection[str] = ()) -> None:
        """NaN and infinity in the floating host inputs but the `trusted` (a device array is the caller's to
        check: reading it back would cost the copy zero-copy feeds avoid)."""
        for spec in self.inputs:
            x = feeds[spec.name]
            if spec.name in trusted:
                continue
            if isinstance(x, np.ndarray) and x.dtype != np.bool_ and not np.isfinite(x).all():
                raise InputError(f"{spec.name}: contains {int((~np.isfinite(x)).sum())} NaN or infinite values")

    def finite_outputs(self, outputs: dict, model: str, precision: str) -> None:
        """NaN and infinity in host outputs, before anything ranks or writes them (finite feeds were
        checked, so the model made them: its weights, or an FP16 overflow)."""
        for name, x in outputs.items():
            if isinstance(x, np.ndarray) and x.dtype != np.bool_ and not np.isfinite(x).all():
                raise OutputError(f"{model} ({precision}) returned {int((~np.isfinite(x)).sum())} NaN or infinite "
                                  f"values in {name} for finite inputs (its weights, or an FP16 overflow)")


class Backend:
    """The shared half of every backend. `meta` is the model's sidecar (an exported graph's `NAME.json`, or
    the same description built from the registry for torch), `precision` the graph's ("fp32" or "fp16")."""

    def __init__(self, name: str, meta: dict, precision: str) -> None:
        self.name = name
        self.entered = False
        self.set_meta(meta, precision)

    def set_meta(self, meta: dict, precision: str) -> None:
        """The model's description and the feed check that follows from it."""
        self.meta, self.precision = meta, precision
        self.check = FeedChecker(meta, precision)

    def __enter__(self):
        self.open()
        self.entered = True
        return self

    def __exit__(self, *exc) -> None:
        self.entered = False
        self.close()

    def open(self) -> None:
        """Load the model (sessions, engines, weights); called on entering the `with` block."""

    def close(self) -> None:
        """Release what `open` took; called on leaving the `with` block."""

    def infer(self, feeds: dict, trusted: Collection[str] = ()) -> dict[str, np.ndarray]:
        """The outputs by name for checked feeds (numpy arrays by input name). `trusted`: inputs the caller
        checked for NaN once already and feeds again unchanged (a gallery scanned per call would cost more
        than the call)."""
        if not self.entered:
            raise RuntimeError(f"{self.name}: use the backend inside a `with` block")
        self.check(feeds)
        self.check.finite(feeds, trusted)
        outputs = self.infer_impl(feeds)
        self.check.finite_outputs(outputs, self.meta["model"], self.precision)
        return outputs

    def infer_impl(self, feeds: dict) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def config(self) -> dict:
        """The model's configuration, as exported (released settings included)."""
        return self.meta["config"]

    def input_specs(self) -> list[IOSpec]:
        return list(self.check.inputs)

    def output_specs(self) -> list[IOSpec]:
        return list(self.check.outputs)

    def profiles(self) -> dict[str, dict[str, int]]:
        """{symbolic dimension: {"min", "opt", "max"}}: the sizes the backend accepts."""
        return self.check.profiles

    def weight_bytes(self) -> int | None:
        """The bytes of weights a call reads (for the profiler's roofline); None where not known."""
        return None

    def float_dtype(self) -> np.dtype:
        """The dtype of the floating inputs (float32 or float16)."""
        return next(s.dtype for s in self.check.inputs if s.dtype != np.bool_)
