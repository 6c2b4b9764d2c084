"""Approximate nearest-neighbour search for large cache partitions: an hnswlib HNSW graph
behind the same interface as :class:`~routeguard.cache.index.VectorIndex`.

Data flow: :meth:`HnswIndex.add` L2-normalises the float32 rows (so the inner-product space
gives cosines) and inserts them into the graph, growing its capacity by doubling
(``resize_index``); :meth:`HnswIndex.remove` marks a vector deleted, and the next insert
reuses its slot (``allow_replace_deleted``), so a cache with steady churn does not grow;
:meth:`HnswIndex.search` walks the graph with a candidate list of ``ef`` and returns the
nearest ids and their cosines, best first. hnswlib releases the GIL while it works.

Recall is watched, not assumed: how many candidates (``ef``) a search needs for a given
recall depends on the data (real sentence embeddings need far fewer than random vectors).
Every ``probe_every`` searches, :meth:`HnswIndex.search` also searches a stored vector moved to
cosine 0.93 from itself (a paraphrase-like lookup) and counts a miss when the answer is less
similar than that vector. Over each window of ``probe_window`` probes, a miss rate above
~1.8% raises the ``ef`` in use by half (up to 512); at most one miss lowers it back towards
the configured ``ef``, which stays the floor. :attr:`HnswIndex.probe_stats` reports it.

Labels. hnswlib cannot safely take back a label that is still in the graph as a deleted
slot (reusing that slot later would erase the live label's lookup), so an id is used as its
own label only the first time it is ever seen (ids above every id seen so far; the cache's
ids only grow, so this is its only path). Re-adding an id that was removed gives it a fresh
label from a private range at 2**63 and up, remembered in a small remapping table.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import hnswlib
import msgspec
import numpy as np

from routeguard.cache.index import Ids, Scores, Vectors

_REMAP_BASE: Final = 2**63
# Chosen on benches/bench_cache_search.py (recall and latency per ef: docs/performance.md,
# Cache search).
DEFAULT_M: Final = 16
DEFAULT_EF_CONSTRUCTION: Final = 200
DEFAULT_EF: Final = 20
_EF_MAX: Final = 512  # the most recall probes raise ef to

logger = logging.getLogger("routeguard.cache")


class _Saved(msgspec.Struct):
    """What :meth:`HnswIndex.save` keeps beside the graph."""

    dim: int
    ef: int
    live: list[int]
    max_seen: int
    vacant: int
    remap: dict[int, int]
    next_remap: int


class HnswIndex:
    """Approximate top-k cosine search (HNSW graph) over float32 vectors of one dimension.

    ``m`` is the graph degree (memory ~ ``m * 8`` bytes per vector on top of the vector;
    recall grows with it), ``ef_construction`` the candidate list while inserting (build
    time vs graph quality) and ``ef`` the candidate list while searching (latency vs
    recall, changeable at any time through :attr:`ef`). Ids are integers below 2**63.
    Scores are exact cosines of the returned vectors; only the choice of neighbours is
    approximate. Ties are not ordered by id, unlike :class:`VectorIndex`. Not safe to call
    from several threads at once on its own (:class:`~routeguard.cache.tiered.TieredIndex`
    serialises the calls).
    """

    __slots__ = ("_dim", "_ef", "_ef_now", "_index", "_live", "_max_seen", "_misses",
                 "_next_remap", "_probe_every", "_probe_window", "_probes", "_remap", "_rng",
                 "_searches", "_threads", "_total_misses", "_total_probes", "_unmap",
                 "_vacant")  # fmt: skip

    def __init__(
        self,
        dim: int,
        *,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef: int = DEFAULT_EF,
        capacity: int = 1024,
        threads: int = -1,
        seed: int = 100,
        probe_every: int = 64,
        probe_window: int = 512,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if m < 2 or ef_construction < 1 or ef < 1:
            raise ValueError(f"need m >= 2, ef_construction >= 1, ef >= 1; got {m}, "
                             f"{ef_construction}, {ef}")  # fmt: skip
        self._dim = dim
        self._index: Any = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(
            max_elements=max(capacity, 16),
            M=m,
            ef_construction=ef_construction,
            random_seed=seed,
            allow_replace_deleted=True,
        )
        self._ef = ef
        self._ef_now = ef
        self._index.set_ef(ef)
        self._threads = threads
        self._rng = np.random.default_rng(seed)
        self._probe_every = max(0, probe_every)  # 0: never probe
        self._probe_window = max(16, probe_window)
        self._searches = self._probes = self._misses = 0
        self._total_probes = self._total_misses = 0
        self._live: set[int] = set()
        self._max_seen = -1
        self._vacant = 0  # deleted slots an insert may take over
        self._remap: dict[int, int] = {}  # re-added id -> its label at 2**63 and up
        self._unmap: dict[int, int] = {}
        self._next_remap = _REMAP_BASE

    @property
    def dim(self) -> int:
        """The dimension every vector must have."""
        return self._dim

    @property
    def ef(self) -> int:
        """Candidate list size while searching (at least ``k`` is used): the floor of the
        size in use, which recall probes may raise (:attr:`ef_in_use`)."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"ef must be at least 1, got {value}")
        self._ef = self._ef_now = value
        self._probes = self._misses = 0
        self._index.set_ef(value)

    @property
    def ef_in_use(self) -> int:
        """The candidate list size searches use now (``ef`` or more, see the module doc)."""
        return self._ef_now

    @property
    def probe_stats(self) -> dict[str, float]:
        """Recall probes so far: ``probes``, ``misses``, ``recall`` and ``ef_in_use``."""
        probes, misses = self._total_probes, self._total_misses
        recall = 1.0 - misses / probes if probes else float("nan")
        return {"probes": probes, "misses": misses, "recall": recall, "ef_in_use": self._ef_now}

    @property
    def capacity(self) -> int:
        """Slots allocated in the graph (grows by doubling)."""
        return int(self._index.get_max_elements())

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, id: object) -> bool:
        return isinstance(id, int | np.integer) and int(id) in self._live

    def __repr__(self) -> str:
        return f"HnswIndex(dim={self._dim}, ef={self._ef}, len={len(self._live)})"

    def add(self, ids: Ids | Sequence[int], vectors: Vectors) -> None:
        """Store ``vectors[i]`` under ``ids[i]``, replacing any vector already under that id.

        ``vectors`` is a float32 array of shape ``(len(ids), dim)``; rows are normalised
        here (an all-zero or non-finite row is refused, and then nothing is stored).
        """
        rows = _unit_rows(vectors, self._dim)
        keys = [int(i) for i in np.asarray(ids, dtype=np.uint64).reshape(-1)]
        if len(keys) != rows.shape[0]:
            raise ValueError(f"got {len(keys)} ids for {rows.shape[0]} vectors")
        if len(set(keys)) != len(keys):
            raise ValueError("ids must be distinct within one add")
        if keys and max(keys) >= _REMAP_BASE:
            raise ValueError(f"HnswIndex ids must be below 2**63, got {max(keys)}")
        fresh: list[int] = []  # labels for slots taken anew (or vacant ones reused)
        fresh_rows: list[int] = []
        update: list[int] = []  # labels of live ids whose vector changes in place
        update_rows: list[int] = []
        for row, key in enumerate(keys):
            if key in self._live:
                update.append(self._remap.get(key, key))
                update_rows.append(row)
            elif key > self._max_seen:
                fresh.append(key)
                fresh_rows.append(row)
            else:  # removed before: its old label may still sit in the graph, deleted
                label = self._next_remap
                self._next_remap += 1
                self._remap[key] = label
                self._unmap[label] = key
                fresh.append(label)
                fresh_rows.append(row)
        if update:
            self._index.add_items(rows[update_rows], update, num_threads=self._threads)
        if fresh:
            self._reserve(len(fresh))
            self._index.add_items(
                rows[fresh_rows], fresh, num_threads=self._threads, replace_deleted=True
            )
            self._vacant = max(0, self._vacant - len(fresh))
        self._live.update(keys)
        if keys:
            self._max_seen = max(self._max_seen, max(keys))

    def remove(self, id: int) -> bool:
        """Remove the vector stored under ``id``; ``False`` if there was none."""
        key = int(id)
        if key not in self._live:
            return False
        label = self._remap.pop(key, key)
        self._unmap.pop(label, None)
        self._index.mark_deleted(label)
        self._live.discard(key)
        self._vacant += 1
        return True

    def search(self, query: Vectors, k: int = 1) -> tuple[Ids, Scores]:
        """The ``min(k, len(self))`` (approximately) nearest ids and their cosines, best first."""
        if not isinstance(query, np.ndarray) or query.dtype != np.float32 or query.ndim != 1:
            raise TypeError("query must be a 1-D numpy float32 array")
        # Ranking by inner product does not need a unit query: the scores are divided by
        # its norm instead of copying it (the hot path: one query, already unit length).
        norm = math.sqrt(float(query @ query))
        if not 0.0 < norm < math.inf:
            raise ValueError("query must be finite and non-zero")
        labels, dists = self._query(query.reshape(1, -1), k)
        scores: Scores = (1.0 - dists[0]) / np.float32(norm)
        self._searches += 1
        if self._probe_every and self._searches % self._probe_every == 0:
            self._probe()
        return self._external(labels[0]), scores

    def _probe(self, similarity: float = 0.93) -> None:
        """One recall probe (see the module docstring), then adapt ``ef_in_use``."""
        key = -1
        for _ in range(8):  # ids mostly grow: a random one below the largest is often live
            guess = int(self._rng.integers(0, self._max_seen + 1)) if self._max_seen >= 0 else -1
            if guess in self._live:
                key = guess
                break
        if key < 0:
            return
        v = self.get([key])[0]
        noise = self._rng.standard_normal(self._dim).astype(np.float32)
        noise -= (noise @ v) * v
        length = float(np.linalg.norm(noise))
        if not length > 0.0:
            return
        side = math.sqrt(1.0 - similarity * similarity)
        q = (similarity * v + (side / length) * noise).astype(np.float32)  # cos(q, v) = sim
        _, dists = self._query(q.reshape(1, -1), 1)
        if dists.shape[1] == 0:
            return
        hit = 1.0 - float(dists[0][0]) >= similarity - 1e-4  # v itself, or something nearer
        self._probes += 1
        self._total_probes += 1
        if not hit:
            self._misses += 1
            self._total_misses += 1
        window = self._probe_window
        if self._misses * 1000 > 18 * window:  # > 1.8% of a window: raise now
            self._set_ef_now(min(_EF_MAX, math.ceil(self._ef_now * 1.5)))
        elif self._probes >= window:
            if self._misses <= 1 and self._ef_now > self._ef:
                self._set_ef_now(max(self._ef, int(self._ef_now / 1.25)))
            else:
                self._probes = self._misses = 0

    def _set_ef_now(self, value: int) -> None:
        if value != self._ef_now:
            logger.info("HNSW recall probes: ef %d -> %d (%d misses in %d probes)",
                        self._ef_now, value, self._misses, self._probes)  # fmt: skip
        self._ef_now = value
        self._index.set_ef(value)
        self._probes = self._misses = 0

    def search_batch(self, queries: Vectors, k: int = 1) -> tuple[Ids, Scores]:
        """:meth:`search` for each row of ``queries``; arrays of shape ``(n, min(k, len))``."""
        if not isinstance(queries, np.ndarray) or queries.dtype != np.float32:
            raise TypeError("queries must be a numpy float32 array")
        norms = np.sqrt(np.einsum("ij,ij->i", queries, queries))
        if not np.all(np.isfinite(norms)) or not np.all(norms > 0):
            raise ValueError("queries must be finite and non-zero")
        labels, dists = self._query(queries, k)
        scores: Scores = ((1.0 - dists) / norms[:, None]).astype(np.float32, copy=False)
        return self._external(labels), scores

    def _query(self, queries: Vectors, k: int) -> tuple[Any, Any]:
        """hnswlib's labels and distances (``1 - inner product``) for each row."""
        if queries.ndim != 2 or queries.shape[1] != self._dim:
            raise ValueError(f"queries must have shape (n, {self._dim}), got {queries.shape}")
        k = min(int(k), len(self._live))
        if k <= 0:
            n = queries.shape[0]
            return np.empty((n, 0), np.uint64), np.empty((n, 0), np.float32)
        ef = max(self._ef_now, k)
        if ef != self._ef_now:
            self._index.set_ef(ef)
        try:
            found: tuple[Any, Any] = self._index.knn_query(queries, k=k, num_threads=self._threads)
        except RuntimeError:
            # Too few live neighbours reachable (many deletions near the query): widen the
            # candidate list to everything once rather than fail a lookup.
            self._index.set_ef(max(ef, len(self._live)))
            ef = -1
            found = self._index.knn_query(queries, k=k, num_threads=self._threads)
        finally:
            if ef != self._ef_now:
                self._index.set_ef(self._ef_now)
        return found

    def get(self, ids: Ids | Sequence[int]) -> Vectors:
        """The stored (unit-length) vectors of ``ids``, one row each; KeyError if absent."""
        keys = [int(i) for i in np.asarray(ids, dtype=np.uint64).reshape(-1)]
        missing = [key for key in keys if key not in self._live]
        if missing:
            raise KeyError(f"no vector under id {missing[0]}")
        if not keys:
            return np.empty((0, self._dim), np.float32)
        labels = [self._remap.get(key, key) for key in keys]
        return np.asarray(self._index.get_items(labels), dtype=np.float32).reshape(-1, self._dim)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the graph to ``path`` and its id bookkeeping to ``path`` + ``.ids``
        (building a large graph takes minutes; loading it, a second)."""
        self._index.save_index(os.fspath(path))
        state = _Saved(self._dim, self._ef, sorted(self._live), self._max_seen, self._vacant,
                       self._remap, self._next_remap)  # fmt: skip
        Path(f"{os.fspath(path)}.ids").write_bytes(msgspec.msgpack.encode(state))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, threads: int = -1, probe_every: int = 64
    ) -> HnswIndex:
        """A graph written by :meth:`save` (``probe_every=0``: no recall probes)."""
        state = msgspec.msgpack.decode(Path(f"{os.fspath(path)}.ids").read_bytes(), type=_Saved)
        self = cls(state.dim, ef=state.ef, threads=threads, probe_every=probe_every)
        self._index = hnswlib.Index(space="ip", dim=state.dim)
        self._index.load_index(os.fspath(path), allow_replace_deleted=True)
        self._index.set_ef(state.ef)
        self._live = set(state.live)
        self._max_seen = state.max_seen
        self._vacant = state.vacant
        self._remap = dict(state.remap)
        self._unmap = {label: key for key, label in self._remap.items()}
        self._next_remap = state.next_remap
        return self

    def _reserve(self, extra: int) -> None:
        """Grow the graph if ``extra`` more vectors would not fit (vacant slots count)."""
        need = int(self._index.get_current_count()) + max(0, extra - self._vacant)
        cap = self.capacity
        if need > cap:
            while cap < need:
                cap *= 2
            self._index.resize_index(cap)

    def _external(self, labels: Any) -> Ids:
        out: Ids = labels if labels.dtype == np.uint64 else labels.astype(np.uint64)
        if self._unmap:
            remapped = out >= _REMAP_BASE
            if remapped.any():
                out = out.copy()
                out[remapped] = [self._unmap[int(x)] for x in out[remapped]]
        return out


def _unit_rows(vectors: Vectors, dim: int) -> Vectors:
    """A C-contiguous float32 copy of ``vectors`` with unit-length rows, or ValueError."""
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
        raise TypeError("vectors must be a numpy float32 array")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError("vectors must be finite and non-zero")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)
