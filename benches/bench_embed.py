"""Micro benchmark: the local MiniLM embedder, Rust forward pass vs numpy, one core.

Times ``MiniLMEmbedder.embed`` end to end (tokenise + forward + pool) for a tiny prompt
(4 tokens), a short one (10 tokens, special tokens included), a medium one (63 tokens) and
a batch of 32 prompts (~25 tokens each), on each backend: ``rust`` (the class's default,
f32 weights), ``rust-f16`` (f16 weights), ``rust-bf16`` (bf16 weights and activations,
looser accuracy), ``rust-int8`` (int8 weights and activations, exact i32 sums, loosest) and
``numpy`` (BLAS capped to one thread); plus the tokeniser alone. ``default_embedder()``
(precision ``"auto"``) is the bf16 row on CPUs with AVX-512 BF16, the f32 one elsewhere. The
summary prints the medians (p50) per call and per text, the numpy/rust ratio, and the
short prompt against the design's target (p50 <= 2 ms on one core). Not part of the test
suite (pyproject disables the benchmark plugin there); run it with

    .venv/bin/python benches/bench_embed.py
    # or: .venv/bin/pytest -p benchmark benches/bench_embed.py

The process pins itself to one CPU first, so every figure is for one core whatever the
machine has (the Rust pass never starts threads; the numpy one runs under
``routeguard.embed.blas.single_threaded``).
"""

from __future__ import annotations

import os

if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import sys
from typing import Any

import pytest

from routeguard.embed import MiniLMEmbedder

TARGET_MS = 2.0
SHORT = "How do I reset my password quickly?"
MEDIUM = (
    "I am writing a small web service in Python that accepts uploads of CSV files, "
    "validates each row against a schema, and stores the valid rows in PostgreSQL. Some "
    "files are several hundred megabytes. How should I stream the parsing so memory stays flat?"
)
PROMPT = "How do I reset my password if I no longer have access to my email?"
BATCH = [f"{PROMPT} (ticket {i}, priority {i % 4})" for i in range(32)]
TINY = "Thanks!"  # 4 tokens: the weights' memory traffic shows more than the arithmetic
CASES = {"tiny": [TINY], "short": [SHORT], "medium": [MEDIUM], "batch-32": BATCH}
BACKENDS = {
    "rust": {"backend": "rust", "precision": "f32"},
    "rust-f16": {"backend": "rust", "precision": "f16"},
    "rust-bf16": {"backend": "rust", "precision": "bf16"},
    "rust-int8": {"backend": "rust", "precision": "int8"},
    "numpy": {"backend": "numpy"},
}

_medians: dict[tuple[str, str], float] = {}  # (backend, case) -> median seconds per call
_tokens: dict[str, int] = {}


class _Report:
    """Prints per-call and per-text medians and ratios once every case has run."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.section(f"MiniLM embedding p50, one core, target {TARGET_MS} ms for the short prompt")
        for case, texts in CASES.items():
            tr.write_line(f"{case} ({len(texts)} text(s), {_tokens.get(case, 0)} tokens):")
            numpy_ms = _medians.get(("numpy", case), float("nan")) * 1e3
            for backend in BACKENDS:
                if (backend, case) not in _medians:
                    continue
                ms = _medians[(backend, case)] * 1e3
                line = (
                    f"  {backend:>8}: {ms:8.3f} ms per call, {ms / len(texts):6.3f} ms per text"
                    f", numpy/this {numpy_ms / ms:5.2f}x"
                )
                if case == "short":
                    line += f", {ms / TARGET_MS:.2f}x the target"
                tr.write_line(line)
        if ("tokenize", "short") in _medians:
            tr.write_line(f"tokenize only (short): {_medians[('tokenize', 'short')] * 1e3:.3f} ms")


@pytest.fixture(scope="session", autouse=True)
def _report(request: pytest.FixtureRequest) -> None:
    plugin = _Report()
    if not request.config.pluginmanager.is_registered(plugin):
        request.config.pluginmanager.register(plugin, "bench-embed-report")


_embedders: dict[str, MiniLMEmbedder] = {}


def embedder(backend: str) -> MiniLMEmbedder:
    """The loaded embedder of ``backend`` (weights loaded outside the timings)."""
    if backend not in _embedders:
        e = MiniLMEmbedder(**BACKENDS[backend])  # type: ignore[arg-type]
        e.embed([SHORT])
        _embedders[backend] = e
    return _embedders[backend]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_embed(benchmark: Any, backend: str, case: str) -> None:
    e = embedder(backend)
    texts = CASES[case]
    _tokens[case] = sum(len(ids) for ids in e.tokenize(texts))
    benchmark.group = f"embed {case}"
    benchmark(e.embed, texts)
    _medians[(backend, case)] = benchmark.stats.stats.median


def test_tokenize_only(benchmark: Any) -> None:
    benchmark.group = "tokenize"
    benchmark(embedder("rust").tokenize, [SHORT])
    _medians[("tokenize", "short")] = benchmark.stats.stats.median


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
