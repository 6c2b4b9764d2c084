"""The per-call timer the policy benches share (no routeguard import: the peers' workers
load it in venvs of their own)."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any


def time_each(
    fn: Callable[[Any], object], items: list[Any], rounds: int, warmup: int = 200
) -> list[int]:
    """Per-call latencies in ns over ``rounds`` passes of ``items`` (GC off while timing),
    after ``warmup`` untimed calls."""
    clock = time.perf_counter_ns
    for it in items[:warmup]:
        fn(it)
    out: list[int] = []
    gc.disable()
    try:
        for _ in range(rounds):
            for it in items:
                t0 = clock()
                fn(it)
                out.append(clock() - t0)
    finally:
        gc.enable()
    return out


def timer_overhead_ns() -> float:
    """Median cost of an empty timed section."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(20_000):
        t0 = clock()
        samples.append(clock() - t0)
    return statistics.median(samples)
