"""The wrong-hit bounds' evidence shared by every instance on one Redis.

Each route's :class:`~routeguard.cache.bound.ErrorBound` counts what this process sees in
``local``. A sync (every ``interval`` seconds, and on close) sends those counts and reads
the sums back in one MULTI/EXEC: ``HINCRBYFLOAT`` of every local counter into the route's
hash ``{P}:bound:<route>``, then ``HGETALL`` of it. The bound then holds the store's sum as
``shared`` and only what it observed since as ``local``, so every instance decides on the
evidence of all of them, at most one interval late. Counters only ever add, so a lost
connection delays evidence without losing it (the counts stay local until a sync succeeds)
and a sync sent twice is impossible (the local counts are subtracted only after EXEC).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis

from routeguard.cache.bound import ErrorBound, Evidence

log = logging.getLogger("routeguard.cache")


class RedisEvidence:
    """Keeps ``bounds`` (route -> ErrorBound) summed across instances through Redis."""

    def __init__(
        self,
        url: str,
        bounds: Mapping[str, ErrorBound],
        *,
        prefix: str = "rg:cache",
        interval: float = 0.5,
    ) -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url)
        self.bounds = bounds
        self.interval = interval
        self._tag = "{" + prefix + "}"
        self._task: asyncio.Task[None] | None = None
        self.syncs = 0
        self.failures = 0

    def key(self, route: str) -> str:
        """The Redis hash of one route's counters."""
        return f"{self._tag}:bound:{quote(route, safe='')}"

    async def start(self) -> None:
        """Read the shared counts once, then sync in the background."""
        with contextlib.suppress(Exception):
            await self.sync()
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="rg-cache-evidence")

    async def sync(self) -> None:
        """Send every route's unsynced counts and read the sums back (one transaction)."""
        routes = list(self.bounds)
        if not routes:
            return
        sent: list[Evidence] = [self.bounds[r].take_local() for r in routes]
        pipe = self.redis.pipeline(transaction=True)
        for route, delta in zip(routes, sent, strict=True):
            key = self.key(route)
            for name, amount in delta.values.items():
                if amount:
                    pipe.hincrbyfloat(key, name, amount)
            pipe.hgetall(key)
        replies: list[Any] = await pipe.execute()
        sums = [r for r in replies if isinstance(r, dict)]
        for route, delta, raw in zip(routes, sent, sums, strict=True):
            shared = Evidence({k.decode(): float(v) for k, v in raw.items()})
            self.bounds[route].replace_shared(shared, delta)
        self.syncs += 1

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
            except Exception as exc:  # Redis away: counts stay local until it is back
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("cache: cannot sync the error-bound evidence (%s)", exc)

    async def aclose(self) -> None:
        """Stop syncing after a last sync (best effort), and close the client."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sync(), 2.0)
        await self.redis.aclose()
