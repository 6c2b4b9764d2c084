"""Latency of one routing decision, with and without computing the embedding, on one core.

Run: ``.venv/bin/python benches/bench_router.py [--precision auto|f32|f16|bf16]`` (the
shared MiniLM's precision; ``auto``, the default as in the gateway, is bf16 on CPUs with
AVX-512 BF16 and f32 elsewhere).

The process pins itself to one CPU and BLAS to one thread before numpy loads. A route with the
shipped learned model, three rules and two semantic routes (ten utterances) decides for a short
and a medium prompt:

- ``decision``: ``Router.route(request, vector)`` with the vector given, as in the gateway
  when the cache layer has already embedded the prompt (rules -> semantic -> learned);
- ``embed + decision``: ``Router.route(request)``, the router embedding the prompt itself
  (MiniLM, Rust forward pass by default) when no vector is at hand;
- ``embed only``: the embedder alone, for the split.

It prints p50 and p99 of each against the issue's target (decision including the embedding:
p50 <= 2 ms on one core).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import argparse
from collections.abc import Callable
from functools import partial

from routeguard.bench.timing import summarize, time_calls
from routeguard.embed import default_embedder
from routeguard.routing import Router

TARGET_MS = 2.0
PROMPTS = {
    "short (9 words)": "What is the capital city of France, and why?",
    "medium (60 words)": (
        "I am writing a small web service in Python that accepts uploads of CSV files, "
        "validates each row against a schema, and stores the valid rows in PostgreSQL. "
        "Some files are several hundred megabytes. How should I stream the parsing so "
        "memory stays flat, and how do I report row-level errors back to the client "
        "without holding the whole file?"
    ),
}
SPEC = {
    "cheap": "cheap",
    "strong": "strong",
    "strong_share": 0.3,
    "rules": [
        {"name": "vip", "target": "strong", "team": "vip"},
        {"name": "long", "target": "strong", "min_tokens": 8000},
        {"name": "sql", "target": "strong", "regex": r"(?i)\bexplain analyze\b"},
    ],
    "semantic_routes": {
        "threshold": 0.75,
        "routes": [
            {
                "name": "greeting",
                "target": "cheap",
                "utterances": ["hi", "hello there", "good morning", "thanks!", "how are you?"],
            },
            {
                "name": "translation",
                "target": "cheap",
                "utterances": [
                    "translate this into French",
                    "how do you say hello in Spanish",
                    "translate to German please",
                    "what is this in Japanese",
                    "English to Italian",
                ],
            },
        ],
    },
}


def timings(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """p50 and p99 of ``n`` calls, in milliseconds (after a few warm-up calls)."""
    ms = summarize(time_calls(fn, n, warmup=min(20, n))).scaled(1e-6)
    return ms.p50, ms.p99


def main() -> int:
    """Time the three paths for each prompt and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "f32", "f16", "bf16", "int8"]
    )
    args = parser.parse_args()
    embedder = default_embedder(args.precision)
    router = Router.from_dict("smart", SPEC, embedder=embedder)
    print(
        f"one core (affinity {sorted(os.sched_getaffinity(0))}), BLAS threads 1, "
        f"MiniLM at {embedder.precision} ({args.precision})"
    )
    for label, text in PROMPTS.items():
        request = {"model": "smart", "messages": [{"role": "user", "content": text}]}
        vector = embedder.embed([text])[0]
        decision = router.route(request, vector)
        print(f"\n{label}: -> {decision.target_alias} ({decision.reason}, score {decision.score})")
        rows = {
            "decision (vector given)": timings(partial(router.route, request, vector), 3000),
            "embed + decision": timings(partial(router.route, request), 200),
            "embed only": timings(partial(embedder.embed, [text]), 200),
        }
        for name, (p50, p99) in rows.items():
            print(
                f"  {name:<24} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   "
                f"({p50 / TARGET_MS:.2f}x the {TARGET_MS:g} ms target)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
