"""One declarative ExportSpec per model: the single source of what an exported graph looks like.

Input/output names and dtypes, symbolic dimensions with their default TensorRT optimisation profiles
(min/opt/max), realistic dummy inputs, the shapes validation runs at, tolerances, and the FP32 islands
of the FP16 graph. Sizes that are not symbolic (descriptor dimensions, 48 locals per LOCORE image)
come from the model's configuration (`rerankrt.models.configs`), so a spec is built per configuration
with `spec_for(name, config)`. numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rerankrt.models.configs import (
    AmesConfig,
    CvnetBackboneConfig,
    CvnetConfig,
    LocoreConfig,
    R2FormerConfig,
    RamlConfig,
    RrtConfig,
)
from rerankrt.models.registry import get_info


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
    dtype: str  #: "float" (float32 in the FP32 graph, float16 in the FP16 graph) or "bool"
    shape: tuple[str | int, ...]  #: symbolic dimensions by name, fixed ones by size


Shape = dict[str, int]
InputMaker = Callable[[Shape, np.random.Generator, bool], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


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
        dtypes = {"float": {"fp32": "float32", "fp16": "float16"}, "bool": {"fp32": "bool", "fp16": "bool"}}

        def tensors(ts: tuple[TensorSpec, ...]) -> list[dict]:
            return [{"name": t.name, "dtype": {p: dtypes[t.dtype][p] for p in precisions}, "shape": list(t.shape)}
                    for t in ts]

        return {"inputs": tensors(self.inputs), "outputs": tensors(self.outputs),
                "profiles": {d: dataclasses.asdict(p) for d, p in self.profiles.items()}}

    def dims(self) -> dict[str, dict[int, str]]:
        """`dynamic_shapes` for torch.onnx.export: input name → {axis: symbolic name}."""
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs}


def _unit(rng: np.random.Generator, shape: tuple[int, ...], valid: np.ndarray | None = None):
    """Unit-norm float32 rows; rows at or past `valid` (per leading index) are zero padding (True)."""
    x = rng.standard_normal(shape).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    if valid is None:
        return x
    mask = np.arange(shape[-2]) >= valid[..., None]
    x[mask] = 0.0
    return x, mask


def _valid_counts(rng: np.random.Generator, lead: tuple[int, ...], n: int) -> np.ndarray:
    """How many descriptors each image has: mostly full, some padded, never empty."""
    counts = np.where(rng.random(lead) < 0.7, n, rng.integers(1, n + 1, lead))
    return counts.astype(np.int64)


def _ames(cfg: AmesConfig, name: str) -> ExportSpec:
    d = cfg.local_dim

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b, q, t = shape["pairs"], shape["query_descriptors"], shape["db_descriptors"]
        q_desc, q_mask = _unit(rng, (1 if one_query else b, q, d), _valid_counts(rng, (1 if one_query else b,), q))
        db_desc, db_mask = _unit(rng, (b, t, d), _valid_counts(rng, (b,), t))
        if one_query:
            q_desc, q_mask = np.repeat(q_desc, b, axis=0), np.repeat(q_mask, b, axis=0)
        return {"q_desc": q_desc, "q_mask": q_mask, "db_desc": db_desc, "db_mask": db_mask}

    dims = ("pairs", "query_descriptors")
    return ExportSpec(
        model=name,
        inputs=(
            TensorSpec("q_desc", "float", (*dims, d)),
            TensorSpec("q_mask", "bool", dims),
            TensorSpec("db_desc", "float", ("pairs", "db_descriptors", d)),
            TensorSpec("db_mask", "bool", ("pairs", "db_descriptors")),
        ),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        profiles={"pairs": Profile(1, 100, 400), "query_descriptors": Profile(1, cfg.query_descriptors, 1024),
                  "db_descriptors": Profile(1, cfg.db_descriptors, 1024)},
        trace={"pairs": 3, "query_descriptors": 23, "db_descriptors": 11},
        checks=({"pairs": 1, "query_descriptors": 1, "db_descriptors": 1},
                {"pairs": 7, "query_descriptors": 37, "db_descriptors": 5},
                {"pairs": 100, "query_descriptors": cfg.query_descriptors, "db_descriptors": cfg.db_descriptors}),
        make_inputs=make,
        # sign() of ames-dist flips for projections within rounding of 0, so its FP32 tolerance is wider.
        fp32=Tolerance(1e-3 if cfg.binarized else 1e-4, 1e-4),
        fp16=Tolerance(2e-2, 1e-2),
        fp32_islands=("L2 normalisation of descriptors (zero padded rows: 0/0 in fp16)",
                      "LayerNorm (overflow)", "attention scores, the padding bias and softmax (fp32-min bias)"),
        ranking={"pairs": 100, "query_descriptors": cfg.query_descriptors, "db_descriptors": cfg.db_descriptors},
        overflow_checks=({"pairs": 8, "query_descriptors": cfg.query_descriptors,
                          "db_descriptors": cfg.db_descriptors},),
    )


def _locore(cfg: LocoreConfig, name: str) -> ExportSpec:
    n, d, dg = cfg.local_descriptors, cfg.local_dim, cfg.global_dim
    k_max = min(cfg.window, (cfg.max_positions - 2) // (n + 2) - 1)  # the position table bounds K
    if k_max < 2:
        raise ValueError(f"{name}: the position table ({cfg.max_positions}) leaves K ≤ {k_max} with {n} locals")

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b, k = shape["batch"], shape["images"]
        q_local, q_mask = _unit(rng, (b, n, d), _valid_counts(rng, (b,), n))
        g_local, g_mask = _unit(rng, (b, k, n, d), _valid_counts(rng, (b, k), n))
        return {"q_global": _unit(rng, (b, dg)), "q_local": q_local, "q_mask": q_mask,
                "g_global": _unit(rng, (b, k, dg)), "g_local": g_local, "g_mask": g_mask}

    return ExportSpec(
        model=name,
        inputs=(
            TensorSpec("q_global", "float", ("batch", dg)),
            TensorSpec("q_local", "float", ("batch", n, d)),
            TensorSpec("q_mask", "bool", ("batch", n)),
            TensorSpec("g_global", "float", ("batch", "images", dg)),
            TensorSpec("g_local", "float", ("batch", "images", n, d)),
            TensorSpec("g_mask", "bool", ("batch", "images", n)),
        ),
        outputs=(TensorSpec("scores", "float", ("batch", "images")),),
        profiles={"batch": Profile(1, 1, 4), "images": Profile(1, k_max, k_max)},
        trace={"batch": 2, "images": min(7, k_max)},
        checks=({"batch": 1, "images": k_max}, {"batch": 2, "images": 3}, {"batch": 1, "images": 1}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-4),
        fp16=Tolerance(5e-2, 1e-2),
        fp32_islands=("LayerNorm (overflow)", "attention scores, the padding/band bias and softmax"),
        ranking={"batch": 1, "images": k_max},
        ranking_axis=1,
        overflow_checks=({"batch": 1, "images": min(10, k_max)},),
    )


def _raml(cfg: RamlConfig, name: str) -> ExportSpec:
    size = cfg.student_size

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        # ImageNet-normalised pixels: roughly standard normal.
        return {"images": rng.standard_normal((shape["batch"], 3, shape["height"], shape["width"]), np.float32)}

    return ExportSpec(
        model=name,
        inputs=(TensorSpec("images", "float", ("batch", 3, "height", "width")),),
        outputs=(TensorSpec("descriptors", "float", ("batch", cfg.output_dim)),),
        profiles={"batch": Profile(1, 1, 32), "height": Profile(size, size, size), "width": Profile(size, size, size)},
        trace={"batch": 2, "height": size, "width": size},
        checks=({"batch": 1, "height": size, "width": size}, {"batch": 3, "height": size, "width": size},
                {"batch": 5, "height": size, "width": size}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-3),
        fp16=Tolerance(5e-3, 1e-2),
        fp32_islands=("GeM's clamp, power and mean (x³ overflows fp16)", "L2 normalisation"),
        overflow_checks=({"batch": 2, "height": size, "width": size},),
    )


def _rrt(cfg: RrtConfig, name: str) -> ExportSpec:
    """RRT as a latency baseline: the graph leaves the scale indices at 0 (no int64 graph inputs; the
    cost does not depend on them)."""
    d, n = cfg.model_dim, cfg.local_descriptors

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b, l1, l2 = shape["pairs"], shape["src_descriptors"], shape["tgt_descriptors"]
        src = 1 if one_query else b
        src_local, src_mask = _unit(rng, (src, l1, d), _valid_counts(rng, (src,), l1))
        tgt_local, tgt_mask = _unit(rng, (b, l2, d), _valid_counts(rng, (b,), l2))
        src_global = _unit(rng, (src, cfg.global_dim))
        if one_query:
            src_global, src_local, src_mask = (np.repeat(a, b, axis=0) for a in (src_global, src_local, src_mask))
        return {"src_global": src_global, "src_local": src_local, "src_mask": src_mask,
                "tgt_global": _unit(rng, (b, cfg.global_dim)), "tgt_local": tgt_local, "tgt_mask": tgt_mask}

    return ExportSpec(
        model=name,
        inputs=(
            TensorSpec("src_global", "float", ("pairs", cfg.global_dim)),
            TensorSpec("src_local", "float", ("pairs", "src_descriptors", d)),
            TensorSpec("src_mask", "bool", ("pairs", "src_descriptors")),
            TensorSpec("tgt_global", "float", ("pairs", cfg.global_dim)),
            TensorSpec("tgt_local", "float", ("pairs", "tgt_descriptors", d)),
            TensorSpec("tgt_mask", "bool", ("pairs", "tgt_descriptors")),
        ),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        profiles={"pairs": Profile(1, 100, 400), "src_descriptors": Profile(1, n, n),
                  "tgt_descriptors": Profile(1, n, n)},
        trace={"pairs": 3, "src_descriptors": 23, "tgt_descriptors": 11},
        checks=({"pairs": 1, "src_descriptors": 1, "tgt_descriptors": 1},
                {"pairs": 5, "src_descriptors": 37, "tgt_descriptors": 20},
                {"pairs": 20, "src_descriptors": n, "tgt_descriptors": n}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-4),
        fp16=Tolerance(2e-2, 1e-2),
        fp32_islands=("L2 normalisation", "LayerNorm (overflow)", "attention scores, the padding bias and softmax"),
        ranking={"pairs": 100, "src_descriptors": n, "tgt_descriptors": n},
        overflow_checks=({"pairs": 4, "src_descriptors": n, "tgt_descriptors": n},),
    )


def _r2former(cfg: R2FormerConfig, name: str) -> ExportSpec:
    """R2Former: 500 tokens per image as released, fewer allowed (never under the 5 correspondences).
    Up to 100 pairs per call: the 1001-token attention holds 4 × 1001² scores per pair."""
    dim, n = cfg.token_dim, cfg.tokens

    def tokens(rng: np.random.Generator, b: int, length: int) -> np.ndarray:
        xya = rng.random((b, length, 3), dtype=np.float32)  # x, y over max(H, W); attention over its max
        return np.concatenate([xya, _unit(rng, (b, length, cfg.local_dim))], axis=-1)

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b = shape["pairs"]
        q = tokens(rng, 1 if one_query else b, shape["query_tokens"])
        return {"q_tokens": np.repeat(q, b, axis=0) if one_query else q,
                "db_tokens": tokens(rng, b, shape["db_tokens"])}

    k = cfg.num_corr
    return ExportSpec(
        model=name,
        inputs=(TensorSpec("q_tokens", "float", ("pairs", "query_tokens", dim)),
                TensorSpec("db_tokens", "float", ("pairs", "db_tokens", dim))),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        profiles={"pairs": Profile(1, 50, 100), "query_tokens": Profile(k, n, n), "db_tokens": Profile(k, n, n)},
        trace={"pairs": 3, "query_tokens": min(23, n), "db_tokens": min(11, n - 1)},
        checks=({"pairs": 1, "query_tokens": k, "db_tokens": k},
                {"pairs": 4, "query_tokens": min(37, n), "db_tokens": min(60, n)},
                {"pairs": 10, "query_tokens": n, "db_tokens": n}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-4),
        fp16=Tolerance(2e-2, 1e-2),  # and by ranking: the top-5 picks follow the inputs' fp16 rounding at near-ties
        fp32_islands=("correlation and the top-5 selection (near-ties)", "LayerNorm (overflow)",
                      "attention scores and softmax"),
        ranking={"pairs": 50, "query_tokens": n, "db_tokens": n},
        overflow_checks=({"pairs": 2, "query_tokens": n, "db_tokens": n},),
    )


def _cvnet(cfg: CvnetConfig, name: str) -> ExportSpec:
    """CVNet-Rerank's head at fixed map sizes (dynamic H/W export specialises: one graph per size). Up to 8
    pairs per call: the 9-channel 4D correlation alone is 340 MB per pair at 48×64 in fp32."""
    shape_ = (cfg.feature_dim, cfg.map_height, cfg.map_width)

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b = shape["pairs"]
        q = rng.standard_normal((1 if one_query else b, *shape_), dtype=np.float32)  # pre-ReLU stage-3 maps
        return {"q_map": np.repeat(q, b, axis=0) if one_query else q,
                "db_map": rng.standard_normal((b, *shape_), dtype=np.float32)}

    return ExportSpec(
        model=name,
        inputs=(TensorSpec("q_map", "float", ("pairs", *shape_)), TensorSpec("db_map", "float", ("pairs", *shape_))),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        profiles={"pairs": Profile(1, 4, 8)},
        trace={"pairs": 3},
        checks=({"pairs": 1}, {"pairs": 2}, {"pairs": 5}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-4),
        fp16=Tolerance(5e-2, 5e-2),
        fp32_islands=("cosine correlation (the 1e-8 underflows, squared norms overflow)",
                      "GroupNorm (variance)"),
        ranking={"pairs": 8},
        overflow_checks=({"pairs": 1},),
    )


def _cvnet_backbone(cfg: CvnetBackboneConfig, name: str) -> ExportSpec:
    """CVNet's backbone to stage 3 at the evaluation resolution, fixed (as the head's map sizes are)."""
    h, w = cfg.image_height, cfg.image_width

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        return {"images": rng.standard_normal((shape["batch"], 3, h, w), np.float32)}

    return ExportSpec(
        model=name,
        inputs=(TensorSpec("images", "float", ("batch", 3, h, w)),),
        outputs=(TensorSpec("maps", "float", ("batch", 1024, -(-h // 16), -(-w // 16))),),  # stride 16
        profiles={"batch": Profile(1, 1, 8)},
        trace={"batch": 2},
        checks=({"batch": 1}, {"batch": 3}, {"batch": 4}),
        make_inputs=make,
        fp32=Tolerance(1e-3, 1e-3),
        fp16=Tolerance(5e-2, 2e-2),
        fp32_islands=(),
        overflow_checks=({"batch": 1},),
    )


_BUILDERS: dict[type, Callable] = {AmesConfig: _ames, LocoreConfig: _locore, RamlConfig: _raml, RrtConfig: _rrt,
                                   R2FormerConfig: _r2former, CvnetConfig: _cvnet,
                                   CvnetBackboneConfig: _cvnet_backbone}


def spec_for(name: str, config=None) -> ExportSpec:
    """The ExportSpec of registered model `name` in `config` (default: its released configuration)."""
    info = get_info(name)
    cfg = info.config if config is None else config
    spec = _BUILDERS[type(cfg)](cfg, name)
    spec.check_profiles()
    return spec
