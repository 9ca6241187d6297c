"""CPU timing helper: warm-up calls are not timed, the median is of the timed calls."""

from __future__ import annotations

import time

import pytest

from rerankrt.bench.timing import median_ms


def test_median_of_timed_calls_after_warmup():
    durations = iter([0.2, 0.0, 0.03, 0.0])  # warm-up 200 ms, then 0, 30, 0 ms
    calls = []

    def fn():
        calls.append(1)
        time.sleep(next(durations))

    assert median_ms(fn, repeat=3) < 20  # the 200 ms warm-up is not counted; the median is ~0 ms
    assert len(calls) == 4


def test_repeat_must_be_positive():
    with pytest.raises(ValueError, match="repeat: expected at least 1, got 0"):
        median_ms(lambda: None, repeat=0)


def test_summary_statistics():
    from rerankrt.bench.timing import summarize

    stats = summarize([float(i) for i in range(1, 101)])  # 1 … 100 ms
    assert stats == {"median": 50.5, "p90": pytest.approx(90.1), "p99": pytest.approx(99.01), "mean": 50.5,
                     "std": pytest.approx(28.866, abs=1e-3), "min": 1.0, "max": 100.0, "n": 100}
    with pytest.raises(ValueError, match="summarize: no timings"):
        summarize([])
