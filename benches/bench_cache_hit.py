"""A semantic hit end to end (embedding the prompt included) at several cache sizes.

Run: ``.venv/bin/python benches/bench_cache_hit.py [--sizes 2000,20000,45000] [--queries 300]
[--precision auto|f32|f16|bf16] [--ann-threshold N]``
(reads ``../shared/data/cache``; the QQP vectors come from ``cache_quality.py``'s cache, so
its first run embeds them). The process pins itself to one core. For each size, that many
distinct QQP ``text_a`` are put into one namespace of the default ``SemanticCache`` (local
MiniLM, threshold 0.90, verifier on; their vectors precomputed, so filling is quick); then
every label-1 pair whose ``text_a`` is stored is looked up by its ``text_b`` with a fresh
embedding through ``SemanticCache.get``, and the p50/p99 of the lookups that hit are printed
beside the target (a hit within 3 ms, embedding included). Below ``ann_threshold`` (50k
unless given) a partition is searched by the int8 exact tier, from there on by HNSW (whose
background build is waited for before timing).
``--precision`` is the lookup embedder's (``auto``, the default as in the gateway: bf16 on
CPUs with AVX-512 BF16, else f32); the stored entries' vectors are the f32 ones
``cache_quality.py`` cached, which moves scores by ~1e-5 at bf16, nothing a 0.90 threshold
notices.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cache_quality as cq
from routeguard.bench.timing import summarize
from routeguard.cache.keys import normalise
from routeguard.cache.semantic import SemanticCache
from routeguard.cache.tiered import DEFAULT_ANN_THRESHOLD, TieredIndex
from routeguard.embed import default_embedder


def main() -> None:
    """Fill, look up, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000,45000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "f32", "f16", "bf16", "int8"]
    )
    parser.add_argument("--ann-threshold", type=int, default=None)
    args = parser.parse_args()
    if not cq.QQP.exists():
        print(f"no data at {cq.QQP}: skipped")
        return
    q = cq.load_qqp()
    real = default_embedder(args.precision)
    real.embed(["warm up"])
    ann = DEFAULT_ANN_THRESHOLD if args.ann_threshold is None else args.ann_threshold
    print(f"MiniLM at {real.precision} ({args.precision}), ann_threshold {ann:,}")
    for size in (int(s) for s in args.sizes.split(",")):
        entries = q.entries[:size]
        stored = {normalise(e) for e in entries}
        lookups = [
            p["text_b"]
            for p in q.pairs
            if p["label"] == 1
            and normalise(p["text_a"]) in stored
            and normalise(p["text_b"]) not in stored  # the exact tier would answer those
        ][: args.queries]
        indexes: list[TieredIndex] = []

        def tiered(dim: int, indexes: list[TieredIndex] = indexes) -> TieredIndex:
            index = TieredIndex(dim, threshold=ann)
            indexes.append(index)
            return index

        cache = SemanticCache(q.embedder, max_entries=size + 1, index_factory=tiered)
        cache.put_many([(e, {"answer": i}) for i, e in enumerate(entries)])
        for index in indexes:  # a graph built in the background would share the one core
            index.wait()
        cache.embedder = real  # every lookup embeds its prompt afresh
        for text in lookups[:20]:
            cache.get(text)
        seconds = []
        for text in lookups:
            t0 = time.perf_counter()
            hit = cache.get(text)
            took = time.perf_counter() - t0
            if hit is not None:
                seconds.append(took)
        ms = summarize(seconds).scaled(1e3)
        p50, p99 = ms.p50, ms.p99
        print(
            f"{size:>7,} entries: {len(seconds)} hits of {len(lookups)} lookups, "
            f"hit p50 {p50:.2f} ms, p99 {p99:.2f} ms (target 3 ms)",
            flush=True,
        )


if __name__ == "__main__":
    main()
