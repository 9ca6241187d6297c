"""`rerankrt build`: an exported ONNX graph → a TensorRT engine `NAME.plan` and its sidecar `NAME.plan.json`.

The network is strongly typed (FP16 engines come from the FP16 graph's own types, INT8 engines from the
INT8 graph's QuantizeLinear / DequantizeLinear pairs, explicit quantization; TensorRT 11 has no other way),
with one optimisation profile from the graph's sidecar unless overridden, a timing cache loaded and saved,
the builder optimisation level, a workspace limit and detailed profiling verbosity (for the engine
inspector). Both files are written atomically.

`import tensorrt` sits at the top for the type checker; `rerankrt.engines` imports this module lazily.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import tensorrt as trt

from rerankrt.core import environment
from rerankrt.core.atomic import atomic_output, atomic_outputs
from rerankrt.core.errors import InputError
from rerankrt.engines import trt_api
from rerankrt.engines.profiles import dim_profiles, profile_shapes
from rerankrt.runtime.naming import plan_sidecar_path
from rerankrt.runtime.plan import PLAN_FORMAT
from rerankrt.runtime.sidecar import precision_of, read_sidecar, sha256


def build_engine(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    profiles: dict[str, tuple[int, int, int]] | None = None,
    workspace_gb: float = 4.0,
    opt_level: int = 3,
    timing_cache: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Build the engine of `onnx_path` (with its sidecar); returns the plan's path."""
    onnx_path = Path(onnx_path)
    meta = read_sidecar(onnx_path)
    precision = precision_of(onnx_path, meta)
    plan_path = Path(out) if out else onnx_path.with_suffix(".plan")
    if not 0 <= opt_level <= 5:
        raise InputError(f"expected 0–5, got {opt_level}", param="opt_level")
    if workspace_gb <= 0:
        raise InputError(f"expected a positive number of GB, got {workspace_gb}", param="workspace")
    shapes = profile_shapes(meta, profiles)

    logger = trt_api.logger()
    builder = trt_api.builder(logger)
    network = builder.create_network(trt_api.network_flags())
    parser = trt.OnnxParser(network, logger)
    log(f"parsing {onnx_path} with TensorRT {trt_api.version()}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(trt_api.parser_errors(parser))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.builder_optimization_level = opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
    config.add_optimization_profile(profile)

    log(f"building {plan_path} ({precision}, optimisation level {opt_level})")
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the log above)")
    device = environment.cuda_device()
    sidecar = {
        "format": PLAN_FORMAT,
        "model": meta["model"],
        # the graph's sidecar with the engine's own profiles: what the backend checks feeds against
        "onnx": {"file": onnx_path.name, "sha256": sha256(onnx_path),
                 "sidecar": {**meta, "profiles": dim_profiles(meta, profiles)}},
        "precision": precision,
        "tensorrt": trt_api.version(),
        "gpu": device,
        "profiles": [{name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in shapes.items()}],
        "build": {"workspace_gb": workspace_gb, "opt_level": opt_level, "strongly_typed": True,
                  "network_flags": trt_api.network_flags(), "timing_cache": str(cache_path) if cache_path else None,
                  "seconds": round(seconds, 2)},
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_outputs([plan_path, plan_sidecar_path(plan_path)]) as (plan_tmp, sidecar_tmp):
        plan_tmp.write_bytes(memoryview(plan))
        sidecar_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    if cache_path:
        with atomic_output(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    log(f"wrote {plan_path} in {seconds:.1f} s")
    return plan_path
