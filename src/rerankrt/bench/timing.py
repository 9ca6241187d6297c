"""Latency medians of repeated runs after a warm-up: wall clock on the CPU (perf_counter_ns), CUDA events
on a GPU (they time the stream, not the host's launch loop)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median milliseconds of `repeat` calls of `fn` after `warmup` untimed calls."""
    if repeat < 1:
        raise ValueError(f"repeat: expected at least 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


def cuda_median_ms(fn: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    """Median milliseconds of `repeat` calls of `fn` on the current CUDA stream, timed by CUDA events."""
    import torch

    if repeat < 1:
        raise ValueError(f"repeat: expected at least 1, got {repeat}")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def summarize(times_ms) -> dict[str, float]:
    """median, p90, p99, mean, std (population), min, max and n of a list of latencies in milliseconds."""
    import numpy as np

    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("summarize: no timings")
    return {"median": float(np.median(t)), "p90": float(np.percentile(t, 90)), "p99": float(np.percentile(t, 99)),
            "mean": float(t.mean()), "std": float(t.std()), "min": float(t.min()), "max": float(t.max()),
            "n": int(t.size)}
