"""Suite ``vector``: one query's top-10 by cosine over 10k stored 384-d vectors: the Rust flat
scan at f32 and at int8 (with exact rescoring) and the HNSW graph, against numpy brute force
(``vectors @ q``, ``argpartition``, sort the k) on the same data and queries. HNSW's recall@10
against the exact answer is in the row's detail."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.bench.report import Row
from routeguard.bench.suite import Options
from routeguard.bench.timing import summarize, time_each
from routeguard.cache.ann import HnswIndex
from routeguard.cache.index import VectorIndex

DIM, K, N = 384, 10, 10_000
F32 = npt.NDArray[np.float32]


def data(n: int, queries: int) -> tuple[F32, F32]:
    """Unit vectors and queries near stored ones (what a cache lookup looks like)."""
    rng = np.random.default_rng(n)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picked = vectors[rng.integers(0, n, queries)]
    near = picked + np.float32(0.05) * rng.standard_normal(picked.shape, dtype=np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    return vectors, near


def numpy_search(vectors: F32) -> Callable[[F32], Any]:
    """The peer: the brute-force top-k a Python cache would write."""

    def search(query: F32) -> Any:
        q = query / np.linalg.norm(query)
        scores = vectors @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])], scores

    return search


def top_k(index: VectorIndex | HnswIndex, query: F32) -> Any:
    """The index's top-k ids and scores for ``query``."""
    return index.search(query, K)


def run(opts: Options) -> list[Row]:
    """p50 per query of each index against numpy on the same queries."""
    vectors, queries = data(N, opts.n(1_000, 200))
    qs = list(queries)
    ids = np.arange(N, dtype=np.uint64)
    peer_fn = numpy_search(vectors)
    opts.progress.step(f"numpy brute force, {len(qs)} queries")
    peer = summarize(time_each(peer_fn, qs, 3, 20)).scaled(1e-3)
    truth = [set(peer_fn(q)[0].tolist()) for q in qs]
    flat, int8 = VectorIndex(DIM), VectorIndex(DIM, quantize=True)
    flat.add(ids, vectors)
    int8.add(ids, vectors)
    opts.progress.step(f"building HNSW over {N:,} vectors")
    hnsw = HnswIndex(DIM, capacity=N, probe_every=0)
    hnsw.add(ids, vectors)
    rows = []
    for name, index in (("flat f32", flat), ("flat int8", int8), ("HNSW", hnsw)):
        opts.progress.step(f"{name}, {len(qs)} queries")
        ours = summarize(time_each(partial(top_k, index), qs, 3, 20)).scaled(1e-3)
        found = [set(index.search(q, K)[0].tolist()) for q in qs]
        recall = float(np.mean([len(f & t) / K for f, t in zip(found, truth, strict=True)]))
        rows.append(
            Row("vector", f"top-{K} of {N // 1000}k x {DIM}, {name}", ours.p50, peer.p50,
                "numpy brute force",
                detail={"ours": ours.as_dict(), "peer": peer.as_dict(), "recall@10": recall})
        )  # fmt: skip
    return rows
