"""The per-minute cap on a route's judge-model calls, shared by every instance on one Redis.

With ``cache.backend: redis`` each route's :class:`~routeguard.cache.judge_limit.JudgeLimiter`
asks :meth:`RedisJudgeWindow.take` for a slot after its own (per-instance) check grants one.
The window is a sorted set ``{P}:judge:<route>`` of the calls made, scored by when each
began; one Lua script drops the calls older than the window, counts the rest and adds the
new call only when fewer than the cap are left, so concurrent instances never overshoot (the
check and the add are one atomic step in Redis). A slot whose call is not made is removed
again (:meth:`RedisJudgeWindow.give_back`). When Redis cannot answer within :data:`TIMEOUT`,
``take`` returns None and the limiter keeps to its per-instance cap alone.

Times are the callers' clocks (``time.time`` unless a test injects one), so instances whose
clocks disagree by a few milliseconds disagree by as much on when a call leaves the window.
"""

from __future__ import annotations

import asyncio
import logging
import math
from urllib.parse import quote

import redis.asyncio as aioredis

log = logging.getLogger("routeguard.cache")
TIMEOUT = 0.5  # seconds a slot waits for Redis before the per-instance cap decides alone

# KEYS[1]: the window. ARGV: now, cutoff (calls at or before it have left), cap, the call's
# member, the key's TTL in seconds. Returns 1 (granted, added) or 0 (the cap is reached).
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisJudgeWindow:
    """Judge-call slots per route within a cap per sliding window, counted in Redis."""

    def __init__(self, url: str, *, prefix: str = "rg:cache", timeout: float = TIMEOUT) -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url)
        self.timeout = timeout
        self._tag = "{" + prefix + "}"
        self._take = self.redis.register_script(_TAKE)
        self.failures = 0  # slots decided without Redis (it failed or was late)

    def key(self, route: str) -> str:
        """The Redis sorted set of one route's judge calls in the window."""
        return f"{self._tag}:judge:{quote(route, safe='')}"

    async def take(
        self, route: str, cap: int, now: float, window: float, member: str
    ) -> bool | None:
        """Add the call ``member`` at ``now`` if fewer than ``cap`` calls of ``route`` began
        in the ``window`` s before: whether it was added (None: Redis did not answer)."""
        ttl = math.ceil(window) + 60
        args: list[str | int] = [repr(now), repr(now - window), cap, member, ttl]
        try:
            granted = await asyncio.wait_for(
                self._take(keys=[self.key(route)], args=args), self.timeout
            )
        except Exception as exc:  # Redis down or slow: the per-instance cap decides
            self._failed(exc)
            return None
        return bool(granted)

    async def give_back(self, route: str, member: str) -> None:
        """Remove a call that was not made (best effort: one left behind leaves the window
        in time anyway)."""
        try:
            await asyncio.wait_for(self.redis.zrem(self.key(route), member), self.timeout)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            why = str(exc) or type(exc).__name__
            log.warning("cache: cannot share the judge-call cap (%s)", why)

    async def aclose(self) -> None:
        """Close the client."""
        await self.redis.aclose()
