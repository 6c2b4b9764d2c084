"""The semantic cache: exact tier, then nearest-neighbour search inside the request's partition.

``get(prompt, namespace, context)``: partition = namespace + context digest (``keys.py``) ->
exact tier (normalised-prompt digest, no embedding) -> embed the prompt -> search the
partition's ``VectorIndex`` -> the best live candidate whose cosine reaches ``threshold``
and that the optional ``verifier`` accepts is a hit. ``put`` embeds and stores the entry in
both tiers. Entries expire by TTL (checked lazily on read and by ``purge_expired``) and the
least recently used are evicted past ``max_entries``. Everything is in process memory; the
Redis backend (several instances) keeps the same entries in Redis and mirrors them here.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from routeguard.cache.index import VectorIndex
from routeguard.cache.keys import Context, exact_key, partition_key
from routeguard.cache.metrics import CacheMetrics

DEFAULT_THRESHOLD = 0.90
NEAR_MARGIN = 0.05
_CANDIDATES = 4  # neighbours examined per lookup (expired or refused ones are skipped)


class Embeds(Protocol):
    """What the cache needs of an embedder (``routeguard.embed`` provides them)."""

    @property
    def dim(self) -> int:
        """Vector dimension."""
        ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit-length float32 vectors, one row per text."""
        ...


Verifier = Callable[[str, str], bool]
"""``verifier(query, cached_prompt)``: a second look at a close call; False refuses the hit."""


@dataclass(slots=True)
class CacheEntry:
    """One cached response."""

    key: str
    partition: str
    namespace: str
    prompt: str
    response: Any
    created: float
    expires: float | None
    vector_id: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A lookup that found an answer."""

    response: Any
    score: float
    key: str
    exact: bool
    prompt: str
    metadata: Mapping[str, Any]


class SemanticCache:
    """Exact + semantic response cache with TTL, LRU size cap, namespaces and contexts."""

    def __init__(
        self,
        embedder: Embeds | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        ttl: float | None = None,
        max_entries: int = 100_000,
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if embedder is None:
            from routeguard.embed import default_embedder

            embedder = default_embedder()
        self.embedder = embedder
        self.threshold = threshold
        self.ttl = ttl
        self.max_entries = max_entries
        self.verifier = verifier
        self.metrics = CacheMetrics()
        self._clock = clock
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()  # LRU order, oldest first
        self._by_vector: dict[int, str] = {}
        self._indexes: dict[str, VectorIndex] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ writes

    def put(
        self,
        prompt: str,
        response: Any,
        namespace: str = "default",
        context: Context | None = None,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        vector: npt.NDArray[np.float32] | None = None,
    ) -> str:
        """Store ``response`` for ``prompt``; returns the entry's key. Pass ``vector`` when
        the prompt is already embedded (the gateway embeds each request once)."""
        vec = self.embedder.embed([prompt])[0] if vector is None else vector
        return self._store(prompt, response, namespace, context, ttl, metadata, vec)

    def put_many(
        self,
        items: Sequence[tuple[str, Any]],
        namespace: str = "default",
        context: Context | None = None,
        ttl: float | None = None,
    ) -> list[str]:
        """Store many ``(prompt, response)`` pairs with one batched embedding."""
        if not items:
            return []
        vecs = self.embedder.embed([p for p, _ in items])
        return [
            self._store(p, r, namespace, context, ttl, None, vecs[i])
            for i, (p, r) in enumerate(items)
        ]

    def _store(
        self,
        prompt: str,
        response: Any,
        namespace: str,
        context: Context | None,
        ttl: float | None,
        metadata: Mapping[str, Any] | None,
        vector: npt.NDArray[np.float32],
    ) -> str:
        part = partition_key(namespace, context)
        key = exact_key(part, prompt)
        now = self._clock()
        life = ttl if ttl is not None else self.ttl
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                self._drop(old)
            vid = self._next_id
            self._next_id += 1
            index = self._indexes.get(part)
            if index is None:
                index = self._indexes[part] = VectorIndex(self.embedder.dim)
            index.add(np.array([vid], dtype=np.uint64), vector.reshape(1, -1))
            self._entries[key] = CacheEntry(
                key, part, namespace, prompt, response, now,
                None if life is None else now + life, vid, dict(metadata or {}),
            )  # fmt: skip
            self._by_vector[vid] = key
            self.metrics.puts += 1
            while len(self._entries) > self.max_entries:
                _, oldest = next(iter(self._entries.items()))
                self._drop(oldest)
                self.metrics.evictions += 1
        return key

    def _drop(self, entry: CacheEntry) -> None:
        self._entries.pop(entry.key, None)
        self._by_vector.pop(entry.vector_id, None)
        index = self._indexes.get(entry.partition)
        if index is not None:
            index.remove(entry.vector_id)
            if len(index) == 0:
                del self._indexes[entry.partition]

    # ------------------------------------------------------------------ reads

    def get_exact(
        self, prompt: str, namespace: str = "default", context: Context | None = None
    ) -> CacheHit | None:
        """The exact tier alone: no embedding, and a miss is not counted (``get`` will)."""
        t0 = time.perf_counter()
        hit = self._exact(partition_key(namespace, context), prompt)
        if hit is not None:
            self._timed(t0)
        return hit

    def get(
        self,
        prompt: str,
        namespace: str = "default",
        context: Context | None = None,
        *,
        threshold: float | None = None,
        vector: npt.NDArray[np.float32] | None = None,
    ) -> CacheHit | None:
        """The cached answer for ``prompt`` in this namespace and context, or None.
        ``threshold`` overrides the cache's for this lookup; ``vector`` is the prompt's
        embedding if already computed."""
        t0 = time.perf_counter()
        part = partition_key(namespace, context)
        hit = self._exact(part, prompt)
        if hit is None and part in self._indexes:
            vec = self.embedder.embed([prompt])[0] if vector is None else vector
            hit = self._semantic(part, prompt, vec, threshold or self.threshold)
        elif hit is None:
            with self._lock:
                self.metrics.misses += 1
        self._timed(t0)
        return hit

    def get_many(
        self, prompts: Sequence[str], namespace: str = "default", context: Context | None = None
    ) -> list[CacheHit | None]:
        """Look up many prompts; those that miss the exact tier share one batched embedding."""
        t0 = time.perf_counter()
        part = partition_key(namespace, context)
        out: list[CacheHit | None] = [self._exact(part, p) for p in prompts]
        todo = [i for i, h in enumerate(out) if h is None]
        if todo and part in self._indexes:
            vecs = self.embedder.embed([prompts[i] for i in todo])
            for row, i in enumerate(todo):
                out[i] = self._semantic(part, prompts[i], vecs[row], self.threshold)
        elif todo:
            with self._lock:
                self.metrics.misses += len(todo)
        self._timed(t0, len(prompts))
        return out

    def _exact(self, part: str, prompt: str) -> CacheHit | None:
        key = exact_key(part, prompt)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._expired(entry):
                self._drop(entry)
                self.metrics.expirations += 1
                return None
            self._entries.move_to_end(key)
            self.metrics.exact_hits += 1
            self.metrics.observe_score(1.0)
            return CacheHit(entry.response, 1.0, key, True, entry.prompt, entry.metadata)

    def _semantic(
        self, part: str, prompt: str, vector: npt.NDArray[np.float32], threshold: float
    ) -> CacheHit | None:
        with self._lock:
            index = self._indexes.get(part)
            if index is None:
                self.metrics.misses += 1
                return None
            ids, scores = index.search(vector, min(_CANDIDATES, len(index)))
            best = float(scores[0]) if len(scores) else 0.0
            self.metrics.observe_score(best)
            refused = False
            for vid, score in zip(ids.tolist(), scores.tolist(), strict=True):
                if score < threshold:
                    break
                entry = self._entries.get(self._by_vector.get(vid, ""))
                if entry is None:
                    continue
                if self._expired(entry):
                    self._drop(entry)
                    self.metrics.expirations += 1
                    continue
                if self.verifier is not None and not self.verifier(prompt, entry.prompt):
                    refused = True
                    continue
                self._entries.move_to_end(entry.key)
                self.metrics.semantic_hits += 1
                return CacheHit(
                    entry.response, score, entry.key, False, entry.prompt, entry.metadata
                )
            self.metrics.misses += 1
            if refused:
                self.metrics.rejected += 1
            elif best >= threshold - NEAR_MARGIN:
                self.metrics.near_misses += 1
            return None

    def _expired(self, entry: CacheEntry) -> bool:
        return entry.expires is not None and self._clock() >= entry.expires

    def _timed(self, t0: float, n: int = 1) -> None:
        with self._lock:
            self.metrics.lookups += n
            self.metrics.lookup_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ upkeep

    def invalidate(
        self,
        namespace: str | None = None,
        key: str | None = None,
        older_than: float | None = None,
    ) -> int:
        """Remove entries matching every given filter (namespace, key, created before a
        timestamp); with no filter, remove all. Returns how many were removed."""
        with self._lock:
            doomed = [
                e
                for e in self._entries.values()
                if (namespace is None or e.namespace == namespace)
                and (key is None or e.key == key)
                and (older_than is None or e.created < older_than)
            ]
            for e in doomed:
                self._drop(e)
        return len(doomed)

    def purge_expired(self) -> int:
        """Remove every expired entry now; returns how many."""
        with self._lock:
            doomed = [e for e in self._entries.values() if self._expired(e)]
            for e in doomed:
                self._drop(e)
            self.metrics.expirations += len(doomed)
        return len(doomed)
