"""The in-process state of a semantic cache: entries, their vectors' indexes, and the rules
of past invalidations; and the interface of a shared store that mirrors it.

Data flow: :class:`LocalState` is what every lookup reads. Entries sit in an LRU-ordered
dict (exact tier, by key) and their vectors in one index per partition (semantic tier;
:class:`~routeguard.cache.tiered.TieredIndex` by default, exact then HNSW). It is written
from two sides: the cache's own ``put``/``invalidate`` (:mod:`routeguard.cache.semantic`)
and, with a shared backend (:class:`CacheStore`, e.g.
:class:`~routeguard.cache.redis_store.RedisStore`), the events other instances publish,
applied through :meth:`LocalState.apply`, :meth:`LocalState.drop_key` and
:meth:`LocalState.add_rule`. Every entry carries a ``version`` (unique per write), which
lets a mirror skip its own writes coming back and converge when two writes race.

Entries are also indexed by prompt digest (the exact tier's normalisation, every context), so
a selector naming a prompt visits only that prompt's entries; any other selector scans a
snapshot of the entries without holding the lock (:meth:`LocalState.select`), taking it
only to drop what it found.

An invalidation by namespace, tenant, route, exact prompt (a :class:`Selector`, any mix) or
age is kept as a *rule* ("entries selected by S created before T are dead") as well as
applied: an entry that arrives later (a racing write, a reload) is checked against the rules,
so every instance agrees on what was invalidated.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from routeguard.cache.keys import namespace_owner, prompt_digest
from routeguard.cache.metrics import CacheMetrics
from routeguard.cache.tiered import Index

Vector = npt.NDArray[np.float32]
IndexFactory = Callable[[int], Index]
"""``factory(dim)``: a new, empty index for one partition."""

ALL: Final = "*"
"""Rule field of an invalidation of every namespace (others are ``"ns:" + namespace``)."""


def rule_field(namespace: str | None) -> str:
    """The rule a namespace invalidation is recorded under (:data:`ALL` for every one)."""
    return ALL if namespace is None else f"ns:{namespace}"


Shape = tuple[bool, bool, bool, bool]
"""Which of (namespace, tenant, route, prompt) a :class:`Selector` constrains."""


@dataclass(frozen=True, slots=True)
class Selector:
    """The entries an invalidation covers: those matching every part given. ``tenant`` and
    ``route`` are read from the namespace (:func:`~routeguard.cache.keys.namespace_owner`),
    ``prompt`` is a :func:`~routeguard.cache.keys.prompt_digest`. No part: every entry."""

    namespace: str | None = None
    tenant: str | None = None
    route: str | None = None
    prompt: str | None = None

    @property
    def shape(self) -> Shape:
        """Which parts this selector constrains."""
        return (
            self.namespace is not None,
            self.tenant is not None,
            self.route is not None,
            self.prompt is not None,
        )

    def field(self) -> str:
        """The rule field this selector is recorded under (the namespace-only and the empty
        selector keep the fields ``ns:<namespace>`` and :data:`ALL`)."""
        if self.tenant is None and self.route is None and self.prompt is None:
            return rule_field(self.namespace)
        parts = {k: getattr(self, k) for k in _PARTS if getattr(self, k) is not None}
        return _SELECTED + _rule_enc.encode(parts).decode()

    @classmethod
    def parse(cls, field: str) -> Selector | None:
        """The selector a rule field records; None for a field this version cannot read."""
        if field == ALL:
            return cls()
        if field.startswith("ns:"):
            return cls(namespace=field[3:])
        if field.startswith(_SELECTED):
            try:
                parts = msgspec.json.decode(field[len(_SELECTED) :], type=dict[str, str])
                return cls(**{k: v for k, v in parts.items() if k in _PARTS})
            except (msgspec.DecodeError, TypeError):
                return None
        return None


_PARTS: Final = ("namespace", "tenant", "route", "prompt")
_SELECTED: Final = "sel:"
_rule_enc = msgspec.json.Encoder(order="sorted")


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
    version: str = ""


class LocalState:
    """Entries (LRU order), per-partition indexes and invalidation rules, under one lock.

    Callers hold :attr:`lock` around any sequence of reads and writes that must be atomic;
    each method takes it too (it is re-entrant).
    """

    def __init__(
        self,
        dim: int,
        max_entries: int,
        index_factory: IndexFactory,
        clock: Callable[[], float],
        metrics: CacheMetrics,
    ) -> None:
        self.dim = dim
        self.max_entries = max_entries
        self.index_factory = index_factory
        self.clock = clock
        self.metrics = metrics
        self.lock = threading.RLock()
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()  # oldest first
        self.by_vector: dict[int, str] = {}
        self.indexes: dict[str, Index] = {}
        self.rules: dict[str, float] = {}  # rule field -> entries created before are dead
        self._shapes: set[Shape] = set()  # the selector shapes among the rules
        self._digests: dict[str, str] = {}  # entry key -> prompt digest
        self.by_digest: dict[str, set[str]] = {}  # prompt digest -> keys of its entries
        self.visited = 0  # entries a selection has examined (its cost, for tests and stats)
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.entries)

    def version_of(self, key: str) -> str | None:
        """The version of the entry under ``key``, or None."""
        entry = self.entries.get(key)
        return None if entry is None else entry.version

    def expired(self, entry: CacheEntry) -> bool:
        """Whether the entry's TTL has run out."""
        return entry.expires is not None and self.clock() >= entry.expires

    def dead(self, entry: CacheEntry) -> bool:
        """Whether an invalidation rule covers the entry: for each shape of selector among
        the rules, the one selector of that shape the entry falls under is looked up (a
        few dict lookups, however many rules there are)."""
        if not self.rules:
            return False
        owner = None
        for shape in self._shapes:
            if (shape[1] or shape[2]) and owner is None:
                owner = namespace_owner(entry.namespace)
                if owner is None:
                    continue  # not a gateway namespace: no tenant or route selects it
            sel = Selector(
                entry.namespace if shape[0] else None,
                owner[0] if shape[1] and owner else None,
                owner[1] if shape[2] and owner else None,
                self.digest(entry) if shape[3] else None,
            )
            before = self.rules.get(sel.field())
            if before is not None and entry.created < before:
                return True
        return False

    def digest(self, entry: CacheEntry) -> str:
        """The entry's :func:`~routeguard.cache.keys.prompt_digest` (kept while its key is
        held here: one key always holds the same normalised prompt)."""
        d = self._digests.get(entry.key)
        return prompt_digest(entry.prompt) if d is None else d

    def selects(self, sel: Selector, entry: CacheEntry) -> bool:
        """Whether ``entry`` matches every part of ``sel``."""
        if sel.namespace is not None and entry.namespace != sel.namespace:
            return False
        if sel.tenant is not None or sel.route is not None:
            owner = namespace_owner(entry.namespace)
            if owner is None:
                return False
            if (sel.tenant is not None and owner[0] != sel.tenant) or (
                sel.route is not None and owner[1] != sel.route
            ):
                return False
        return sel.prompt is None or self.digest(entry) == sel.prompt

    def insert(self, entry: CacheEntry, vector: Vector) -> bool:
        """Store ``entry`` (replacing its key) as the most recently used, evicting the least
        recently used past ``max_entries``; ``vector_id`` is assigned here. False (and
        nothing stored) if a rule already invalidated it."""
        with self.lock:
            if self.dead(entry):
                return False
            old = self.entries.get(entry.key)
            if old is not None:
                self.drop(old)
            vid = entry.vector_id = self._next_id
            self._next_id += 1
            index = self.indexes.get(entry.partition)
            if index is None:
                index = self.indexes[entry.partition] = self.index_factory(self.dim)
            index.add(np.array([vid], dtype=np.uint64),
                      np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1))  # fmt: skip
            self.entries[entry.key] = entry
            digest = self._digests.get(entry.key) or prompt_digest(entry.prompt)
            self._digests[entry.key] = digest
            self.by_digest.setdefault(digest, set()).add(entry.key)
            self.by_vector[vid] = entry.key
            while len(self.entries) > self.max_entries:
                self.drop(next(iter(self.entries.values())))
                self.metrics.evictions += 1
            return True

    def apply(self, entry: CacheEntry, vector: Vector) -> bool:
        """A write seen in the shared store: insert it unless it is already here (same
        version), expired or invalidated. True if the local state changed."""
        with self.lock:
            if self.version_of(entry.key) == entry.version or self.expired(entry):
                return False
            return self.insert(entry, vector)

    def drop(self, entry: CacheEntry) -> None:
        """Remove ``entry`` from both tiers."""
        with self.lock:
            if self.entries.pop(entry.key, None) is not None:
                digest = self._digests.pop(entry.key, "")
                keys = self.by_digest.get(digest)
                if keys is not None:
                    keys.discard(entry.key)
                    if not keys:
                        del self.by_digest[digest]
            self.by_vector.pop(entry.vector_id, None)
            index = self.indexes.get(entry.partition)
            if index is not None:
                index.remove(entry.vector_id)
                if len(index) == 0:
                    del self.indexes[entry.partition]

    def drop_key(self, key: str, version: str | None = None) -> bool:
        """Remove the entry under ``key`` (only if it has ``version``, when given)."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or (version is not None and entry.version != version):
                return False
            self.drop(entry)
            return True

    def matching(
        self, namespace: str | None, key: str | None, older_than: float | None
    ) -> list[CacheEntry]:
        """Entries passing every given filter (all of them when none is given)."""
        if key is None:
            return self.select(Selector(namespace), older_than)
        with self.lock:
            entry = self.entries.get(key)
            self.visited += entry is not None
            if entry is None or (namespace is not None and entry.namespace != namespace):
                return []
            return [] if older_than is not None and entry.created >= older_than else [entry]

    def select(self, sel: Selector, older_than: float | None = None) -> list[CacheEntry]:
        """Entries matching ``sel`` (and created before ``older_than``, when given). A
        prompt is looked up in the digest index (its entries only); otherwise a snapshot of
        every entry is filtered with the lock released, so that a caller on another thread
        does not stall lookups (an entry written meanwhile is newer than the snapshot)."""
        with self.lock:
            if sel.prompt is not None:
                found = [self.entries[k] for k in self.by_digest.get(sel.prompt, ())]
            else:
                found = list(self.entries.values())
            self.visited += len(found)
        return [
            e
            for e in found
            if (older_than is None or e.created < older_than) and self.selects(sel, e)
        ]

    def drop_found(self, found: Iterable[CacheEntry]) -> list[CacheEntry]:
        """Drop the entries :meth:`select` returned that are still held as they were (one
        rewritten or dropped since is left alone); returns those dropped."""
        with self.lock:
            gone = [e for e in found if self.entries.get(e.key) is e]
            for entry in gone:
                self.drop(entry)
            return gone

    def add_rule(self, field: str, before: float, *, scan: bool = True) -> list[CacheEntry]:
        """Record "entries under ``field`` created before ``before`` are dead" and drop the
        ones here (unless ``scan`` is False: a caller that reloads every entry anyway);
        returns them. A field this version cannot read is recorded, not applied."""
        with self.lock:
            if before > self.rules.get(field, -math.inf):
                self.rules[field] = before
            sel = Selector.parse(field)
            if sel is None:
                return []
            self._shapes.add(sel.shape)
            if not scan:
                return []
        # The rule is in force before the scan: an entry written during it is checked
        # against the rule on insert, and the scan drops those already here.
        return self.drop_found(self.select(sel, before))

    def vectors(self, entries: Sequence[CacheEntry]) -> Vector:
        """The stored unit vectors of ``entries``, one row each, in order."""
        out = np.empty((len(entries), self.dim), np.float32)
        with self.lock:
            by_part: dict[str, list[int]] = {}
            for row, entry in enumerate(entries):
                by_part.setdefault(entry.partition, []).append(row)
            for part, rows in by_part.items():
                ids = [entries[r].vector_id for r in rows]
                out[rows] = self.indexes[part].get(ids)
        return out

    def clear(self) -> None:
        """Forget every entry and rule."""
        with self.lock:
            self.entries.clear()
            self.by_vector.clear()
            self.indexes.clear()
            self.rules.clear()
            self._shapes.clear()
            self._digests.clear()
            self.by_digest.clear()


class CacheStore(Protocol):
    """A shared backend a :class:`LocalState` mirrors (see ``routeguard.cache.redis_store``).

    Writes are queued by the synchronous ``write_*`` calls (the cache's API stays
    synchronous) and sent in the background; :meth:`flush` waits until they are sent.
    """

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run and :meth:`aclose` has not."""
        ...

    @property
    def healthy(self) -> bool:
        """Whether the store is started and currently reachable."""
        ...

    async def start(self, state: LocalState) -> None:
        """Load the shared entries into ``state`` and begin mirroring."""
        ...

    async def flush(self) -> None:
        """Wait until every queued write has reached the store."""
        ...

    async def aclose(self) -> None:
        """Flush, stop mirroring and release connections."""
        ...

    def write_put(self, entry: CacheEntry, vector: Vector, ttl: float | None) -> None:
        """Queue the write of ``entry`` (expiring after ``ttl`` seconds, if given)."""
        ...

    def write_delete(
        self, key: str, version: str | None, namespace: str | None, older_than: float | None
    ) -> None:
        """Queue the removal of ``key`` (if still at ``version`` and passing the filters)."""
        ...

    def write_rule(self, field: str, before: float, doomed: Sequence[CacheEntry]) -> None:
        """Queue an invalidation rule; ``doomed`` are the entries known to fall under it."""
        ...

    async def pull(self, sel: Selector) -> int:
        """Load the stored entries ``sel`` selects that the local state does not hold."""
        ...
