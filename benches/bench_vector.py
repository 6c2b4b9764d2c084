"""Micro benchmark: top-k cosine search, Rust FlatIndex (float32 and int8) vs numpy.

For 10k and 100k stored 384-d vectors it times one query's top-10: ``VectorIndex.search``
(float32 scan; int8 scan plus exact rescoring) against the numpy baseline a Python cache
would write (``vectors @ q``, ``argpartition``, sort the k), all on the same data in the same
process, and prints each Rust path's speed-up over numpy at the end. Not part of the test
suite (pyproject disables the benchmark plugin there); run it with

    .venv/bin/python benches/bench_vector.py

Both sides may use every core: OpenBLAS threads its matrix-vector product, and the index
splits a scan over threads once rows x queries reaches its ``parallel_threshold``; the
``rust-f32-1t`` row pins the index to one thread for reference.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from routeguard.cache.index import VectorIndex, simd_level

DIM = 384
K = 10
SIZES = (10_000, 100_000)
IMPLS = ("numpy", "rust-f32", "rust-f32-1t", "rust-int8")

F32 = npt.NDArray[np.float32]
Search = Callable[[F32], Any]

_medians: dict[tuple[int, str], float] = {}


class _RatioReport:
    """Prints the speed-ups once every benchmark has run (a plugin registered at run time)."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.section(f"vector search speed-up over numpy (top-{K}, dim {DIM}, simd {simd_level()})")
        for n in SIZES:
            base = _medians.get((n, "numpy"))
            if base is None:
                continue
            parts = [f"numpy {base * 1e3:.3f} ms"]
            for impl in IMPLS[1:]:
                median = _medians.get((n, impl))
                if median is not None:
                    parts.append(f"{impl} {median * 1e3:.3f} ms ({base / median:.2f}x)")
            tr.write_line(f"{n:>7} vectors: " + ", ".join(parts))


@pytest.fixture(scope="session", autouse=True)
def _report(request: pytest.FixtureRequest) -> None:
    plugin = _RatioReport()
    if not request.config.pluginmanager.is_registered(plugin):
        request.config.pluginmanager.register(plugin, "bench-vector-ratios")


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n // 1000}k")
def searchers(request: pytest.FixtureRequest) -> Iterator[tuple[int, F32, dict[str, Search]]]:
    n: int = request.param
    rng = np.random.default_rng(n)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    ids = np.arange(n, dtype=np.uint64)
    normalised = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def numpy_search(query: F32) -> tuple[F32, F32]:
        q = query / np.linalg.norm(query)
        scores = normalised @ q
        top = np.argpartition(-scores, K)[:K]
        top = top[np.argsort(-scores[top])]
        return top, scores[top]

    f32 = VectorIndex(DIM)
    f32_single = VectorIndex(DIM, threads=1)
    int8 = VectorIndex(DIM, quantize=True)
    for index in (f32, f32_single, int8):
        index.add(ids, vectors)
    query = rng.standard_normal(DIM, dtype=np.float32)

    # The contenders must agree before their times mean anything.
    want = numpy_search(query)[0].tolist()
    for index in (f32, f32_single, int8):
        assert index.search(query, K)[0].tolist() == want

    yield (
        n,
        query,
        {
            "numpy": numpy_search,
            "rust-f32": lambda q: f32.search(q, K),
            "rust-f32-1t": lambda q: f32_single.search(q, K),
            "rust-int8": lambda q: int8.search(q, K),
        },
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_search(benchmark: Any, searchers: tuple[int, F32, dict[str, Search]], impl: str) -> None:
    n, query, table = searchers
    benchmark.group = f"search top-{K}, {n} x {DIM}"
    benchmark(table[impl], query)
    _medians[(n, impl)] = benchmark.stats.stats.median


if __name__ == "__main__":
    sys.exit(
        pytest.main(
            [
                __file__,
                "-q",
                "-o",
                "addopts=",
                "-p",
                "benchmark",
                "--benchmark-columns=min,median,mean,stddev,rounds",
                "--benchmark-sort=name",
                *sys.argv[1:],
            ]
        )
    )
