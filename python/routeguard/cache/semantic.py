"""The semantic cache: exact tier, then nearest-neighbour search inside the request's partition.

``get(prompt, namespace, context)``: partition = namespace + context digest (``keys.py``) ->
exact tier (normalised-prompt digest, no embedding) -> embed the prompt -> search the
partition's index (exact scan while small, HNSW past ``ann_threshold`` vectors:
``tiered.py``) -> the best live candidate whose cosine reaches ``threshold`` and that the
optional ``verifier`` accepts is a hit. ``put`` embeds and stores the entry in both tiers.
Entries expire by TTL (checked lazily on read and by ``purge_expired``) and the least
recently used are evicted past ``max_entries``. ``invalidate`` removes entries by namespace,
tenant, route, exact prompt or age; ``correct`` replaces a cached answer in place.

State lives in process memory (:class:`~routeguard.cache.state.LocalState`). With a shared
``store`` (:class:`~routeguard.cache.redis_store.RedisStore`), every write is also queued to
the store, and the store applies the other instances' writes to this state in the
background, so lookups stay local; such a cache must be started (``await cache.start()``
or ``async with cache:``) and closed (``await cache.aclose()``). ``save``/``load`` write
and read a snapshot file (``snapshot.py``).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from routeguard.cache.bound import FLOOR, Decision
from routeguard.cache.judge import same_answer
from routeguard.cache.keys import Context, exact_key, partition_key, prompt_digest
from routeguard.cache.metrics import CacheMetrics
from routeguard.cache.state import (
    CacheEntry,
    CacheStore,
    IndexFactory,
    LocalState,
    Selector,
)
from routeguard.cache.tiered import DEFAULT_ANN_THRESHOLD, TieredIndex
from routeguard.defaults import CACHE_MAX_ENTRIES, CACHE_THRESHOLD, CACHE_TTL, CACHE_VERIFY
from routeguard.embed.base import Embedder

__all__ = ["CacheEntry", "CacheHit", "SemanticCache", "Verifier"]

DEFAULT_THRESHOLD = CACHE_THRESHOLD
NEAR_MARGIN = 0.05
_CANDIDATES = 4  # neighbours examined per lookup (expired or refused ones are skipped)


Verifier = Callable[[str, str], bool]
"""``verifier(query, cached_prompt)``: a second look at a close call; False refuses the hit."""


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
    """Exact + semantic response cache with TTL, LRU size cap, namespaces and contexts.

    Its defaults are the proxy's (``routeguard.defaults``: threshold 0.90, one hour TTL,
    100,000 entries, the :class:`~routeguard.cache.verify.HitVerifier` on), so a cache built
    here decides hits as the gateway does. ``verifier``: ``"default"`` (a ``HitVerifier``
    while ``CACHE_VERIFY`` is on), ``None`` (no second look) or any
    ``verifier(query, cached_prompt) -> bool``.
    ``ann_threshold``: vectors in one partition from which it is searched through HNSW
    (None: always exact); ``index_factory(dim)`` replaces the default per-partition index
    altogether. ``store``: a shared backend (``RedisStore``); the cache then needs
    ``await cache.start()`` before use and ``await cache.aclose()`` after, or
    ``async with cache:``. In memory mode both are no-ops.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        threshold: float = CACHE_THRESHOLD,
        ttl: float | None = CACHE_TTL,
        max_entries: int = CACHE_MAX_ENTRIES,
        verifier: Verifier | Literal["default"] | None = "default",
        clock: Callable[[], float] = time.time,
        ann_threshold: int | None = DEFAULT_ANN_THRESHOLD,
        index_factory: IndexFactory | None = None,
        store: CacheStore | None = None,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if verifier == "default":
            from routeguard.cache.verify import HitVerifier

            verifier = HitVerifier() if CACHE_VERIFY else None
        if embedder is None:
            from routeguard.embed import default_embedder

            embedder = default_embedder()
        if index_factory is None:

            def index_factory(dim: int) -> TieredIndex:
                return TieredIndex(dim, threshold=ann_threshold)

        self.embedder = embedder
        self.threshold = threshold
        self.ttl = ttl
        self.max_entries = max_entries
        self.verifier: Verifier | None = verifier
        self.metrics = CacheMetrics()
        self.store = store
        self._clock = clock
        self._state = LocalState(embedder.dim, max_entries, index_factory, clock, self.metrics)
        self._lock = self._state.lock
        self._instance = uuid.uuid4().hex[:12]
        self._versions = count(1)

    def __len__(self) -> int:
        return len(self._state)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the shared store's entries and begin mirroring it (no-op without a store)."""
        if self.store is not None and not self.store.started:
            await self.store.start(self._state)

    async def flush(self) -> None:
        """Wait until every write so far has reached the shared store (no-op without one)."""
        if self.store is not None:
            await self.store.flush()

    async def aclose(self) -> None:
        """Flush pending writes and stop mirroring (no-op without a store)."""
        if self.store is not None:
            await self.store.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_started(self) -> None:
        if self.store is not None and not self.store.started:
            raise RuntimeError(
                "this SemanticCache has a shared store: `await cache.start()` "
                "(or `async with cache:`) before using it"
            )

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
        self._check_started()
        part = partition_key(namespace, context)
        key = exact_key(part, prompt)
        now = self._clock()
        life = ttl if ttl is not None else self.ttl
        entry = CacheEntry(
            key, part, namespace, prompt, response, now,
            None if life is None else now + life, 0, dict(metadata or {}),
            f"{self._instance}:{next(self._versions)}",
        )  # fmt: skip
        with self._lock:
            self._state.insert(entry, vector)
            if self.store is not None:
                try:
                    self.store.write_put(entry, vector, life)
                except BaseException:  # e.g. msgpack cannot encode the response: undo
                    self._state.drop_key(key, entry.version)
                    raise
            self.metrics.puts += 1
        return key

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
        if hit is None and part in self._state.indexes:
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
        if todo and part in self._state.indexes:
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
            entry = self._state.entries.get(key)
            if entry is None:
                return None
            if self._state.expired(entry):
                self._state.drop(entry)
                self.metrics.expirations += 1
                return None
            self._state.entries.move_to_end(key)
            self.metrics.exact_hits += 1
            self.metrics.observe_score(1.0)
            return CacheHit(entry.response, 1.0, key, True, entry.prompt, entry.metadata)

    def _semantic(
        self, part: str, prompt: str, vector: npt.NDArray[np.float32], threshold: float
    ) -> CacheHit | None:
        with self._lock:
            index = self._state.indexes.get(part)
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
                entry = self._state.entries.get(self._state.by_vector.get(vid, ""))
                if entry is None:
                    continue
                if self._state.expired(entry):
                    self._state.drop(entry)
                    self.metrics.expirations += 1
                    continue
                if self.verifier is not None and not self.verifier(prompt, entry.prompt):
                    refused = True
                    continue
                self._state.entries.move_to_end(entry.key)
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

    def probe(
        self,
        prompt: str,
        namespace: str,
        context: Context | None,
        vector: npt.NDArray[np.float32],
        decide: Callable[[float, float | None], Decision],
    ) -> tuple[CacheHit | None, CacheHit | None, Decision | None]:
        """The semantic tier under a wrong-hit bound (``cache.max_error_rate``): the best
        live candidate the verifier accepts at or above the bound's floor is handed to
        ``decide``; returns (the hit if served, the candidate, the decision)."""
        t0 = time.perf_counter()
        part = partition_key(namespace, context)
        cand: CacheHit | None = None
        with self._lock:
            index = self._state.indexes.get(part)
            ids: list[int] = []
            scores: list[float] = []
            if index is not None:
                found_ids, found_scores = index.search(vector, min(_CANDIDATES, len(index)))
                ids, scores = found_ids.tolist(), found_scores.tolist()
            refused = False
            margin = None
            for pos, (vid, score) in enumerate(zip(ids, scores, strict=True)):
                if score < FLOOR:
                    break
                entry = self._state.entries.get(self._state.by_vector.get(int(vid), ""))
                if entry is None:
                    continue
                if self._state.expired(entry):
                    self._state.drop(entry)
                    self.metrics.expirations += 1
                    continue
                if self.verifier is not None and not self.verifier(prompt, entry.prompt):
                    refused = True
                    continue
                cand = CacheHit(
                    entry.response, float(score), entry.key, False, entry.prompt, entry.metadata
                )
                margin = float(score) - self._rival(entry, ids[pos + 1 :], scores[pos + 1 :])
                break
            if len(scores):
                self.metrics.observe_score(float(scores[0]))
            if refused and cand is None:
                self.metrics.rejected += 1
        decision = decide(cand.score, margin) if cand is not None else None
        with self._lock:
            if decision is not None and decision.serve and cand is not None:
                entry = self._state.entries.get(cand.key)
                if entry is not None:
                    self._state.entries.move_to_end(cand.key)
                self.metrics.semantic_hits += 1
            else:
                self.metrics.misses += 1
        self._timed(t0)
        served = cand if decision is not None and decision.serve else None
        return served, cand, decision

    def _rival(self, entry: CacheEntry, ids: list[int], scores: list[float]) -> float:
        """The similarity of the nearest entry after ``entry`` holding another answer (the
        floor when none does): how far a candidate stands out, the bound's stratum. An
        entry with the same answer is no rival (a cluster of paraphrases stays clear)."""
        for vid, score in zip(ids, scores, strict=True):
            if score < FLOOR:
                break
            other = self._state.entries.get(self._state.by_vector.get(int(vid), ""))
            if other is not None and not same_answer(entry.response, other.response):
                return float(score)
        return FLOOR

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
        *,
        tenant: str | None = None,
        route: str | None = None,
        prompt: str | None = None,
    ) -> int:
        """Remove entries matching every given filter: namespace, exact key, created before a
        timestamp, and for the gateway's namespaces tenant and route
        (:func:`~routeguard.cache.keys.namespace_owner`); ``prompt`` matches as the exact
        tier does (same normalisation), in every context. With no filter, remove all.
        Returns how many were removed here. A ``prompt`` visits only that prompt's entries;
        other filters scan every entry without holding the cache's lock (call it from a
        worker thread, as the gateway does, to keep the scan off an event loop).

        With a shared store the invalidation reaches every instance: a key is deleted from
        the store; any other filter becomes a rule that also covers entries another
        instance holds that this one does not, or writes concurrently with an older
        creation time.
        """
        self._check_started()
        sel = Selector(namespace, tenant, route, None if prompt is None else prompt_digest(prompt))
        if self.store is None or key is not None:
            if key is not None:
                with self._lock:
                    found = [e for e in self._state.matching(namespace, key, older_than)
                             if self._state.selects(sel, e)]  # fmt: skip
            else:  # entries put while this runs are newer than ``before``: they stay
                cut = math.nextafter(self._clock(), math.inf) if older_than is None else older_than
                found = self._state.select(sel, cut)
            with self._lock:
                doomed = self._state.drop_found(found)
                # A key the other filters refuse here is not deleted elsewhere either (the
                # store's delete can check namespace and age, not tenant, route or prompt).
                narrowed = sel.tenant is not None or sel.route is not None or prompt is not None
                if self.store is not None and key is not None and (doomed or not narrowed):
                    version = doomed[0].version if doomed else None
                    self.store.write_delete(key, version, namespace, older_than)
                return len(doomed)
        # "Everything up to now" includes entries put at this very clock reading.
        before = math.nextafter(self._clock(), math.inf) if older_than is None else older_than
        field = sel.field()
        doomed = self._state.add_rule(field, before)  # scans without holding the lock
        self.store.write_rule(field, before, doomed)
        return len(doomed)

    async def pull(
        self,
        namespace: str | None = None,
        *,
        tenant: str | None = None,
        route: str | None = None,
        prompt: str | None = None,
    ) -> int:
        """Load the shared store's entries the filters select that this instance does not
        hold (its own LRU may have evicted them), so that a :meth:`correct` after it reaches
        them too; returns how many were loaded (0 without a store). Scans every stored entry:
        meant for admin operations, not the request path. An instance that never evicted
        an entry holds every live one already, and skips the scan."""
        if self.store is None or self.metrics.evictions == 0:
            return 0
        self._check_started()
        digest = None if prompt is None else prompt_digest(prompt)
        return await self.store.pull(Selector(namespace, tenant, route, digest))

    def correct(
        self,
        prompt: str,
        response: Any,
        namespace: str | None = None,
        *,
        tenant: str | None = None,
        route: str | None = None,
    ) -> int:
        """Replace the cached answer of ``prompt`` (matched as the exact tier matches it, in
        every context) in the entries the filters select; returns how many were replaced
        here. A callable ``response`` is given each entry's cached response and returns its
        replacement (the gateway keeps each completion's shape this way). Each entry keeps
        its key, vector, creation and expiry times; its metadata gains ``corrected`` (the
        time); with a shared store the new version reaches every instance like a put
        (``await cache.pull(...)`` with the same filters first, to reach the entries this
        instance's own LRU evicted but others still serve)."""
        self._check_started()
        sel = Selector(namespace, tenant, route, prompt_digest(prompt))
        replaced = 0
        with self._lock:
            now = self._clock()
            for old in self._state.select(sel):
                if self._state.expired(old):
                    self._state.drop(old)
                    self.metrics.expirations += 1
                    continue
                new = CacheEntry(
                    old.key, old.partition, old.namespace, old.prompt,
                    response(old.response) if callable(response) else response,
                    old.created, old.expires, 0, {**old.metadata, "corrected": now},
                    f"{self._instance}:{next(self._versions)}",
                )  # fmt: skip
                vector = self._state.vectors([old])[0]
                if self.store is not None:  # raises before any change if it cannot encode
                    life = None if old.expires is None else max(old.expires - now, 1e-3)
                    self.store.write_put(new, vector, life)
                self._state.insert(new, vector)
                replaced += 1
        return replaced

    def purge_expired(self) -> int:
        """Remove every expired entry from this instance now; returns how many (a shared
        store expires its copies by itself)."""
        with self._lock:
            doomed = [e for e in self._state.entries.values() if self._state.expired(e)]
            for e in doomed:
                self._state.drop(e)
            self.metrics.expirations += len(doomed)
        return len(doomed)

    # ------------------------------------------------------------------ snapshots

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write every live entry and its vector to ``path`` (atomically: a temporary file
        renamed over it); returns how many entries were written. Responses and metadata
        must be msgpack-encodable (JSON-like values, bytes)."""
        from routeguard.cache import snapshot

        with self._lock:
            live = [e for e in self._state.entries.values() if not self._state.expired(e)]
            vectors = self._state.vectors(live)
        snapshot.write(path, self._state.dim, live, vectors)
        return len(live)

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedder: Embedder, **kwargs: Any) -> SemanticCache:
        """A cache holding the entries saved at ``path`` that have not expired since (each
        keeps its creation and expiry times); ``kwargs`` as for the constructor. The
        embedder must have the snapshot's dimension. Meant for memory mode: with a shared
        ``store``, ``start()`` replaces the local state with the store's."""
        from routeguard.cache import snapshot

        cache = cls(embedder, **kwargs)
        dim, entries, vectors = snapshot.read(path)
        if dim != embedder.dim:
            raise ValueError(
                f"cache snapshot {os.fspath(path)!r} holds {dim}-d vectors but the embedder "
                f"makes {embedder.dim}-d ones: load it with the embedder it was saved with"
            )
        with cache._lock:
            for entry, vector in zip(entries, vectors, strict=True):
                if not cache._state.expired(entry):
                    cache._state.insert(entry, vector)
        return cache
