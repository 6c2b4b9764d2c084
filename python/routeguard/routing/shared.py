"""The routing state every instance shares on Redis: deployments' cooldowns and per-minute
usage, mirrored locally so that no request ever waits on Redis.

Data flow: the request path only reads and writes this object's memory. A circuit that opens
(:class:`routeguard.fallback.Cooldowns`) queues a cooldown key; a half-open probe that succeeds
queues its removal; balancers (:mod:`routeguard.routing.balance`) add requests and tokens to
the current minute. One background task per event loop sends all of it to Redis every
``interval`` seconds (at once when a cooldown changes) in a single script call, which also
reads back every watched deployment's cooldown (its ``PTTL``) and current-minute totals. A
deployment cooled down by any instance is thus avoided by all of them within ``interval``.

Keys (all under one hash tag, so one Redis Cluster slot and one script call):
``{prefix}:cool:<deployment>`` (value: when it opened, unix ms; TTL: the cooldown) and
``{prefix}:use:<deployment>:<minute>`` (a hash of ``r`` requests and ``t`` tokens, kept two
minutes). Usage deltas go out at most once: a call that fails leaves them counted here only.

Redis down or slow: each round trip is bounded by ``timeout``; the local mirror and counters
go on alone (what was last read stays until it expires), one warning is logged (the host,
never the password) and one line when it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from routeguard import scrub
from routeguard.redis_url import cluster_target

log = scrub.guard(logging.getLogger("routeguard.routing.shared"))

_USAGE_TTL_S = 120  # a minute's counters outlive it by one more minute
_MAX_WATCHED = 10_000  # deployment ids read back each round (wildcard names come and go)
_MAX_DELAY_S = 5.0  # the longest pause between two attempts while Redis is down

# KEYS: opens, closes, increments, cooldowns to read, usage hashes to read (in that order).
# ARGV[1..5]: their counts; then per open: ttl ms, opened-at ms; per close: probe-start ms;
# per increment: requests, tokens, ttl s. Returns the PTTLs, then requests and tokens pairs.
_SYNC = """
local no, nc, ni = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local nr, nu = tonumber(ARGV[4]), tonumber(ARGV[5])
local k, a = 1, 6
for _ = 1, no do
  local ms = tonumber(ARGV[a])
  if redis.call('PTTL', KEYS[k]) < ms then
    redis.call('SET', KEYS[k], ARGV[a + 1], 'PX', ms)
  end
  k, a = k + 1, a + 2
end
for _ = 1, nc do
  local opened = tonumber(redis.call('GET', KEYS[k]) or '0') or 0
  if opened <= tonumber(ARGV[a]) then redis.call('DEL', KEYS[k]) end
  k, a = k + 1, a + 1
end
for _ = 1, ni do
  if ARGV[a] ~= '0' then redis.call('HINCRBY', KEYS[k], 'r', ARGV[a]) end
  if ARGV[a + 1] ~= '0' then redis.call('HINCRBY', KEYS[k], 't', ARGV[a + 1]) end
  redis.call('EXPIRE', KEYS[k], ARGV[a + 2])
  k, a = k + 1, a + 3
end
local out = {}
for _ = 1, nr do
  out[#out + 1] = redis.call('PTTL', KEYS[k])
  k = k + 1
end
for _ = 1, nu do
  local v = redis.call('HMGET', KEYS[k], 'r', 't')
  out[#out + 1] = tonumber(v[1]) or 0
  out[#out + 1] = tonumber(v[2]) or 0
  k = k + 1
end
return out
"""


def _where(url: str) -> str:
    """``url``'s host and port (or socket path, or cluster seeds) for logs: no credentials."""
    target = cluster_target(url, "router_settings.redis_url")
    if target is not None:
        return target.where
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


@dataclass(eq=False)
class _Link:
    """The Redis client and sync task of one event loop."""

    loop: asyncio.AbstractEventLoop
    client: Any
    script: Any
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    closing: bool = False  # aclose() asked the task to send what is left and stop


class SharedRouterState:
    """Cooldowns and per-minute usage shared by every instance on one Redis (see the module
    docstring); implements :class:`routeguard.routing.balance.UsageCounter`."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "rg:router",
        interval: float = 0.2,
        timeout: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` measures cooldowns locally; ``wall`` (unix seconds) stamps them and
        numbers the usage minutes, as every instance's balancers do."""
        self.url = url
        self.where = _where(url)
        self.interval = interval
        self.timeout = timeout
        self._tag = "{" + prefix + "}"
        self._clock = clock
        self.wall = wall
        self._link: _Link | None = None
        self._cool: dict[str, float] = {}  # dep id -> local time its shared cooldown ends
        self._watched: dict[str, None] = {}  # cooldowns to read (insertion-ordered set)
        # dep id -> ("open", until) or ("close", when the successful probe started)
        self._ops: dict[str, tuple[str, float]] = {}
        self._usage_deps: dict[str, None] = {}  # deployments whose usage is read
        self._seen: dict[str, tuple[int, int, int]] = {}  # dep id -> (minute, requests, tokens)
        self._pending: dict[tuple[str, int], list[int]] = {}  # counted, not yet sent
        self._sending: dict[tuple[str, int], list[int]] = {}  # in the call under way
        self._local_only: dict[tuple[str, int], list[int]] = {}  # a failed call's: kept here
        self.up: bool | None = None  # None: not tried yet
        self.failures = 0  # round trips that failed or timed out
        self.on_change: Callable[[str, float], None] | None = None  # as Cooldowns.on_change

    def watch(self, dep_ids: Iterable[str], *, usage: bool) -> None:
        """Read these deployments' cooldowns (and with ``usage``, their usage) from the next
        round trip on, before any request asks about them."""
        for dep_id in dep_ids:
            self._watched.setdefault(dep_id, None)
            if usage:
                self._use(dep_id)

    # ----------------------------------------------------------------- cooldowns

    def cooled_until(self, dep_id: str) -> float:
        """When (this process's clock) the cooldown another instance (or this one) shared
        for ``dep_id`` ends; 0.0 for none. Starts watching ``dep_id``."""
        if dep_id not in self._watched:
            if len(self._watched) >= _MAX_WATCHED:
                self._watched.clear()
            self._watched[dep_id] = None
        until = self._cool.get(dep_id, 0.0)
        return until if until > self._clock() else 0.0

    def open(self, dep_id: str, until: float) -> None:
        """Share that ``dep_id`` cools down until ``until`` (this process's clock)."""
        self._ops[dep_id] = ("open", until)
        self._cool[dep_id] = max(self._cool.get(dep_id, 0.0), until)
        self._nudge()

    def close(self, dep_id: str, probe_started: float) -> None:
        """Share that ``dep_id`` recovered: a probe that started at ``probe_started`` (unix
        seconds) succeeded, so cooldowns opened until then end for everyone."""
        self._ops[dep_id] = ("close", probe_started)
        self._cool.pop(dep_id, None)
        self._nudge()

    # ----------------------------------------------------------------- usage

    def add(self, dep_id: str, minute: int, requests: int, tokens: int) -> None:
        """Count requests and tokens in ``minute``; sent with the next round trip."""
        self._use(dep_id)
        d = self._pending.get((dep_id, minute))
        if d is None:
            self._pending[(dep_id, minute)] = [requests, tokens]
        else:
            d[0] += requests
            d[1] += tokens

    def get(self, dep_id: str, minute: int) -> tuple[int, int]:
        """Every instance's requests and tokens in ``minute`` as last read, plus this
        process's counts not yet read back."""
        self._use(dep_id)
        requests = tokens = 0
        seen = self._seen.get(dep_id)
        if seen is not None and seen[0] == minute:
            requests, tokens = seen[1], seen[2]
        for counts in (self._pending, self._sending, self._local_only):
            d = counts.get((dep_id, minute))
            if d is not None:
                requests += d[0]
                tokens += d[1]
        return max(0, requests), max(0, tokens)

    def _use(self, dep_id: str) -> None:
        """Read ``dep_id``'s usage from the next round trip on (bounded, as cooldowns)."""
        if dep_id not in self._usage_deps:
            if len(self._usage_deps) >= _MAX_WATCHED:
                self._usage_deps.clear()
            self._usage_deps[dep_id] = None

    # ----------------------------------------------------------------- the sync task

    @property
    def running(self) -> bool:
        """Whether a sync task runs (until :meth:`aclose`)."""
        link = self._link
        return link is not None and link.task is not None and not link.task.done()

    def ensure_running(self) -> None:
        """Start the background sync on the running event loop (once per loop; cheap)."""
        link = self._link
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if link is not None and link.loop is loop:
            return
        self._link = link = self._connect(loop)
        link.task = loop.create_task(self._run(link), name="routeguard-shared-routing")

    def _connect(self, loop: asyncio.AbstractEventLoop) -> _Link:
        target = cluster_target(self.url, "router_settings.redis_url")
        client: Any
        if target is not None:
            client = target.async_client(
                timeout_s=self.timeout, max_connections=2, retry=Retry(NoBackoff(), 0)
            )
        else:
            client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
        return _Link(loop, client, client.register_script(_SYNC))

    def _nudge(self) -> None:
        link = self._link
        if link is not None:
            link.wake.set()

    async def _run(self, link: _Link) -> None:
        delay = self.interval
        try:
            while not link.closing:
                link.wake.clear()
                ok = await self._sync(link)
                delay = self.interval if ok else min(max(delay, self.interval) * 2, _MAX_DELAY_S)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await link.wake.wait()
            await self._sync(link)  # closing: what was counted since the last round trip
        finally:
            with contextlib.suppress(Exception):
                await link.client.aclose()

    async def sync(self) -> bool:
        """One round trip now (also what the background task does): send what was counted
        and queued, read the shared state back; False when Redis did not answer in time."""
        link = self._link
        loop = asyncio.get_running_loop()
        if link is None or link.loop is not loop:
            self.ensure_running()
            link = self._link
            assert link is not None
        return await self._sync(link)

    async def _sync(self, link: _Link) -> bool:
        async with link.lock:
            return await self._round_trip(link)

    async def _round_trip(self, link: _Link) -> bool:
        now, wall = self._clock(), self.wall()
        minute = int(wall // 60)
        ops, self._ops = self._ops, {}
        sending = {k: v for k, v in self._pending.items() if k[1] >= minute - 1 and any(v)}
        self._pending = {}
        self._sending = sending
        for k in [k for k in self._local_only if k[1] < minute - 1]:
            del self._local_only[k]
        opens = [(d, round((u - now) * 1000)) for d, (kind, u) in ops.items() if kind == "open"]
        opens = [(d, ms) for d, ms in opens if ms > 0]
        closes = [(d, round(ms * 1000)) for d, (kind, ms) in ops.items() if kind == "close"]
        cooling = list(self._watched)
        using = list(self._usage_deps)
        if not (opens or closes or sending or cooling or using):
            self._sending = {}
            return True
        keys: list[str] = []
        args: list[Any] = [len(opens), len(closes), len(sending), len(cooling), len(using)]
        stamp = round(wall * 1000)
        for dep_id, ms in opens:
            keys.append(f"{self._tag}:cool:{dep_id}")
            args += [ms, stamp]
        for dep_id, at in closes:
            keys.append(f"{self._tag}:cool:{dep_id}")
            args.append(at)
        for (dep_id, m), (r, t) in sending.items():
            keys.append(f"{self._tag}:use:{dep_id}:{m}")
            args += [r, t, _USAGE_TTL_S]
        keys += [f"{self._tag}:cool:{d}" for d in cooling]
        keys += [f"{self._tag}:use:{d}:{minute}" for d in using]
        try:
            async with asyncio.timeout(self.timeout):
                out = await link.script(keys=keys, args=args)
        except asyncio.CancelledError:  # the loop is ending: keep what was not confirmed
            self._keep(ops, sending)
            raise
        except Exception as exc:  # Redis down, slow, or refusing: the local state goes on
            self._failed(exc, ops, sending)
            return False
        self._sending = {}
        took = self._clock()
        for dep_id, pttl in zip(cooling, out[: len(cooling)], strict=True):
            self._mirror(dep_id, took + int(pttl) / 1000 if int(pttl) > 0 else 0.0)
        counts = out[len(cooling) :]
        for i, dep_id in enumerate(using):
            self._seen[dep_id] = (minute, int(counts[2 * i]), int(counts[2 * i + 1]))
        if self.up is False:
            log.warning("shared routing state: Redis at %s answers again", self.where)
        self.up = True
        return True

    def _mirror(self, dep_id: str, until: float) -> None:
        """Record what Redis says of ``dep_id``'s cooldown (0.0: none), telling on_change."""
        was = self._cool.get(dep_id, 0.0)
        if dep_id in self._ops:  # changed here while the call was under way: that wins
            return
        if until > 0.0:
            self._cool[dep_id] = until
        else:
            self._cool.pop(dep_id, None)
        if self.on_change is not None and (until > 0.0) != (was > self._clock()):
            self.on_change(dep_id, self.wall() + (until - self._clock()) if until else 0.0)

    def _failed(
        self,
        exc: BaseException,
        ops: dict[str, tuple[str, float]],
        sending: dict[tuple[str, int], list[int]],
    ) -> None:
        """A round trip failed: what it carried is kept (:meth:`_keep`), and the first
        failure of an outage is logged."""
        self.failures += 1
        self._keep(ops, sending)
        if self.up is not False:
            log.warning(
                "shared routing state: Redis at %s did not answer (%s); cooldowns and usage "
                "are kept per instance until it does",
                self.where,
                type(exc).__name__,
            )
        self.up = False

    def _keep(
        self, ops: dict[str, tuple[str, float]], sending: dict[tuple[str, int], list[int]]
    ) -> None:
        """Take back what an unconfirmed round trip carried: cooldown changes are queued
        again (setting or clearing a key twice is harmless); usage stays counted here only
        (Redis may have applied it)."""
        for dep_id, op in ops.items():
            self._ops.setdefault(dep_id, op)
        for k, (r, t) in sending.items():
            d = self._local_only.setdefault(k, [0, 0])
            d[0] += r
            d[1] += t
        self._sending = {}

    async def aclose(self) -> None:
        """Send what is queued and stop the task, which closes the client (bounded: a task
        that does not finish within two round trips' timeouts is cancelled)."""
        link, self._link = self._link, None
        if link is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if link.loop is not running:
            return  # that loop's end cancelled the task, which closed its client
        task = link.task
        if task is None:
            with contextlib.suppress(Exception):
                await link.client.aclose()
            return
        link.closing = True
        link.wake.set()
        try:
            async with asyncio.timeout(2 * self.timeout + 0.1):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
