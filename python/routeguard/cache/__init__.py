"""routeguard.cache: the semantic response cache (see DESIGN.md, "Cache").

``SemanticCache`` is the one object most users need: ``put``/``get`` (exact tier, then a
nearest-neighbour search inside the request's namespace and context), TTL, LRU cap,
snapshots, metrics. Pass ``store=RedisStore(url)`` to share it between processes through
plain Redis. ``ErrorBound`` is the wrong-hit bound the gateway applies per route
(``cache.max_error_rate``). The rest are its parts, exported for those who tune or replace them: the
vector indexes, the close-call verifier, the counters. ``RedisStore`` is imported on first
use, so the memory-only cache never loads the Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeguard.cache.ann import HnswIndex
from routeguard.cache.bound import ErrorBound
from routeguard.cache.index import VectorIndex, cosine, simd_level
from routeguard.cache.keys import exact_key, normalise, partition_key, request_namespace
from routeguard.cache.metrics import CacheMetrics
from routeguard.cache.semantic import (
    DEFAULT_THRESHOLD,
    CacheEntry,
    CacheHit,
    SemanticCache,
    Verifier,
)
from routeguard.cache.state import CacheStore
from routeguard.cache.tiered import TieredIndex
from routeguard.cache.verify import HitVerifier

if TYPE_CHECKING:
    from routeguard.cache.redis_store import RedisStore, RedisStoreStats

__all__ = [
    "DEFAULT_THRESHOLD",
    "CacheEntry",
    "CacheHit",
    "CacheMetrics",
    "CacheStore",
    "ErrorBound",
    "HitVerifier",
    "HnswIndex",
    "RedisStore",
    "RedisStoreStats",
    "SemanticCache",
    "TieredIndex",
    "VectorIndex",
    "Verifier",
    "cosine",
    "exact_key",
    "normalise",
    "partition_key",
    "request_namespace",
    "simd_level",
]


def __getattr__(name: str) -> Any:
    """Load the Redis backend on first use (it imports the Redis client)."""
    if name in ("RedisStore", "RedisStoreStats"):
        from routeguard.cache import redis_store

        return getattr(redis_store, name)
    raise AttributeError(f"module 'routeguard.cache' has no attribute {name!r}")
