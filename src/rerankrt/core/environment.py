"""What this machine offers rerankrt: package versions, ONNX Runtime providers, the CUDA device.

Versions come from package metadata, so asking does not import torch or TensorRT.
"""

from __future__ import annotations

import platform
from importlib import metadata

try:
    __version__ = metadata.version("rerankrt")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: distribution names that provide each component, first found wins
DISTRIBUTIONS = {
    "rerankrt": ("rerankrt",),
    "numpy": ("numpy",),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings"),
    "cuda-python": ("cuda-python", "cuda-bindings"),
}


def package_version(component: str) -> str | None:
    for dist in DISTRIBUTIONS[component]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def cuda_device() -> dict | None:
    """{'name', 'compute_capability'} of CUDA device 0, via cuda.bindings or else torch; None if none."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        runtime = None
    if runtime is not None:
        success = runtime.cudaError_t.cudaSuccess
        try:
            err, count = runtime.cudaGetDeviceCount()
            if err != success or not count:
                return None
            err, props = runtime.cudaGetDeviceProperties(0)
        except Exception:  # cuda.bindings raises, rather than returns, when the driver library is missing
            return None
        if err != success:
            return None
        name = props.name if isinstance(props.name, bytes) else bytes(props.name)
        return {"name": name.split(b"\0", 1)[0].decode(), "compute_capability": f"{props.major}.{props.minor}"}
    if package_version("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


#: the instruction sets a CPU's GEMM kernels pick from (the flags /proc/cpuinfo names them by)
ISA = {"avx2": "avx2", "avx512": "avx512f", "vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "amx": "amx_int8"}


def cpu() -> dict:
    """{"model", "cpus", "isa"}: the CPU a figure was measured on (its FP32 and INT8 roofs depend on the
    instruction sets its kernels use: AVX2, AVX-512, VNNI, AMX). Empty fields where /proc/cpuinfo is absent."""
    import os

    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {"model": platform.processor() or None, "cpus": os.cpu_count(), "isa": []}
    fields = dict(line.split(":", 1) for line in text.split("\n\n", 1)[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name"), "cpus": os.cpu_count(),
            "isa": [name for name, flag in ISA.items() if flag in flags]}


def describe() -> dict:
    """Everything `rerankrt info` prints, as one dict (also recorded beside benchmark figures)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu(),
        **{name: package_version(name) for name in DISTRIBUTIONS},
        "onnxruntime_providers": onnxruntime_providers(),
        "cuda_device": cuda_device(),
    }
