"""The index a cache partition searches: exact (Rust flat scan) while small, HNSW once large.

Data flow: a :class:`TieredIndex` starts as a :class:`~routeguard.cache.index.VectorIndex`
plus a copy of its vectors (:class:`VectorStore`; the Rust index does not hand vectors
back, and both the migration and ``SemanticCache.save`` need them). When it reaches
``threshold`` vectors it builds a :class:`~routeguard.cache.ann.HnswIndex` from that copy,
by default on a background thread while searches keep using the exact index; ids added or
removed meanwhile are noted and replayed onto the graph, which then replaces the exact
index and the copy (the graph keeps the vectors itself). A partition never migrates back:
once large, a partition that shrinks keeps its graph (an empty one is dropped by the cache).
All methods are safe to call from several threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Final, Protocol

import numpy as np

from routeguard.cache.ann import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M, HnswIndex
from routeguard.cache.index import Ids, Scores, VectorIndex, Vectors

logger = logging.getLogger("routeguard.cache")

DEFAULT_ANN_THRESHOLD: Final = 50_000
"""Vectors in one partition from which it is searched through HNSW instead of a flat scan
(the graph is built in the background; where the two cross over: docs/performance.md,
Cache search)."""


class Index(Protocol):
    """What the cache needs of a partition's index (VectorIndex, HnswIndex, TieredIndex)."""

    def __len__(self) -> int: ...
    def add(self, ids: Ids | Sequence[int], vectors: Vectors) -> None: ...
    def remove(self, id: int) -> bool: ...
    def search(self, query: Vectors, k: int = 1) -> tuple[Ids, Scores]: ...
    def get(self, ids: Ids | Sequence[int]) -> Vectors: ...


class VectorStore:
    """Unit-length float32 rows by id, in one growable matrix (freed rows are reused)."""

    __slots__ = ("_free", "_matrix", "_row")

    def __init__(self, dim: int, capacity: int = 64) -> None:
        self._matrix = np.empty((capacity, dim), np.float32)
        self._row: dict[int, int] = {}
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._row)

    def put(self, ids: Sequence[int], vectors: Vectors) -> None:
        """Store (or replace) ``vectors[i]`` under ``ids[i]``, normalised."""
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        for key, vec in zip(ids, vectors / np.maximum(norms, 1e-30), strict=True):
            row = self._row.get(key)
            if row is None:
                row = self._free.pop() if self._free else len(self._row)
                if row >= self._matrix.shape[0]:
                    grown = np.empty((2 * self._matrix.shape[0], self._matrix.shape[1]), np.float32)
                    grown[: self._matrix.shape[0]] = self._matrix
                    self._matrix = grown
                self._row[key] = row
            self._matrix[row] = vec

    def drop(self, key: int) -> None:
        """Forget ``key``'s vector (no error if absent)."""
        row = self._row.pop(key, None)
        if row is not None:
            self._free.append(row)

    def get(self, ids: Sequence[int]) -> Vectors:
        """The rows of ``ids`` (a copy); KeyError if one is absent."""
        try:
            rows = [self._row[key] for key in ids]
        except KeyError as e:
            raise KeyError(f"no vector under id {e.args[0]}") from None
        return self._matrix[rows]

    def items(self) -> tuple[list[int], Vectors]:
        """Every id and its row (a copy), in one consistent snapshot."""
        keys = list(self._row)
        return keys, self._matrix[[self._row[k] for k in keys]]


class TieredIndex:
    """Exact search below ``threshold`` vectors, HNSW from there on (see the module doc).

    ``threshold=None`` never migrates. ``background=False`` builds the graph inside the
    ``add`` that crosses the threshold (tests, or a bulk load that wants the graph at once).
    ``m``, ``ef_construction`` and ``ef`` are passed to :class:`HnswIndex`. ``quantize``:
    the exact tier scans int8 codes and rescores its best candidates in float32 (exact
    scores; on 33,600 real MiniLM vectors the same top 4 as the float32 scan for 500 of 500
    paraphrase-like queries, 2.3-4.6x faster on one core from 5k to 33.6k vectors).
    """

    def __init__(
        self,
        dim: int,
        *,
        threshold: int | None = DEFAULT_ANN_THRESHOLD,
        background: bool = True,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef: int = DEFAULT_EF,
        quantize: bool = True,
    ) -> None:
        if threshold is not None and threshold < 1:
            raise ValueError(f"threshold must be at least 1 (or None), got {threshold}")
        self.dim = dim
        self.threshold = threshold
        self.background = background
        self._hnsw_args = {"m": m, "ef_construction": ef_construction, "ef": ef}
        self._lock = threading.RLock()
        self._flat: VectorIndex | None = VectorIndex(dim, quantize=quantize)
        self._store: VectorStore | None = VectorStore(dim)
        self._hnsw: HnswIndex | None = None
        self._touched: set[int] | None = None  # ids changed while a graph is being built
        self._builder: threading.Thread | None = None

    @property
    def tier(self) -> str:
        """``"flat"``, ``"building"`` (flat, graph on its way) or ``"hnsw"``."""
        with self._lock:
            if self._hnsw is not None:
                return "hnsw"
            return "building" if self._touched is not None else "flat"

    def __len__(self) -> int:
        with self._lock:
            return len(self._hnsw) if self._hnsw is not None else len(self._store or ())

    def __contains__(self, id: object) -> bool:
        with self._lock:
            if self._hnsw is not None:
                return id in self._hnsw
            return self._flat is not None and id in self._flat

    def __repr__(self) -> str:
        return f"TieredIndex(dim={self.dim}, tier={self.tier!r}, len={len(self)})"

    def add(self, ids: Ids | Sequence[int], vectors: Vectors) -> None:
        """Store ``vectors[i]`` under ``ids[i]`` (replacing), migrating past the threshold."""
        keys = [int(i) for i in np.asarray(ids, dtype=np.uint64).reshape(-1)]
        with self._lock:
            if self._hnsw is not None:
                self._hnsw.add(keys, vectors)
                return
            assert self._flat is not None and self._store is not None
            self._flat.add(np.asarray(keys, dtype=np.uint64), vectors)
            self._store.put(keys, vectors)
            if self._touched is not None:
                self._touched.update(keys)
            elif self.threshold is not None and len(self._store) >= self.threshold:
                self._start_migration()

    def remove(self, id: int) -> bool:
        """Remove the vector under ``id``; ``False`` if there was none."""
        key = int(id)
        with self._lock:
            if self._hnsw is not None:
                return self._hnsw.remove(key)
            assert self._flat is not None and self._store is not None
            self._store.drop(key)
            if self._touched is not None:
                self._touched.add(key)
            return self._flat.remove(key)

    def search(self, query: Vectors, k: int = 1) -> tuple[Ids, Scores]:
        """The ``min(k, len)`` nearest ids and their cosines, best first."""
        with self._lock:
            if self._hnsw is not None:
                return self._hnsw.search(query, k)
            assert self._flat is not None
            return self._flat.search(query, k)

    def search_batch(self, queries: Vectors, k: int = 1) -> tuple[Ids, Scores]:
        """:meth:`search` for each row of ``queries``."""
        with self._lock:
            if self._hnsw is not None:
                return self._hnsw.search_batch(queries, k)
            assert self._flat is not None
            return self._flat.search_batch(queries, k)

    def get(self, ids: Ids | Sequence[int]) -> Vectors:
        """The stored unit vectors of ``ids``, one row each (KeyError if one is absent)."""
        keys = [int(i) for i in np.asarray(ids, dtype=np.uint64).reshape(-1)]
        with self._lock:
            if self._hnsw is not None:
                return self._hnsw.get(keys)
            assert self._store is not None
            return self._store.get(keys)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a migration under way has finished; True if none is running."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)
            return not builder.is_alive()
        return True

    def _start_migration(self) -> None:
        assert self._store is not None
        keys, vectors = self._store.items()
        self._touched = set()
        if not self.background:
            self._build(keys, vectors)
            return
        self._builder = threading.Thread(
            target=self._build, args=(keys, vectors), name="routeguard-hnsw-build", daemon=True
        )
        self._builder.start()

    def _build(self, keys: list[int], vectors: Vectors) -> None:
        """Build the graph from a snapshot (no lock held), then catch up and swap (locked)."""
        try:
            graph = HnswIndex(self.dim, capacity=2 * len(keys), **self._hnsw_args)
            graph.add(keys, vectors)
        except Exception:  # pragma: no cover - hnswlib allocation failure
            logger.exception("building the HNSW index failed; the partition stays exact")
            with self._lock:
                self._touched = None
                self.threshold = None
            return
        with self._lock:
            assert self._flat is not None and self._store is not None
            assert self._touched is not None
            flat = self._flat
            live = [key for key in self._touched if key in flat]
            for key in self._touched.difference(live):
                graph.remove(key)
            if live:
                graph.add(live, self._store.get(live))
            self._hnsw = graph
            self._flat = None
            self._store = None
            self._touched = None
            self._builder = None
