"""Wall-clock timing on the CPU: medians of repeated runs after a warm-up (perf_counter_ns).

The profiler's CUDA-event timers join when it lands; the benchmark scripts in tests/ use this one.
"""

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
