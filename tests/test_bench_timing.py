"""The shared benchmark timer (:mod:`routeguard.bench.timing`): percentiles as numpy's default
method computes them, summaries, and the timing loops' shapes (never their speed)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from routeguard.bench.timing import (
    percentile,
    summarize,
    time_async,
    time_batches,
    time_calls,
    time_each,
)


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100])
def test_percentile_matches_numpys_linear_method(q: float) -> None:
    xs = list(np.random.default_rng(3).lognormal(size=101))
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12)


def test_percentile_of_nothing_is_nan_and_q_is_clamped() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([3.0, 1.0, 2.0], 150) == 3.0
    assert percentile([3.0, 1.0, 2.0], -5) == 1.0


def test_summary_of_known_samples() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert (s.n, s.p50, s.min, s.mean) == (4, 2.5, 1.0, 2.5)
    assert s.scaled(10).p50 == pytest.approx(25.0)
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_loops_call_as_often_as_asked() -> None:
    calls: list[object] = []
    assert len(time_each(calls.append, [1, 2, 3], rounds=2, warmup=1)) == 6
    assert len(calls) == 7  # one warm-up call, then two rounds of three
    calls.clear()
    got = time_batches(lambda: calls.append(None), 50, batches=3)
    assert len(got) == 3 and all(x > 0 for x in got)
    assert len(calls) == 150
    calls.clear()
    assert len(time_calls(lambda: calls.append(None), 7, warmup=2)) == 7
    assert len(calls) == 9

    async def one() -> None:
        calls.append(None)

    calls.clear()
    assert len(asyncio.run(time_async(one, 5, warmup=1))) == 5
    assert len(calls) == 6
