"""The ExportSpec: the declarative description of what a model's exported graph looks like.

Input/output names and dtypes, symbolic dimensions with their default TensorRT optimisation profiles
(min/opt/max), realistic dummy inputs, the shapes validation runs at, tolerances, and the FP32 islands
of the FP16 graph. Each model's card (`rerankrt.models.cards`) builds its spec from a configuration;
`rerankrt.models.spec_for(name, config)` is the one way in. numpy only: the profiler and the validation ladder read
specs where torch is not installed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Profile:
    """A symbolic dimension's TensorRT optimisation profile."""

    min: int
    opt: int
    max: int

    def check(self, dim: str) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"profile {dim}: expected 1 ≤ min ≤ opt ≤ max, got {self.min}/{self.opt}/{self.max}")

    def covers(self, size: int) -> bool:
        return self.min <= size <= self.max


@dataclass(frozen=True)
class TensorSpec:
    name: str
    #: "float" (float32 in the FP32 graph, float16 in the FP16 graph), "half" (float16 in both: what a store
    #: keeps in fp16), "single" (float32 in both: an FP32 island's output), "index" (int64 rows) or "bool"
    dtype: str
    shape: tuple[str | int, ...]  #: symbolic dimensions by name, fixed ones by size


Shape = dict[str, int]
InputMaker = Callable[[Shape, np.random.Generator, bool], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Tolerance:
    """How far a graph's outputs may be from the reference's: Polygraphy's rule, an output fails when its
    error statistic exceeds both `atol` and `rtol` (relative)."""

    atol: float
    rtol: float
    #: `atol` is a fraction of each output's largest reference magnitude, not a fixed number: for outputs
    #: whose scale the weights set (the extractor's detector weights reach ~100 with trained BatchNorm
    #: statistics, where a unit-scale output stays below 1), the rounding grows with the scale
    scaled: bool = False
    #: the least share of each row of a `rank_outputs` output that the other runner's row holds too
    overlap: float = 1.0

    def atol_for(self, scale: float) -> float:
        """The absolute tolerance of an output whose largest reference magnitude is `scale`."""
        return self.atol * scale if self.scaled else self.atol


@dataclass(frozen=True)
class ExportSpec:
    model: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profiles: dict[str, Profile]  #: every symbolic dimension, with its default profile
    trace: Shape  #: the dummy shape torch.export traces (sizes ≥ 2 and distinct: no specialisation)
    checks: tuple[Shape, ...]  #: validation shapes inside the profiles, not only the traced one
    make_inputs: InputMaker  #: (shape, rng, one_query) → feeds; `one_query` repeats a single query
    fp32: Tolerance  #: ONNX Runtime FP32 vs PyTorch FP32
    fp16: Tolerance  #: the FP16 graph vs the FP32 result
    fp32_islands: tuple[str, ...]  #: what the FP16 graph computes in FP32, and why
    ranking: Shape | None = None  #: a shortlist shape for FP16-vs-FP32 ranking agreement
    ranking_axis: int = 0  #: the output axis that lists the shortlist's candidates
    overflow_checks: tuple[Shape, ...] = field(default=())  #: torch .half() shapes (CPU half is slow)
    #: how the tolerances apply to the outputs: "max" (every element) or "mean" (the mean |Δ|: bool codes,
    #: where a few bits flip for projections within rounding of 0)
    error_stat: str = "max"
    #: outputs that list gallery rows (a top-k's indices): compared as sets per row, their overlap at least
    #: the tolerance's `overlap` (FP16 reorders near-equal similarities), not by value
    rank_outputs: tuple[str, ...] = ()

    def feeds(self, shape: Shape, seed: int = 0, one_query: bool = False) -> dict[str, np.ndarray]:
        return self.make_inputs(shape, np.random.default_rng(seed), one_query)

    def with_profiles(self, overrides: dict[str, Profile]) -> ExportSpec:
        """The spec with some profiles replaced; every profile must still cover the traced shape."""
        unknown = sorted(set(overrides) - set(self.profiles))
        if unknown:
            raise ValueError(f"profile: unknown dimension {unknown} for {self.model}; known: {sorted(self.profiles)}")
        profiles = {**self.profiles, **overrides}
        checks = tuple(s for s in self.checks if all(profiles[d].covers(v) for d, v in s.items()))
        spec = dataclasses.replace(self, profiles=profiles, checks=checks)
        spec.check_profiles()
        return spec

    def check_profiles(self) -> None:
        for dim, profile in self.profiles.items():
            profile.check(dim)
            if not profile.covers(self.trace[dim]):
                raise ValueError(
                    f"profile {dim}: {profile.min}/{profile.opt}/{profile.max} does not cover the traced size "
                    f"{self.trace[dim]}"
                )

    def io_meta(self, precisions: list[str]) -> dict:
        """Inputs, outputs and profiles as the sidecar records them (dtype per precision)."""
        dtypes = {"float": {"fp32": "float32", "fp16": "float16"}, "half": {"fp32": "float16", "fp16": "float16"},
                  "single": {"fp32": "float32", "fp16": "float32"}, "index": {"fp32": "int64", "fp16": "int64"},
                  "bool": {"fp32": "bool", "fp16": "bool"}}
        for by_precision in dtypes.values():  # the INT8 graph quantizes inside: its I/O is the FP32 graph's
            by_precision["int8"] = by_precision["fp32"]

        def tensors(ts: tuple[TensorSpec, ...]) -> list[dict]:
            return [{"name": t.name, "dtype": {p: dtypes[t.dtype][p] for p in precisions}, "shape": list(t.shape)}
                    for t in ts]

        return {"inputs": tensors(self.inputs), "outputs": tensors(self.outputs),
                "profiles": {d: dataclasses.asdict(p) for d, p in self.profiles.items()}}

    def dims(self) -> tuple[dict[int, str], ...]:
        """`dynamic_shapes` for torch.onnx.export, in input order (the forward's argument names may differ
        from the graph's input names): {axis: symbolic name} per input."""
        return tuple({i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs)


def unit_rows(rng: np.random.Generator, shape: tuple[int, ...], valid: np.ndarray | None = None):
    """Unit-norm float32 rows; rows at or past `valid` (per leading index) are zero padding (True)."""
    x = rng.standard_normal(shape).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    if valid is None:
        return x
    mask = np.arange(shape[-2]) >= valid[..., None]
    x[mask] = 0.0
    return x, mask


def valid_counts(rng: np.random.Generator, lead: tuple[int, ...], n: int) -> np.ndarray:
    """How many descriptors each image has: mostly full, some padded, never empty."""
    counts = np.where(rng.random(lead) < 0.7, n, rng.integers(1, n + 1, lead))
    return counts.astype(np.int64)

