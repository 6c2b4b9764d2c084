"""The one per-call timer every benchmark shares: warm up, turn GC off, time each call on its
own, then summarise as p50/p95/p99 (nanoseconds, linear interpolation between ranks).

Standard library only, and no routeguard import: the policy peers' worker runs
``benches/timing.py`` (which loads this file by path) in a virtualenv without routeguard.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Turn the cyclic garbage collector off for the block (back on after, if it was on)."""
    was_on = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def time_each(
    fn: Callable[[T], object], items: Sequence[T], rounds: int = 1, warmup: int = 200
) -> list[int]:
    """Per-call latencies in ns of ``fn(item)`` over ``rounds`` passes of ``items`` (GC off),
    after ``warmup`` untimed calls."""
    clock = time.perf_counter_ns
    for i in range(min(warmup, len(items)) if items else 0):
        fn(items[i])
    out: list[int] = []
    with gc_paused():
        for _ in range(rounds):
            for it in items:
                t0 = clock()
                fn(it)
                out.append(clock() - t0)
    return out


def time_calls(fn: Callable[[], object], n: int, warmup: int = 100) -> list[int]:
    """Per-call latencies in ns of ``n`` calls of ``fn()`` (GC off), after ``warmup`` calls."""
    clock = time.perf_counter_ns
    for _ in range(warmup):
        fn()
    out = [0] * n
    with gc_paused():
        for i in range(n):
            t0 = clock()
            fn()
            out[i] = clock() - t0
    return out


async def time_async(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 100) -> list[int]:
    """:func:`time_calls` for a coroutine function, awaited one call at a time on this loop."""
    clock = time.perf_counter_ns
    for _ in range(warmup):
        await fn()
    out = [0] * n
    with gc_paused():
        for i in range(n):
            t0 = clock()
            await fn()
            out[i] = clock() - t0
    return out


def time_batches(fn: Callable[[], object], n: int, batches: int = 5) -> list[float]:
    """Mean ns per call of ``fn()`` over each of ``batches`` tight loops of ``n`` calls (GC
    off): for calls so short that a clock read per call would swamp them."""
    clock = time.perf_counter_ns
    out = []
    with gc_paused():
        for _ in range(batches):
            t0 = clock()
            for _ in range(n):
                fn()
            out.append((clock() - t0) / n)
    return out


def timer_overhead_ns(samples: int = 20_000) -> float:
    """Median cost of an empty timed section (included in every per-call figure)."""
    clock = time.perf_counter_ns
    out = [0] * samples
    for i in range(samples):
        t0 = clock()
        out[i] = clock() - t0
    return float(statistics.median(out))


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, interpolating linearly between ranks
    (numpy's default method); NaN when there are none."""
    if not samples:
        return math.nan
    s = sorted(samples)
    pos = (len(s) - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


@dataclass(frozen=True, slots=True)
class Summary:
    """Percentiles and mean of one set of per-call latencies, in the samples' unit."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    min: float

    def scaled(self, factor: float) -> Summary:
        """The same summary with every figure multiplied by ``factor`` (e.g. 1e-3: ns to µs)."""
        return Summary(
            self.n,
            self.p50 * factor,
            self.p95 * factor,
            self.p99 * factor,
            self.mean * factor,
            self.min * factor,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers, for JSON output."""
        return asdict(self)


def summarize(samples: Sequence[float]) -> Summary:
    """p50/p95/p99, mean and min of ``samples`` (raises ValueError when empty)."""
    if not samples:
        raise ValueError("no samples to summarise")
    s = sorted(samples)
    return Summary(
        len(s),
        percentile(s, 50),
        percentile(s, 95),
        percentile(s, 99),
        float(statistics.fmean(s)),
        float(s[0]),
    )
