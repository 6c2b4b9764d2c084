"""The hits one instance served, shared through Redis so that feedback reaches any instance.

``POST /v1/feedback`` names a request by id; the gateway remembers what served each id in a
bounded index of its own process. With ``cache.backend: redis`` a request served from the
cache is also written to ``{P}:served:<request_id>`` (a small JSON object: key id, route,
model, cache result, entry key; expiring after :data:`TTL` seconds), so that an instance
receiving feedback on a hit another one served reads it back (:meth:`RedisServed.recall`)
and counts it in the route's bound and drops the entry, as the serving instance would.
Writes are queued by the synchronous :meth:`RedisServed.share` and sent in pipelines by one
background task; a write that fails is dropped (that hit can then be rated only on the
instance that served it), never retried into a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import msgspec
import redis.asyncio as aioredis

log = logging.getLogger("routeguard.cache")
TTL = 86_400  # seconds a served hit can be rated from another instance
QUEUE = 10_000  # records waiting to be written at most (the oldest are dropped past it)


class RedisServed:
    """``request_id -> record`` of served hits, in Redis."""

    def __init__(self, url: str, *, prefix: str = "rg:cache", ttl: int = TTL) -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url)
        self.ttl = ttl
        self._tag = "{" + prefix + "}"
        self._queue: deque[tuple[str, bytes]] = deque(maxlen=QUEUE)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failures = 0

    def key(self, request_id: str) -> str:
        """The Redis key of one served request."""
        return f"{self._tag}:served:{quote(request_id, safe='')}"

    def start(self) -> None:
        """Begin writing queued records (on the running loop)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name="rg-cache-served")

    def share(self, request_id: str, record: Mapping[str, Any]) -> None:
        """Queue ``record`` for ``request_id`` (written within milliseconds)."""
        self._queue.append((self.key(request_id), msgspec.json.encode(record)))
        self._wake.set()

    async def flush(self) -> None:
        """Write every queued record now."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), 512))]
            pipe = self.redis.pipeline(transaction=False)
            for key, value in batch:
                pipe.set(key, value, ex=self.ttl)
            try:
                await pipe.execute()
                self.written += len(batch)
            except Exception as exc:  # Redis away: these hits stay rateable here only
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("cache: cannot share served hits (%s)", exc)
                return

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

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def aclose(self) -> None:
        """Write what is queued (best effort), stop and close the client."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        await self.redis.aclose()
