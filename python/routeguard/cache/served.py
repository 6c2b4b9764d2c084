"""The hits one instance served, shared through Redis so that feedback reaches any instance.

``POST /v1/feedback`` names a request by id; the gateway remembers what served each id in a
bounded index of its own process. With ``cache.backend: redis`` a request served from the
cache is also written to ``{P}:served:<request_id>`` (a small JSON object: key id, route,
model, cache result, entry key; expiring after :data:`TTL` seconds), so that an instance
receiving feedback on a hit another one served reads it back (:meth:`RedisServed.recall`)
and counts it in the route's bound and drops the entry, as the serving instance would.
:meth:`RedisServed.share` (synchronous) starts the write on the running loop; a write that
fails, or one past :data:`PENDING` under way, is dropped (that hit can then be rated only on
the instance that served it), never retried into a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import msgspec
import redis.asyncio as aioredis

log = logging.getLogger("routeguard.cache")
TTL = 86_400  # seconds a served hit can be rated from another instance
PENDING = 1_000  # writes under way at most (past it a hit is not shared)


class RedisServed:
    """``request_id -> record`` of served hits, in Redis."""

    def __init__(self, url: str, *, prefix: str = "rg:cache", ttl: int = TTL) -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url)
        self.ttl = ttl
        self._tag = "{" + prefix + "}"
        self._writing: set[asyncio.Task[None]] = set()
        self.written = 0
        self.failures = 0

    def key(self, request_id: str) -> str:
        """The Redis key of one served request."""
        return f"{self._tag}:served:{quote(request_id, safe='')}"

    def share(self, request_id: str, record: Mapping[str, Any]) -> None:
        """Write ``record`` for ``request_id`` in the background, on the running loop (none
        running, as for a library caller: nothing is shared)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if len(self._writing) >= PENDING:  # Redis slower than the hits: drop, never queue up
            self.failures += 1
            return
        task = loop.create_task(self._write(self.key(request_id), msgspec.json.encode(record)))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, key: str, value: bytes) -> None:
        try:
            await self.redis.set(key, value, ex=self.ttl)
            self.written += 1
        except Exception as exc:  # Redis away: this hit stays rateable here only
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("cache: cannot share served hits (%s)", exc)

    async def flush(self) -> None:
        """Wait for the writes under way."""
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def recall(self, request_id: str) -> dict[str, Any] | None:
        """The record another instance shared for ``request_id`` (None: unknown, expired,
        or Redis unreachable)."""
        try:
            raw = await self.redis.get(self.key(request_id))
        except Exception as exc:
            log.warning("cache: cannot read a served hit (%s)", exc)
            return None
        if raw is None:
            return None
        try:
            value = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return None
        return value if isinstance(value, dict) else None

    async def aclose(self) -> None:
        """Wait for the writes under way (at most 2 s), then close the client."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        await self.redis.aclose()
