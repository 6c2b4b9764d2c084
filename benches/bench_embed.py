"""Micro benchmark: the local MiniLM embedder (numpy forward pass, BLAS capped to 1 thread).

Times ``MiniLMEmbedder.embed`` end to end (tokenise + forward + pool) for one ~12-word
prompt and for a batch of 32 such prompts, plus the tokeniser alone, and prints the medians
per text against the design's target (p50 <= 2 ms for a short prompt on one thread). Not
part of the test suite (pyproject disables the benchmark plugin there); run it with

    .venv/bin/python benches/bench_embed.py
    # or: .venv/bin/pytest -p benchmark benches/bench_embed.py

Every forward pass runs under ``routeguard.embed.blas.single_threaded``, so the figures
are for one core whatever the machine has.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from routeguard.embed import MiniLMEmbedder
from routeguard.embed.blas import BLAS_THREADS

TARGET_MS = 2.0
PROMPT = "How do I reset my password if I no longer have access to my email?"
BATCH = [f"{PROMPT} (ticket {i}, priority {i % 4})" for i in range(32)]

_medians: dict[str, tuple[float, int]] = {}  # case -> (median seconds, texts per call)


class _Report:
    """Prints per-text medians and the ratio to the target once every case has run."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.section(f"MiniLM embedding, BLAS threads {BLAS_THREADS}, target {TARGET_MS} ms/prompt")
        for case, (median, texts) in _medians.items():
            per_text = median * 1e3 / texts
            tr.write_line(
                f"{case:>10}: {median * 1e3:8.3f} ms per call, {per_text:6.3f} ms per text "
                f"({per_text / TARGET_MS:.2f}x the target)"
            )


@pytest.fixture(scope="session", autouse=True)
def _report(request: pytest.FixtureRequest) -> None:
    plugin = _Report()
    if not request.config.pluginmanager.is_registered(plugin):
        request.config.pluginmanager.register(plugin, "bench-embed-report")


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    e = MiniLMEmbedder()
    e.embed([PROMPT])  # load the weights outside the timings
    return e


def test_single_prompt(benchmark: Any, embedder: MiniLMEmbedder) -> None:
    benchmark.group = "embed"
    benchmark(embedder.embed, [PROMPT])
    _medians["single"] = (benchmark.stats.stats.median, 1)


def test_batch_32(benchmark: Any, embedder: MiniLMEmbedder) -> None:
    benchmark.group = "embed"
    benchmark(embedder.embed, BATCH)
    _medians["batch-32"] = (benchmark.stats.stats.median, len(BATCH))


def test_tokenize_only(benchmark: Any, embedder: MiniLMEmbedder) -> None:
    benchmark.group = "embed"
    benchmark(embedder.tokenize, [PROMPT])
    _medians["tokenize"] = (benchmark.stats.stats.median, 1)


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
