"""Cache search at scale: exact flat scans (float32, int8) against HNSW, latency and recall@1.

For each data set (``random``: unit vectors uniform on the sphere, the hard case for a graph
index; ``clustered``: points around 1/200 as many centres, each cluster itself a full-rank
Gaussian blob; ``lowrank``: points of a random 32-dimensional subspace plus 20% isotropic
noise, the low intrinsic dimension real sentence embeddings show) and each size (10k,
100k, 1M x 384 by default) it measures one-query top-1 search latency
(p50/p99) of

- ``flat-f32``: the Rust exact scan (``VectorIndex``), the ground truth;
- ``flat-int8``: the int8 scan with exact rescoring (``VectorIndex(quantize=True)``);
- ``hnsw ef=E``: ``HnswIndex`` (what a cache partition past ``ann_threshold`` uses) for a
  sweep of ``ef``;

with recall@1 against the exact answer for two kinds of query: ``fresh`` (a new sample
from the data's distribution: for random data its nearest neighbour is barely nearer than
the rest, cosine ~0.2, a lookup no cache would ever answer) and ``near`` (a stored vector
plus noise, cosine ~0.9 to it: what a semantic-cache hit looks like). It ends with each
size's smallest ``ef`` reaching recall@1 >= 0.99 and its speed-up over ``flat-f32``.

Graphs take minutes to build at 1M on two cores, so they are cached under ``.bench/``
(keyed by data set, size, M and ef_construction) and reused by later runs. Run with

    .venv/bin/python benches/bench_cache_search.py [--sizes 10000,100000,1000000]
        [--kinds random,clustered,lowrank] [--queries 300] [--efs 16,32,64,128,256]
        [--m 16] [--ef-construction 200]     (the defaults are HnswIndex's)

Results are also written to ``.bench/cache_search-M<m>-efc<ef_construction>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.bench.timing import summarize
from routeguard.cache.ann import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, HnswIndex
from routeguard.cache.index import VectorIndex, simd_level

DIM = 384
F32 = npt.NDArray[np.float32]
CACHE_DIR = Path(__file__).resolve().parent.parent / ".bench"
KINDS = ("random", "clustered", "lowrank")
LATENT = 32  # intrinsic dimension of the "lowrank" data set
FLAT_BUDGET_S = 6.0  # time spent timing one flat scan variant at one size


def unit(x: F32) -> F32:
    out: F32 = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def dataset(kind: str, n: int, n_queries: int) -> tuple[F32, F32, F32]:
    """(data, fresh queries, near queries), deterministic for (kind, n)."""
    rng = np.random.default_rng(n + KINDS.index(kind))
    if kind == "random":
        data = np.empty((n, DIM), np.float32)
        for i in range(0, n, 100_000):  # in chunks: half the peak memory
            data[i : i + 100_000] = unit(
                rng.standard_normal((min(100_000, n - i), DIM), np.float32)
            )
        fresh = unit(rng.standard_normal((n_queries, DIM), np.float32))
    elif kind == "lowrank":
        basis = rng.standard_normal((LATENT, DIM), np.float32) / np.float32(np.sqrt(LATENT))
        data = np.empty((n, DIM), np.float32)
        for i in range(0, n, 100_000):
            m = min(100_000, n - i)
            latent = rng.standard_normal((m, LATENT), np.float32)
            noise = rng.standard_normal((m, DIM), np.float32)
            data[i : i + m] = unit(latent @ basis + 0.2 * noise)
        latent = rng.standard_normal((n_queries, LATENT), np.float32)
        noise = rng.standard_normal((n_queries, DIM), np.float32)
        fresh = unit(latent @ basis + 0.2 * noise)
    else:
        centres = rng.standard_normal((max(16, n // 200), DIM), np.float32)
        data = np.empty((n, DIM), np.float32)
        for i in range(0, n, 100_000):
            m = min(100_000, n - i)
            noise = rng.standard_normal((m, DIM), np.float32)
            data[i : i + m] = unit(centres[rng.integers(0, len(centres), m)] + 0.6 * noise)
        noise = rng.standard_normal((n_queries, DIM), np.float32)
        fresh = unit(centres[rng.integers(0, len(centres), n_queries)] + 0.6 * noise)
    picked = data[rng.integers(0, n, n_queries)]
    near = unit(picked + 0.025 * rng.standard_normal(picked.shape, np.float32))
    return data, fresh, near


def timed(search: Callable[[F32], tuple[Any, Any]], queries: F32) -> tuple[list[float], Any]:
    """Per-query seconds and the top-1 id of each query."""
    seconds, top = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids, _ = search(q)
        seconds.append(time.perf_counter() - t0)
        top.append(int(ids[0]))
    return seconds, np.array(top, dtype=np.uint64)


def stats(seconds: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ms = summarize(seconds).scaled(1e3)
    return ms.p50, ms.p99


def graph(kind: str, data: F32, m: int, efc: int) -> tuple[HnswIndex, float, bool]:
    """The HNSW graph of ``data``, from the cache under .bench/ or built (and cached)."""
    path = CACHE_DIR / f"hnsw-{kind}-{len(data)}-M{m}-efc{efc}.bin"
    if path.exists() and Path(f"{path}.ids").exists():
        t0 = time.perf_counter()
        index = HnswIndex.load(path, probe_every=0)  # a fixed ef per row of the sweep
        return index, time.perf_counter() - t0, True
    t0 = time.perf_counter()
    index = HnswIndex(DIM, m=m, ef_construction=efc, capacity=len(data), probe_every=0)
    index.add(np.arange(len(data), dtype=np.uint64), data)
    took = time.perf_counter() - t0
    CACHE_DIR.mkdir(exist_ok=True)
    index.save(path)
    return index, took, False


def run(kind: str, n: int, args: argparse.Namespace, out: list[dict[str, Any]]) -> None:
    data, fresh, near = dataset(kind, n, args.queries)
    queries = {"fresh": fresh, "near": near}
    rows: list[dict[str, Any]] = []

    def row(impl: str, query: str, seconds: list[float], recall: float | None) -> None:
        p50, p99 = stats(seconds)
        rows.append({"kind": kind, "n": n, "impl": impl, "query": query, "p50_ms": p50,
                     "p99_ms": p99, "recall@1": recall, "queries": len(seconds)})  # fmt: skip
        rec = "     -" if recall is None else f"{recall:6.3f}"
        print(f"  {impl:<14} {query:<5} p50 {p50:8.3f} ms  p99 {p99:8.3f} ms  recall@1 {rec}"
              f"  ({len(seconds)} queries)", flush=True)  # fmt: skip

    print(f"\n{kind} {n:,} x {DIM}", flush=True)
    ids = np.arange(n, dtype=np.uint64)
    truth: dict[str, Any] = {}
    for quantize in (False, True):
        flat = VectorIndex(DIM, quantize=quantize)
        flat.add(ids, data)
        name = "flat-int8" if quantize else "flat-f32"
        for qname, q in queries.items():
            if not quantize:
                truth[qname] = flat.search_batch(q, 1)[0][:, 0]
            flat.search(q[0], 1)  # warm up
            t0 = time.perf_counter()
            flat.search(q[1], 1)
            one = max(time.perf_counter() - t0, 1e-6)
            budget = max(10, min(len(q), int(FLAT_BUDGET_S / 2 / one)))
            seconds, top = timed(lambda v, f=flat: f.search(v, 1), q[:budget])
            row(name, qname, seconds, float(np.mean(top == truth[qname][:budget])))
        del flat
        gc.collect()
    index, build_s, cached = graph(kind, data, args.m, args.ef_construction)
    how = "loaded from .bench/" if cached else "built"
    print(f"  hnsw M={args.m} ef_construction={args.ef_construction}: {how} in {build_s:.1f} s")
    rows.append({"kind": kind, "n": n, "impl": "hnsw-build", "seconds": build_s, "cached": cached})
    del data
    gc.collect()
    for ef in args.efs:
        index.ef = ef
        for qname, q in queries.items():
            index.search(q[0], 1)
            seconds, top = timed(lambda v: index.search(v, 1), q)
            row(f"hnsw ef={ef}", qname, seconds, float(np.mean(top == truth[qname])))
    out.extend(rows)


def summary(rows: list[dict[str, Any]]) -> None:
    print(f"\nsummary (simd {simd_level()}): smallest ef with recall@1 >= 0.99, vs flat-f32 p50")
    keys = sorted({(r["kind"], r["n"], r["query"]) for r in rows if "query" in r})
    for kind, n, query in keys:
        sel = [r for r in rows if (r["kind"], r["n"], r.get("query")) == (kind, n, query)]
        flat = next(r for r in sel if r["impl"] == "flat-f32")
        int8 = next(r for r in sel if r["impl"] == "flat-int8")
        good = [r for r in sel if r["impl"].startswith("hnsw") and r["recall@1"] >= 0.99]
        best = min(good, key=lambda r: r["p50_ms"]) if good else None
        text = "none reached 0.99"
        if best is not None:
            speedup = flat["p50_ms"] / best["p50_ms"]
            text = f"{best['impl']} p50 {best['p50_ms']:.3f} ms ({speedup:.0f}x faster)"
        print(
            f"  {kind:<9} {n:>9,} {query:<5} flat-f32 {flat['p50_ms']:8.3f} ms, "
            f"flat-int8 {int8['p50_ms']:8.3f} ms (recall {int8['recall@1']:.3f}), {text}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--m", type=int, default=DEFAULT_M)
    parser.add_argument("--ef-construction", type=int, default=DEFAULT_EF_CONSTRUCTION)
    parser.add_argument("--efs", default="16,32,64,128,256")
    args = parser.parse_args()
    args.efs = [int(x) for x in args.efs.split(",")]
    rows: list[dict[str, Any]] = []
    for kind in args.kinds.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            run(kind, n, args, rows)
    summary(rows)
    CACHE_DIR.mkdir(exist_ok=True)
    name = f"cache_search-M{args.m}-efc{args.ef_construction}.json"
    (CACHE_DIR / name).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
