"""The hits one instance served, shared through Redis so that feedback reaches any instance.

``POST /v1/feedback`` names a request by id; the gateway remembers what served each id in a
bounded index of its own process. With ``cache.backend: redis`` a request served from the
cache is also written to ``{P}:served:<request_id>`` (a small JSON object: key id, route,
model, cache result, entry key; expiring after :data:`TTL` seconds), so that an instance
receiving feedback on a hit another one served reads it back (:meth:`RedisServed.recall`)
and counts it in the route's bound and drops the entry, as the serving instance would.

The gateway awaits :meth:`RedisServed.durable` before it answers a hit, so the record is in
Redis before the client can know the request id: feedback sent through any instance the
moment the answer arrives finds it. The wait is bounded (:data:`WAIT`): past it, or when
the write fails, the hit is answered anyway (counted in ``late``; a late write goes on in
the background), and until a write comes back within :data:`WAIT` again hits stop
waiting (``unwaited``), so a slow or unreachable Redis costs at most one :data:`WAIT` per
outage, never a failed hit. A write that fails, or one past :data:`PENDING` under way, is
dropped (that hit can then be rated only on the instance that served it), never retried
into a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import msgspec
import redis.asyncio as aioredis

log = logging.getLogger("routeguard.cache")
TTL = 86_400  # seconds a served hit can be rated from another instance
PENDING = 1_000  # writes under way at most (past it a hit is not shared)
WAIT = 0.25  # seconds a hit waits for its record to be in Redis before it is answered


class RedisServed:
    """``request_id -> record`` of served hits, in Redis."""

    def __init__(
        self, url: str, *, prefix: str = "rg:cache", ttl: int = TTL, wait: float = WAIT
    ) -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url)
        self.ttl = ttl
        self.wait = wait
        self._tag = "{" + prefix + "}"
        self._writing: set[asyncio.Task[bool]] = set()
        self.written = 0  # records in Redis
        self.failures = 0  # writes that failed or were dropped
        self.late = 0  # hits answered before their record was in (the wait ran out, or failed)
        self.unwaited = 0  # hits answered without waiting (a write had failed or was late)
        self._waiting = True  # writes come back in time: hits wait for theirs

    def key(self, request_id: str) -> str:
        """The Redis key of one served request."""
        return f"{self._tag}:served:{quote(request_id, safe='')}"

    def share(self, request_id: str, record: Mapping[str, Any]) -> asyncio.Task[bool] | None:
        """Start writing ``record`` for ``request_id`` on the running loop; the write's task
        (None when nothing is written: no loop running, as for a library caller, or too
        many writes under way)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if len(self._writing) >= PENDING:  # Redis slower than the hits: drop, never queue up
            self.failures += 1
            return None
        task = loop.create_task(self._write(self.key(request_id), msgspec.json.encode(record)))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return task

    async def durable(self, request_id: str, record: Mapping[str, Any]) -> bool:
        """Write ``record`` and wait (at most ``wait`` s) until Redis has it; whether it
        has. Never raises: a late write goes on in the background."""
        task = self.share(request_id, record)
        if task is None:
            return False
        if not self._waiting:  # Redis failed or was slow lately: answer now, write anyway
            self.unwaited += 1
            return False
        done, _ = await asyncio.wait({task}, timeout=self.wait)
        if task in done and task.result():
            return True
        self.late += 1
        self._waiting = False  # until a write succeeds again
        return False

    async def _write(self, key: str, value: bytes) -> bool:
        began = time.monotonic()
        try:
            await self.redis.set(key, value, ex=self.ttl)
        except Exception as exc:  # Redis away: this hit stays rateable here only
            self.failures += 1
            self._waiting = False
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("cache: cannot share served hits (%s)", exc)
            return False
        self.written += 1
        if time.monotonic() - began <= self.wait:  # in time again: hits wait for theirs
            self._waiting = True
        return True

    def stats(self) -> dict[str, int]:
        """The served-hit records' counters (``GET /admin/cache/stats``: ``served_records``)."""
        return {"written": self.written, "failed": self.failures, "late": self.late,
                "unwaited": self.unwaited, "pending": len(self._writing)}  # fmt: skip

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
