"""RedisBudget: the budget ledger shared by every instance, in plain Redis 7.

Data flow: each operation expands the chain (``Accounts.chain``), builds the keys and
arguments of one Lua script (:mod:`routeguard.budget.scripts`, where the key layout is
described) and runs it: one round trip, atomic over the whole chain. ``reserve`` first
reclaims the chain's expired holds, then checks every account (committed spend in its window
+ open holds + the amount <= limit) and only then holds on all of them. ``settle`` gives the
hold back, charges the actual cost to each account's current window and appends the
settlement to the ``T:log`` stream (the write-through log; :meth:`RedisBudget.replay_log`
rebuilds totals from it).

Cluster: every key of a chain carries the hash tag ``{<prefix>:<root account>}``, so one
script touches one slot. The trade-off: all traffic of one root (one org, with its teams,
users and keys) lands on one shard; that shard's throughput (~50-100k scripts/s) bounds one
org, and orgs spread over the shards. A ``redis+cluster://host:port[,host:port...]`` URL
(:mod:`routeguard.redis_url`) builds a ``RedisCluster`` client, which sends each
script to the master owning its slot; no operation here pipelines across keys, so nothing
else changes. That client fails (``MaxConnectionsError``) rather than waits when a node's
pool is exhausted, so calls through it first take one of ``max_connections`` gate slots.

Replicas: Redis replicates asynchronously, so a master that dies may take its last writes
with it, and the replica promoted in its place would have forgotten those holds and
settlements. With ``wait_replicas=N`` every reservation and settlement is followed, in the
same round trip (a pipeline on the same connection, on the slot's master for a cluster), by
``WAIT N timeout``: the call returns once N replicas have the write, or after
``wait_timeout_ms`` with a warning (counted in :attr:`RedisBudget.unreplicated`; the write
itself stands); after such a timeout WAITs take at most 1 ms for 5 s, so a master left
without replicas (just after a failover) does not add the timeout to every request.
Rate-limiter state is not waited for: losing a few ms of it at a failover only lets a burst
through early.

When Redis is unreachable, ``reserve`` and ``check_rate`` fail closed by default (raise
:class:`~routeguard.errors.BudgetUnavailable`) or, with ``fail_open=True``, admit the
request unmetered and log a warning (at most every 10 s). A ``settle`` that cannot reach
Redis is kept in memory (bounded) and replayed on a later successful call; the ``done``
tombstone makes a replay of a settlement that did land harmless. Connection errors are
retried once, immediately (a pooled connection may be stale after a Redis restart); nothing
here sleeps. Logs name the store as ``host:port/db`` (``cluster host:port,...``), never with
its password.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from routeguard.budget import scripts
from routeguard.budget.accounts import (
    ROLLING_BUCKETS,
    Account,
    Accounts,
    Window,
    load_accounts,
)
from routeguard.budget.ledger import (
    DEFAULT_TTL_S,
    Reservation,
    budget_exceeded,
    check_amount,
    rate_limited,
    soft_exceeded,
)
from routeguard.budget.transient import DEFAULT_KEEP, Transients
from routeguard.config.budgets import BudgetAccountConfig
from routeguard.errors import BudgetUnavailable, RateLimited
from routeguard.redis_url import cluster_target

logger = logging.getLogger("routeguard.budget")
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, SlotNotCoveredError)
_MINUTE_US = 60_000_000
_DEGRADED_S = 5.0  # after a WAIT timed out: how long later WAITs only take 1 ms


class _Script(Protocol):
    """A registered Lua script, called with its KEYS and ARGV."""

    def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Awaitable[Any]: ...


class _ClusterGate:
    """Admission to the cluster client: at most ``limit`` calls in flight (waiting up to
    ``timeout_s`` for a turn, as the single-server blocking pool does), and the slot map
    loaded once, by one caller, before any command: commands racing the client's own lazy
    first ``initialize`` lose their connections under load (seen with redis-py 8.1)."""

    def __init__(self, client: RedisCluster, limit: int, timeout_s: float) -> None:
        self._client = client
        self._turns = asyncio.Semaphore(limit)
        self._loading = asyncio.Lock()
        self._ready = False
        self._timeout_s = timeout_s

    async def run(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``call()`` once a turn is free; no turn within the timeout is a
        ``ConnectionError``, like an exhausted pool."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._turns.acquire()
        except TimeoutError:
            raise RedisConnectionError("no free connection to the cluster") from None
        try:
            if not self._ready:
                async with self._loading:
                    if not self._ready:
                        try:
                            await self._client.initialize()
                        except RedisClusterException as exc:  # no seed answered
                            raise RedisConnectionError(str(exc)) from exc
                        self._ready = True
            return await call()
        finally:
            self._turns.release()


class _Gated:
    """A registered script whose calls go through a :class:`_ClusterGate`."""

    def __init__(self, script: Any, gate: _ClusterGate) -> None:
        self._script = script
        self._gate = gate

    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run the script with these KEYS and ARGV, once the gate admits it."""
        return await self._gate.run(lambda: self._script(keys=keys, args=args))


class _Replicated:
    """A registered script followed by ``WAIT replicas timeout`` on the same connection, in
    one round trip. WAIT counts the replicas that have *this connection's* writes, so both
    commands must share a connection: a plain pipeline on one server; on a cluster, the two
    sent straight to the node that owns the slot (redis-py's cluster pipeline would send a
    retried WAIT, which has no key, to any node)."""

    def __init__(self, script: Any, owner: RedisBudget) -> None:
        self._script = script
        self._owner = owner

    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run the script, then wait for the replicas to have its writes."""
        owner = self._owner
        client = owner._redis
        for attempt in range(3):
            degraded = time.monotonic() < owner._degraded_until
            evalsha = ("EVALSHA", self._script.sha, len(keys), *keys, *args)
            wait = ("WAIT", owner.wait_replicas, 1 if degraded else owner.wait_timeout_ms)
            if isinstance(client, RedisCluster):
                reply, acked = await self._on_owner(client, keys[0], evalsha, wait)
            else:
                pipe = client.pipeline(transaction=False)
                pipe.execute_command(*evalsha)
                pipe.execute_command(*wait)
                reply, acked = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError) and attempt == 0:
                await client.script_load(self._script.script)  # a new or restarted node
                continue
            if isinstance(reply, MovedError | AskError | TryAgainError) and attempt < 2:
                await owner._refresh_slots()  # the slot moved (a failover, a resharding)
                continue
            if isinstance(reply, BaseException):
                raise reply
            if isinstance(acked, BaseException) or int(acked) < owner.wait_replicas:
                owner._unreplicated(0 if isinstance(acked, BaseException) else int(acked), degraded)
            elif degraded:
                owner._degraded_until = 0.0  # the replicas are back
            return reply
        raise AssertionError("unreachable")

    async def _on_owner(
        self, client: RedisCluster, key: str, *commands: tuple[Any, ...]
    ) -> list[Any]:
        """``commands`` on one connection of the master that owns ``key``'s slot; results
        (errors as values). A connection failure refreshes the slot map, then raises."""
        node = client.get_node_from_key(key)
        if node is None:  # the slot map has no master for it (yet)
            await self._owner._refresh_slots()
            raise SlotNotCoveredError(f"no master owns the slot of {key!r}")
        piped = [PipelineCommand(i, *c) for i, c in enumerate(commands)]
        try:
            await node.execute_pipeline(piped)
        except _DOWN:
            await self._owner._refresh_slots()
            raise
        results = [c.result for c in piped]
        down = next((r for r in results if isinstance(r, _DOWN)), None)
        if down is not None and not isinstance(results[0], MovedError | AskError):
            await self._owner._refresh_slots()
            if isinstance(results[0], BaseException):
                raise down
        return results


@dataclass(frozen=True, slots=True)
class _Member:
    """One account of a chain, with everything about it that does not change per call."""

    account: Account
    held: str
    holds: str
    spend: str  # the rolling hash, the lifetime key, or the calendar key without its window
    kind: str  # "r" rolling, "c" calendar or lifetime
    width_us: int
    span: int
    limit: str
    soft: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """A chain's static script inputs, built once per distinct chain."""

    base: str
    names: tuple[str, ...]
    members: tuple[_Member, ...]


class RedisBudget:
    """The shared budget backend (see the module docstring)."""

    def __init__(
        self,
        accounts: Accounts | Sequence[BudgetAccountConfig | Mapping[str, Any]],
        url: str | None = None,
        *,
        client: aioredis.Redis | RedisCluster | None = None,
        prefix: str = "rg",
        fail_open: bool = False,
        default_ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] | None = None,
        timeout_s: float = 1.0,
        max_connections: int = 64,
        log_maxlen: int = 1_000_000,
        tombstone_s: float = 86_400.0,
        retention_s: float = 90 * 86_400.0,
        reclaim_batch: int = 64,
        pending_max: int = 100_000,
        on_soft_limit: Callable[[str, Reservation], None] | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 50,
        keep_transient: int = DEFAULT_KEEP,
    ) -> None:
        """Connect lazily to ``url`` (``redis://host:port/db``, or ``redis+cluster://
        host:port[,...]`` for a Redis Cluster), or use ``client``. ``clock`` (unix seconds)
        replaces Redis ``TIME`` as the clock of holds, rolling windows and rate limits;
        ``wait_replicas`` makes holds and settlements wait for that many replicas (see the
        module docstring); ``keep_transient``: how many transient accounts stay registered
        here before idle ones are dropped (their state is in Redis: made again, an account
        reads it back)."""
        if wait_replicas < 0 or wait_timeout_ms < 1:
            raise ValueError("wait_replicas must be 0 or more, wait_timeout_ms 1 or more")
        if wait_replicas and wait_timeout_ms >= timeout_s * 1000:
            raise ValueError(
                f"wait_timeout_ms ({wait_timeout_ms}) must be below the connection timeout "
                f"({timeout_s * 1000:.0f} ms), or every WAIT that times out breaks its connection"
            )
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.unreplicated = 0  # writes whose WAIT timed out short of wait_replicas
        self.accounts = accounts if isinstance(accounts, Accounts) else load_accounts(accounts)
        self.transients = Transients(keep_transient)
        """Accounts made on use and dropped when nothing is in flight (see :meth:`upsert`)."""
        target = None if url is None or client is not None else cluster_target(url)
        if target is not None:
            client = target.async_client(
                timeout_s=timeout_s, max_connections=max_connections, retry=Retry(NoBackoff(), 1)
            )
            self._owns_client = True
        elif client is None:
            if url is None:
                raise ValueError("RedisBudget needs a url (redis://host:port/db) or a client")
            # A blocking pool: a burst of requests waits (up to timeout_s) for one of
            # `max_connections` connections instead of failing at the pool's limit.
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=timeout_s,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
            client = aioredis.Redis(connection_pool=pool)
            self._owns_client = True
        else:
            self._owns_client = False
        self._redis = client
        gate: _ClusterGate | None = None
        if isinstance(client, RedisCluster):
            seeds = ",".join(client.nodes_manager.startup_nodes)
            self._where = f"cluster {seeds}"
            gate = _ClusterGate(client, max_connections, timeout_s)
        else:
            kwargs = client.connection_pool.connection_kwargs
            host, port, db = kwargs.get("host", "?"), kwargs.get("port", "?"), kwargs.get("db", 0)
            self._where = f"{host}:{port}/{db}"
        self._prefix = prefix
        self.fail_open = fail_open
        self._ttl_us = round(default_ttl_s * 1e6)
        self._clock = clock
        self._log_maxlen = str(log_maxlen)
        self._tomb_us = str(round(tombstone_s * 1e6))
        self._retention_ms = round(retention_s * 1000)
        self._batch = str(reclaim_batch)
        self._on_soft_limit = on_soft_limit

        def script(text: str, durable: bool = False) -> _Script:
            registered: Any = client.register_script(text)
            if durable and wait_replicas:
                registered = _Replicated(registered, self)
            return registered if gate is None else _Gated(registered, gate)

        self._reserve = script(scripts.RESERVE, durable=True)
        self._settle = script(scripts.SETTLE, durable=True)
        self._release = script(scripts.RELEASE)
        self._read = script(scripts.READ)
        self._rate = script(scripts.RATE)
        self._admit = script(scripts.ADMIT, durable=True)
        self._gate = gate
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._windows: dict[str, Window] = {}
        self._pending: deque[tuple[list[str], list[str]]] = deque(maxlen=pending_max)
        self._flushing = False
        self._last_warning = -math.inf
        self._last_replica_warning = -math.inf
        self._degraded_until = 0.0
        self._refreshing = False

    async def _refresh_slots(self) -> None:
        """Reload a cluster client's slot map (one refresh at a time; errors ignored: the
        next call will try again)."""
        if not isinstance(self._redis, RedisCluster) or self._refreshing:
            return
        self._refreshing = True
        try:
            await self._redis.nodes_manager.initialize()
        except Exception as exc:
            logger.debug("slot map refresh failed: %s", exc)
        finally:
            self._refreshing = False

    def _unreplicated(self, acked: int, degraded: bool) -> None:
        """A WAIT timed out with ``acked`` replicas: count it, warn at most every 10 s, and
        (after a full timeout) wait only 1 ms for the next 5 s, so a master left without its
        replica (after a failover) does not add the whole timeout to every request."""
        self.unreplicated += 1
        if not degraded:
            self._degraded_until = time.monotonic() + _DEGRADED_S
        now = time.monotonic()
        if now - self._last_replica_warning >= 10.0:
            self._last_replica_warning = now
            logger.warning(
                "budget store %s: a write reached %d of %d replicas within %d ms (%d so far)",
                self._where,
                acked,
                self.wait_replicas,
                self.wait_timeout_ms,
                self.unreplicated,
            )

    def upsert(self, account: Account, *, transient: bool = False) -> None:
        """Add an account at run time, or change its limits (a virtual key's budget).

        Spend lives in Redis under the account's name, so every instance that upserts the
        same account shares it; limits travel with each script call. ``transient``: a leaf
        made on use (an end user's), dropped from this registry (not from Redis) past the
        registry's ``keep`` when no reservation of this process is in flight on it.
        """
        new = account.name not in self.accounts.by_name
        self.accounts.put(account)
        if not new:  # a new account is in no plan yet
            self._plans.clear()
        if not transient:
            self.transients.discard(account.name)
            return
        self.transients.add(account.name)
        if new and len(self.transients) > self.transients.keep:
            gone = set(self.transients.sweep(lambda _: True))
            if gone:
                self.accounts.remove(gone)
                self._plans = {k: p for k, p in self._plans.items() if gone.isdisjoint(k)}

    # ------------------------------------------------------------------ plumbing

    def _base(self, root: str) -> str:
        return f"{{{self._prefix}:{root}}}:"

    def _plan(self, names: tuple[str, ...]) -> _Plan:
        plan = self._plans.get(names)
        if plan is not None:
            return plan
        accounts = [self.accounts[n] for n in names]
        base = self._base(accounts[0].root)
        members = []
        for acc in accounts:
            period = acc.period
            if period.kind == "rolling":
                kind, spend = "r", f"{base}roll:{acc.name}"
                width_us = math.ceil(period.seconds * 1e6 / ROLLING_BUCKETS)
                span = ROLLING_BUCKETS
            else:
                kind, width_us, span = "c", 1, 0
                spend = f"{base}spent:{acc.name}:" + ("total" if period.kind == "total" else "")
            members.append(
                _Member(
                    account=acc,
                    held=f"{base}held:{acc.name}",
                    holds=f"{base}holds:{acc.name}",
                    spend=spend,
                    kind=kind,
                    width_us=width_us,
                    span=span,
                    limit="" if acc.limit is None else str(acc.limit),
                    soft="" if acc.soft_limit is None else str(acc.soft_limit),
                )
            )
        plan = _Plan(base, names, tuple(members))
        if len(self._plans) < 100_000:
            self._plans[names] = plan
        return plan

    def _now(self) -> tuple[float, str]:
        """Wall-clock seconds for calendar windows, and the script clock argument."""
        if self._clock is None:
            return time.time(), ""
        now = self._clock()
        return now, str(round(now * 1e6))

    def _window(self, member: _Member, now: float) -> Window:
        period = member.account.period
        cached = self._windows.get(period.key)
        if cached is None or not cached.start <= now < cached.end:
            cached = period.window(now)
            self._windows[period.key] = cached
        return cached

    def _spend_key(self, member: _Member, now: float) -> tuple[str, str]:
        """The spend key of the window current at ``now`` and its expiry argument."""
        if member.kind == "r":
            keep_ms = math.ceil(member.width_us * (member.span + 2) / 1000)
            return member.spend, str(keep_ms)
        if member.account.period.kind == "total":
            return member.spend, ""
        window = self._window(member, now)
        expire_ms = round(window.end * 1000) + self._retention_ms
        return f"{member.spend}{window.id}", str(expire_ms)

    def _keys(self, plan: _Plan, now: float) -> tuple[list[str], list[str]]:
        base = plan.base
        keys = [f"{base}res", f"{base}exp", f"{base}done", f"{base}log"]
        expires = []
        for m in plan.members:
            spend, expire = self._spend_key(m, now)
            keys += (m.held, m.holds, spend)
            expires.append(expire)
        return keys, expires

    def _down(self, exc: BaseException, what: str) -> BudgetUnavailable:
        return BudgetUnavailable(
            f"budget store {self._where} is unreachable ({type(exc).__name__}: {exc}); "
            f"{what} refused because the budget fails closed: restore Redis, or set "
            "fail_open to admit requests unmetered while it is down"
        )

    def _warn_open(self, exc: BaseException, what: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            logger.warning(
                "budget store %s is unreachable (%s); %s admitted unmetered (fail_open)",
                self._where,
                type(exc).__name__,
                what,
            )

    async def _flush(self) -> None:
        """Replay settlements that could not reach Redis (oldest first)."""
        if self._flushing or not self._pending:
            return
        self._flushing = True
        try:
            for _ in range(min(len(self._pending), 256)):
                keys, args = self._pending[0]
                await self._settle(keys=keys, args=args)
                self._pending.popleft()
        except _DOWN:
            pass
        finally:
            self._flushing = False

    # ------------------------------------------------------------------ the interface

    def _reserve_call(
        self, chain: Sequence[str], amount: int, request_id: str, ttl_s: float | None
    ) -> tuple[_Plan, float, list[str], list[str]]:
        """The plan, the time, and the KEYS and ARGV of one reserve script call."""
        check_amount(amount)
        plan = self._plan(self.accounts.chain(chain))
        now, now_arg = self._now()
        keys, _ = self._keys(plan, now)
        ttl_us = self._ttl_us if ttl_s is None else round(ttl_s * 1e6)
        args = [plan.base, request_id, str(amount), str(ttl_us), now_arg, str(len(plan.names))]
        args += (self._batch, self._tomb_us)
        for m in plan.members:
            args += (m.account.name, m.limit, m.soft, m.kind, str(m.width_us), str(m.span))
        return plan, now, keys, args

    async def reserve(
        self,
        chain: Sequence[str],
        amount: int,
        request_id: str,
        ttl_s: float | None = None,
    ) -> Reservation:
        """Hold ``amount`` on the chain in one script, or raise BudgetExceeded."""
        return await self.admit(chain, amount, request_id, tokens=0, requests=0, ttl_s=ttl_s)

    async def admit(
        self,
        chain: Sequence[str],
        amount: int,
        request_id: str,
        tokens: int = 0,
        requests: int = 1,
        ttl_s: float | None = None,
    ) -> Reservation:
        """``check_rate`` then ``reserve`` in one script (one round trip), same outcomes."""
        plan, now, keys, args = self._reserve_call(chain, amount, request_id, ttl_s)
        rate_keys, rate_args, owners = self._rate_call(plan.names, tokens, requests)
        # Counted in flight before the round trip: a sweep while it waits passes it over.
        pinned = bool(self.transients.live)
        if pinned:
            self.transients.held(plan.names)
        try:
            try:
                if rate_keys:
                    reply = await self._admit(
                        keys=[*keys, *rate_keys], args=[*args, str(len(owners)), *rate_args]
                    )
                else:
                    reply = await self._reserve(keys=keys, args=args)
            except _DOWN as exc:
                if not self.fail_open:
                    what = "requests are" if rate_keys else "reservations are"
                    raise self._down(exc, what) from exc
                self._warn_open(exc, "a request was" if rate_keys else "a reservation was")
                ttl = self._ttl_us / 1e6 if ttl_s is None else ttl_s
                return Reservation(request_id, plan.names, amount, now + ttl, (), "unbacked", plan)
            if int(reply[0]) == 3:
                raise _rate_refusal(owners, reply)
            return await self._reserved(plan, now, amount, request_id, reply)
        except BaseException:
            if pinned:
                self.transients.done(plan.names)
            raise

    async def _reserved(
        self, plan: _Plan, now: float, amount: int, request_id: str, reply: Any
    ) -> Reservation:
        """The Reservation a RESERVE reply stands for, or BudgetExceeded."""
        names = plan.names
        if self._pending:
            await self._flush()
        if int(reply[0]) == 0:
            account = plan.members[int(reply[1]) - 1].account
            raise budget_exceeded(
                account, spent=int(reply[2]), reserved=int(reply[3]), requested=amount, now=now
            )
        soft = soft_exceeded(names, int(reply[1]))
        res = Reservation(request_id, names, amount, int(reply[2]) / 1e6, soft, "open", plan)
        if soft and self._on_soft_limit is not None:
            for name in soft:
                self._on_soft_limit(name, res)
        return res

    def _settle_call(self, res: Reservation, actual: int) -> tuple[list[str], list[str]]:
        plan = res.handle if isinstance(res.handle, _Plan) else self._plan(res.chain)
        now, now_arg = self._now()
        keys, expires = self._keys(plan, now)
        args = [plan.base, res.request_id, str(actual), now_arg, str(len(plan.names))]
        args += (self._tomb_us, self._log_maxlen)
        for m, expire in zip(plan.members, expires, strict=True):
            args += (m.account.name, m.kind, str(m.width_us), expire)
        return keys, args

    async def settle(self, reservation: Reservation, actual: int) -> int:
        """Charge ``actual``; returns the overage. A settlement Redis cannot take now is
        kept and replayed later (it is never dropped silently)."""
        check_amount(actual, "actual")
        if not reservation.is_open:
            raise ValueError(
                f"reservation {reservation.request_id!r} was already {reservation.state}"
            )
        keys, args = self._settle_call(reservation, actual)
        reservation.state = "settled"
        if self.transients.live:
            self.transients.done(reservation.chain)
        # Shielded: a caller cancelled meanwhile (a drain deadline, a client gone) must not
        # drop a charge for what the upstream was paid; the round trip, or its keeping for
        # replay, completes on its own.
        reply = await asyncio.shield(self._charge(keys, args, reservation.request_id))
        if reply is None:
            return max(0, actual - reservation.amount)
        if self._pending:
            await self._flush()
        status = int(reply[0])
        if status in (2, 3):
            logger.info(
                "reservation %s settled with no hold behind it (%s): charged in full",
                reservation.request_id,
                "its hold had expired" if status == 2 else "unknown to the store",
            )
        overage = max(0, actual - reservation.amount)
        if overage and status == 1:
            logger.warning(
                "reservation %s: actual cost %d exceeded the hold %d micro-dollars",
                reservation.request_id,
                actual,
                reservation.amount,
            )
        return overage

    async def _charge(self, keys: list[str], args: list[str], request_id: str) -> Any:
        """The settlement's round trip: Redis's reply, or None when the store is down (the
        settlement is then kept for replay)."""
        try:
            return await self._settle(keys=keys, args=args)
        except _DOWN as exc:
            if not args[3]:  # a replay must land in the window of the moment it happened
                args[3] = str(round(time.time() * 1e6))
            dropped = len(self._pending) == self._pending.maxlen
            self._pending.append((keys, args))
            logger.warning(
                "budget store %s is unreachable (%s); settlement of %s kept for replay%s",
                self._where,
                type(exc).__name__,
                request_id,
                " (the replay buffer is full: the oldest was dropped)" if dropped else "",
            )
            return None

    async def release(self, reservation: Reservation) -> None:
        """Give the hold back; if Redis is down the hold simply expires with its TTL."""
        if not reservation.is_open:
            return
        state = reservation.state
        reservation.state = "released"
        if self.transients.live:
            self.transients.done(reservation.chain)
        if state == "unbacked":
            return
        plan = reservation.handle if isinstance(reservation.handle, _Plan) else None
        base = plan.base if plan is not None else self._plan(reservation.chain).base
        try:
            await self._release(keys=[f"{base}res"], args=[base, reservation.request_id])
        except _DOWN as exc:
            logger.info(
                "budget store %s unreachable (%s); the hold of %s will expire with its TTL",
                self._where,
                type(exc).__name__,
                reservation.request_id,
            )

    async def usage(self, account: str) -> tuple[int, int]:
        """``(spent, reserved)`` of one account, after reclaiming its expired holds."""
        acc = self.accounts[account]
        member = self._plan((account,)).members[0]
        now, now_arg = self._now()
        base = self._base(acc.root)
        spend, _ = self._spend_key(member, now)
        keys = [f"{base}res", f"{base}exp", member.held, member.holds, spend]
        args = [base, now_arg, self._batch, member.kind, str(member.width_us), str(member.span)]
        try:
            reply = await self._read(keys=keys, args=args)
        except _DOWN as exc:
            raise self._down(exc, "reads are") from exc
        return int(reply[0]), int(reply[1])

    async def spent(self, account: str) -> int:
        """Committed micro-dollars of ``account`` in its current window."""
        return (await self.usage(account))[0]

    async def reserved(self, account: str) -> int:
        """Micro-dollars held on ``account`` by requests in flight."""
        return (await self.usage(account))[1]

    def _rate_call(
        self, names: Sequence[str], tokens: int, requests: int
    ) -> tuple[list[str], list[str], list[tuple[Account, str, int]]]:
        """The GCRA KEYS, ARGV (3 per limiter) and owners of every RPM/TPM limit on ``names``."""
        base = self._base(self.accounts[names[0]].root)
        keys: list[str] = []
        args: list[str] = []
        owners: list[tuple[Account, str, int]] = []
        for name in names:
            acc = self.accounts[name]
            for unit, limit, cost in (("requests", acc.rpm, requests), ("tokens", acc.tpm, tokens)):
                if limit is None or cost <= 0:
                    continue
                keys.append(f"{base}rate:{name}:{'rpm' if unit == 'requests' else 'tpm'}")
                args += (str(math.ceil(_MINUTE_US / limit)), str(_MINUTE_US), str(cost))
                owners.append((acc, unit, cost))
        return keys, args, owners

    async def check_rate(self, chain: Sequence[str], tokens: int = 0, requests: int = 1) -> None:
        """GCRA over every RPM/TPM limit of the chain in one script, all or none."""
        keys, args, owners = self._rate_call(self.accounts.chain(chain), tokens, requests)
        if not keys:
            return
        try:
            reply = await self._rate(keys=keys, args=[self._now()[1], *args])
        except _DOWN as exc:
            if not self.fail_open:
                raise self._down(exc, "rate-limited requests are") from exc
            self._warn_open(exc, "a rate-limited request was")
            return
        if int(reply[0]) == 0:
            raise _rate_refusal(owners, reply)

    async def replay_log(self, root: str, *, count: int = 10_000) -> dict[str, int]:
        """Totals per calendar/lifetime spend key rebuilt from ``root``'s settlement log
        (as far back as the stream's ``log_maxlen`` keeps)."""
        key = f"{self._base(root)}log"
        totals: dict[str, int] = {}
        start = "-"
        while True:
            read = partial(self._redis.xrange, key, min=start, max="+", count=count)
            raw: Any = await (read() if self._gate is None else self._gate.run(read))
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], raw or [])
            for entry_id, fields in entries:
                actual = int(fields[b"actual"])
                for charged in fields[b"charged"].decode().split():
                    if "@" not in charged:
                        totals[charged] = totals.get(charged, 0) + actual
                start = "(" + entry_id.decode()
            if len(entries) < count:
                return totals

    @property
    def pending(self) -> int:
        """Settlements waiting for Redis to come back."""
        return len(self._pending)

    async def flush(self) -> int:
        """Replay kept settlements now; returns how many are still waiting."""
        await self._flush()
        return len(self._pending)

    async def ping(self) -> None:
        """Raise unless Redis answers a PING (the proxy's readiness check)."""
        await self._redis.ping()

    async def claim_once(self, name: str, ttl_s: float | None) -> bool:
        """Whether this caller is the first to claim ``name`` (``SET NX``, kept ``ttl_s``
        seconds or for ever): of many instances, one sends a given budget alert."""
        key = f"{self._prefix}:once:{name}"
        px = None if ttl_s is None else max(1, round(ttl_s * 1000))
        return bool(await self._redis.set(key, b"1", nx=True, px=px))

    async def close(self) -> None:
        """Close the connection pool if this backend created it."""
        if not self._owns_client:
            return
        if isinstance(self._redis, RedisCluster):
            await self._redis.aclose()
        else:
            await self._redis.aclose(close_connection_pool=True)


def _rate_refusal(owners: Sequence[tuple[Account, str, int]], reply: Any) -> RateLimited:
    """The RateLimited a GCRA refusal ``{_, i, retry_after_us}`` stands for."""
    acc, unit, cost = owners[int(reply[1]) - 1]
    wait = int(reply[2])
    return rate_limited(acc, unit, cost, None if wait < 0 else wait / 1e6)
