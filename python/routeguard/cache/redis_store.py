"""RedisStore: the semantic cache shared by several instances through plain Redis 7.

Entries and their vectors live in Redis; each instance keeps its own local state (entries +
Rust/HNSW indexes, :class:`~routeguard.cache.state.LocalState`) in sync by tailing one
stream, so every lookup stays in process and a put on one instance is a hit on the others
a few milliseconds later.

Key layout, scripts and the entry encoding: :mod:`routeguard.cache.redis_wire`.

Writes. ``SemanticCache.put``/``invalidate`` stay synchronous: they change the local state
and queue the write here; a writer task sends queued writes in batches, each batch one
MULTI/EXEC round trip (a put is ``DEL`` + ``HSET`` + ``PEXPIRE`` + ``XADD``; a delete
and a rule are Lua scripts that check, change and ``XADD`` atomically). Every write is
idempotent, so a batch whose outcome is unknown (connection lost) is simply sent again.

Reads. A tailer task runs ``XREAD BLOCK`` from the last event applied. A ``put`` event
whose version this instance already holds (its own write, echoed back) costs nothing;
otherwise the key's hash is fetched (one pipeline per batch of events) and its *current*
content applied: fetching the current state rather than replaying the event is what makes
two instances that race on one key converge on whichever write Redis applied last.

Admin operations ride on the same two paths. A delete by any filter but the exact key is a
rule (above), so it also covers the entries another instance holds that this one evicted
and the puts racing it with an earlier creation time. A correction (``SemanticCache.correct``)
is a put of the same key with a new version, preceded by a :meth:`RedisStore.pull` of the
stored entries it selects that the answering instance does not hold (its own LRU may have
evicted them): the others fetch it like any put, and a
correction racing another write of that key ends, everywhere, as whichever Redis applied
last.

Consistency on start: the stream's last id is read *before* the entries are scanned
(``SCAN`` + ``HGETALL``), then tailing starts from that id: a write that lands during the
scan is both scanned and replayed, which is harmless, and none falls in between. The same
full reload (a resync) follows a lost connection, or a tailer that fell so far behind that
the stream was trimmed past it (each ``XREAD`` is pipelined with an ``XINFO STREAM``
whose ``entries-added`` and ``length`` tell whether events not yet read were trimmed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from routeguard.backoff import backoff_delay
from routeguard.cache.keys import prompt_digest
from routeguard.cache.redis_wire import (
    DELETE_IF,
    RULE,
    SELECT,
    apply_entry,
    decode_entry,
    encode_entry,
    glob_escape,
)
from routeguard.cache.state import CacheEntry, LocalState, Selector, Vector
from routeguard.redis_url import stream_id

logger = logging.getLogger("routeguard.cache")
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

_RULE_KEYS_PER_CALL: Final = 500  # bounds how long one script holds Redis
_WRITES_PER_BATCH: Final = 256


@dataclass
class RedisStoreStats:
    """Counters of one RedisStore (read them for monitoring)."""

    writes: int = 0  # operations that reached Redis
    write_errors: int = 0  # failed batches (retried)
    dropped_writes: int = 0  # queued writes dropped because the queue was full
    events: int = 0  # stream events read
    fetches: int = 0  # entry hashes fetched for events
    loaded: int = 0  # entries loaded by the last start or resync
    resyncs: int = 0  # full reloads after the first


@dataclass(slots=True)
class _Op:
    kind: str  # "put" | "del" | "rule"
    key: str
    version: str | None = None
    mapping: dict[str, bytes | str] | None = None
    ttl_ms: int | None = None
    namespace: str | None = None
    older_than: float | None = None
    before: float = 0.0
    doomed: tuple[str, ...] = ()


class RedisStore:
    """The shared backend of a :class:`~routeguard.cache.semantic.SemanticCache`.

    Pass ``url`` (``redis://host:port/db``) or a ``client`` created with
    ``decode_responses=False`` (a passed client is not closed by :meth:`aclose`). Instances
    share a cache when they use the same Redis and ``prefix``. ``stream_maxlen`` bounds the
    event stream (an instance further behind than that reloads everything), ``block_ms``
    is the tailer's ``XREAD BLOCK`` timeout, ``max_pending`` the writes queued while Redis
    is unreachable (the oldest are dropped past it; local state is unaffected).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        prefix: str = "rg:cache",
        stream_maxlen: int = 100_000,
        block_ms: int = 1_000,
        batch: int = 512,
        max_pending: int = 10_000,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("RedisStore needs exactly one of url= or client=")
        self._owns_client = client is None
        if client is None:
            assert url is not None
            client = aioredis.from_url(url)
        self.redis: aioredis.Redis = client
        tag = "{" + prefix + "}"
        self.entry_prefix = f"{tag}:e:"
        self.stream = f"{tag}:events"
        self.rules_key = f"{tag}:rules"
        self.stream_maxlen = stream_maxlen
        self.block_ms = block_ms
        self.batch = batch
        self.max_pending = max_pending
        self.stats = RedisStoreStats()
        # The tailer blocks in XREAD on a connection of its own, which closing can cut.
        pool = client.connection_pool
        self._tail_redis = aioredis.Redis.from_pool(  # owns (and closes) its pool
            aioredis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=1,
                **pool.connection_kwargs,
            )
        )  # fmt: skip
        self._delete_if = self.redis.register_script(DELETE_IF)
        self._rule = self.redis.register_script(RULE)
        self._select = self.redis.register_script(SELECT)
        self._state: LocalState | None = None
        self._queue: deque[_Op] = deque()
        self._pending: dict[str, str] = {}  # key -> version of a put not yet in Redis
        self._enqueued = 0
        self._sent = 0
        self._counting = threading.Lock()  # guards the two counters above
        self._sent_cond: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._applied: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._last_id = b"0-0"
        self._position = 0  # events of the stream read (or covered by a load) so far
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._rng = random.Random()
        self._warned = 0.0
        self._tail_ok = False
        self._write_ok = True

    @property
    def healthy(self) -> bool:
        """Whether the store is started and its last read and write both reached Redis
        (False from a lost connection until the tailer has resynced and writes go through)."""
        return self.started and self._tail_ok and self._write_ok

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run and :meth:`aclose` has not."""
        return bool(self._tasks)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, state: LocalState) -> None:
        """Load every live entry into ``state``, then tail the stream and send writes."""
        self._state = state
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._sent_cond = asyncio.Condition()
        self._wake = asyncio.Event()
        self._applied = asyncio.Event()
        await self._load(initial=True)
        self._tail_ok = self._write_ok = True
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="routeguard-cache-writer"),
            asyncio.create_task(self._tail_loop(), name="routeguard-cache-tailer"),
        ]

    async def flush(self) -> None:
        """Wait until every write queued so far has reached Redis."""
        if self._sent_cond is None:
            return
        target = self._enqueued
        async with self._sent_cond:
            await self._sent_cond.wait_for(lambda: self._sent >= target)

    async def caught_up(self) -> None:
        """Wait until this instance has applied every event already in the stream."""
        last: Any = await self.redis.xrevrange(self.stream, count=1)
        if not last or self._applied is None:
            return
        target = stream_id(last[0][0])
        while stream_id(self._last_id) < target:
            self._applied.clear()
            await self._applied.wait()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Send queued writes (for up to ``timeout`` s), stop the tasks, close the client."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout)
            self._closing = True
            for task in self._tasks:
                task.cancel()
            _, pending = await asyncio.wait(self._tasks, timeout=0.05)
            if pending:  # a cancellation redis-py absorbed (it can, while connecting)
                await self._tail_redis.connection_pool.disconnect()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        await self._tail_redis.aclose()
        if self._owns_client:
            await self.redis.aclose()

    def _stopping(self) -> bool:
        """Whether :meth:`aclose` is stopping the tasks (a method: the loops re-read it)."""
        return self._closing

    # ------------------------------------------------------------------ writes (queued)

    def write_put(self, entry: CacheEntry, vector: Vector, ttl: float | None) -> None:
        """Queue the write of ``entry``."""
        mapping = encode_entry(entry, vector)
        ttl_ms = None if ttl is None else max(1, round(ttl * 1000))
        self._check_started()
        self._pending[entry.key] = entry.version
        self._enqueue(_Op("put", entry.key, entry.version, mapping, ttl_ms))

    def write_delete(
        self, key: str, version: str | None, namespace: str | None, older_than: float | None
    ) -> None:
        """Queue the removal of ``key`` (if still at ``version`` and passing the filters)."""
        self._enqueue(_Op("del", key, version, namespace=namespace, older_than=older_than))

    def write_rule(self, field: str, before: float, doomed: Sequence[CacheEntry]) -> None:
        """Queue an invalidation rule and the deletion of the entries known to fall under it."""
        keys = tuple(e.key for e in doomed)
        self._enqueue(_Op("rule", field, before=before, doomed=keys))

    def _check_started(self) -> None:
        if self._wake is None or self._loop is None:
            raise RuntimeError("RedisStore is not started: `await cache.start()` first")

    def _enqueue(self, op: _Op) -> None:
        self._check_started()
        assert self._wake is not None and self._loop is not None
        # A delete may be queued from a worker thread (an admin scan) while the loop queues
        # puts and the writer counts what it sent: the counters ``flush`` waits on stay exact.
        with self._counting:
            if len(self._queue) >= self.max_pending:
                lost = self._queue.popleft()
                if lost.kind == "put" and self._pending.get(lost.key) == lost.version:
                    self._pending.pop(lost.key, None)
                self.stats.dropped_writes += 1
                self._sent += 1
                self._warn("cache write queue full (Redis unreachable?): dropping the oldest write")
            self._queue.append(op)
            self._enqueued += 1
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _write_loop(self) -> None:
        """Send queued writes in batches. A batch leaves the queue before it is sent (so a
        full queue dropping its oldest never touches it) and is resent until Redis answers."""
        assert self._wake is not None and self._sent_cond is not None
        failures = 0
        batch: list[_Op] = []
        while not self._closing:
            if not batch:
                self._wake.clear()  # before looking at the queue: no wake-up can be lost
                while self._queue and len(batch) < _WRITES_PER_BATCH:
                    try:
                        batch.append(self._queue.popleft())
                    except IndexError:  # emptied by a drop on another thread
                        break
                if not batch:
                    await self._wake.wait()
                    continue
            try:
                await self._send(batch)
                self.stats.writes += len(batch)
                self._write_ok = True
            except _DOWN as e:
                if self._stopping():
                    return
                self._write_ok = False
                failures += 1
                self.stats.write_errors += 1
                self._warn(f"cache writes to Redis failed ({e}); retrying")
                await asyncio.sleep(backoff_delay(failures, 0.05, 2.0, None, self._rng))
                continue
            except RedisError:  # refused, not lost: sending it again would fail again
                logger.exception("Redis refused a batch of %d cache writes; dropped", len(batch))
                self.stats.dropped_writes += len(batch)
            failures = 0
            for op in batch:
                if op.kind == "put" and self._pending.get(op.key) == op.version:
                    self._pending.pop(op.key, None)
            async with self._sent_cond:
                with self._counting:
                    self._sent += len(batch)
                self._sent_cond.notify_all()
            batch = []

    async def _send(self, ops: Sequence[_Op]) -> None:
        """One MULTI/EXEC with every op of the batch."""
        pipe = self.redis.pipeline(transaction=True)
        maxlen = str(self.stream_maxlen)
        for op in ops:
            ekey = self.entry_prefix + op.key
            if op.kind == "put":
                assert op.mapping is not None
                pipe.delete(ekey)
                pipe.hset(ekey, mapping=op.mapping)  # type: ignore[arg-type]
                if op.ttl_ms is not None:
                    pipe.pexpire(ekey, op.ttl_ms)
                pipe.xadd(
                    self.stream,
                    {"op": "put", "key": op.key, "ver": op.version or ""},
                    maxlen=self.stream_maxlen,
                    approximate=True,
                )
            elif op.kind == "del":
                ns = "\0" if op.namespace is None else op.namespace
                older = "" if op.older_than is None else repr(op.older_than)
                args = [op.key, op.version or "", ns, older, maxlen, "1"]
                await self._delete_if(keys=[ekey, self.stream], args=args, client=pipe)
            else:
                sel = Selector.parse(op.key)  # the script re-checks the doomed keys' namespace
                namespace = "" if sel is None or sel.namespace is None else sel.namespace
                doomed = [self.entry_prefix + k for k in op.doomed]
                chunks = [doomed[i : i + _RULE_KEYS_PER_CALL]
                          for i in range(0, len(doomed), _RULE_KEYS_PER_CALL)] or [[]]  # fmt: skip
                for chunk in chunks:  # the rule is idempotent: one event per chunk is harmless
                    await self._rule(
                        keys=[self.rules_key, self.stream, *chunk],
                        args=[op.key, repr(op.before), maxlen, namespace],
                        client=pipe,
                    )
        await pipe.execute()

    # ------------------------------------------------------------------ reads (mirroring)

    async def _tail_loop(self) -> None:
        assert self._applied is not None
        failures = 0
        while not self._closing:
            try:
                if failures:
                    await self._load(initial=False)
                # XINFO rides along with the blocking read (same round trip): if events this
                # instance has not read were trimmed meanwhile, replaying would leave a gap.
                pipe = self._tail_redis.pipeline(transaction=False)
                pipe.xinfo_stream(self.stream)
                pipe.xread({self.stream: self._last_id}, count=self.batch, block=self.block_ms)
                info, reply = await pipe.execute(raise_on_error=False)
                if isinstance(reply, Exception):
                    raise reply
                if not isinstance(info, Exception) and self._trimmed_past_us(info):
                    await self._load(initial=False)
                    continue
                events = reply[0][1] if reply else []
                if events:
                    await self._apply(events)
                    self._last_id = events[-1][0]
                    self._position += len(events)
                failures = 0
                self._tail_ok = True
            except _DOWN as e:
                if self._stopping():  # redis-py may turn our cancellation into an error
                    return
                self._tail_ok = False
                failures += 1
                self._warn(f"cache stream from Redis failed ({e}); reconnecting")
                await asyncio.sleep(backoff_delay(failures, 0.05, 2.0, None, self._rng))
                continue
            except Exception:  # a refused command, a malformed event: never let mirroring die
                if self._stopping():
                    return
                self._tail_ok = False
                failures += 1  # reload from scratch rather than risk a gap
                logger.exception("mirroring the cache stream failed; resyncing")
                await asyncio.sleep(backoff_delay(failures, 0.05, 2.0, None, self._rng))
                continue
            self._applied.set()

    async def _stream_info(self) -> tuple[bytes, int, int]:
        """The stream's last id, events ever added and events retained (one consistent read)."""
        try:
            info: dict[str, Any] = await self.redis.xinfo_stream(self.stream)
        except ResponseError:  # no stream yet
            return b"0-0", 0, 0
        return info["last-generated-id"], int(info["entries-added"]), int(info["length"])

    def _trimmed_past_us(self, info: dict[str, Any]) -> bool:
        """Whether the stream lost (trimmed) events this instance has not read yet: events
        are numbered by ``entries-added``; the oldest retained is ``added - length + 1``."""
        return int(info["entries-added"]) - int(info["length"]) > self._position

    async def _apply(self, events: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Apply a batch of events in order, fetching the entries they name in one pipeline."""
        state = self._state
        assert state is not None
        self.stats.events += len(events)
        plan: list[tuple[str, str, str]] = []
        fetch: dict[str, None] = {}
        for _, fields in events:
            op = fields.get(b"op", b"").decode()
            if op == "inv":
                plan.append(("rule", fields[b"field"].decode(), fields[b"before"].decode()))
                continue
            key = fields.get(b"key", b"").decode()
            version = fields.get(b"ver", b"").decode()
            local = state.version_of(key)
            if op == "put" and local == version:
                continue  # our own write echoed back, or already fetched
            if op == "del" and local == version:
                plan.append(("drop", key, version))
            elif op in ("put", "del"):
                plan.append(("fetch", key, ""))
                fetch[key] = None
        fetched: dict[str, dict[bytes, bytes]] = {}
        if fetch:
            pipe = self.redis.pipeline(transaction=False)
            for key in fetch:
                pipe.hgetall(self.entry_prefix + key)
            fetched = dict(zip(fetch, await pipe.execute(), strict=True))
            self.stats.fetches += len(fetch)
        for step, a, b in plan:
            if step == "rule":
                sel = Selector.parse(a)
                if sel is not None and sel.prompt is None:  # a scan: off the event loop
                    await asyncio.to_thread(state.add_rule, a, float(b))
                else:  # a prompt's entries only (the digest index), or unreadable
                    state.add_rule(a, float(b))
            elif step == "drop":
                state.drop_key(a, b)
            else:
                with state.lock:
                    self._reconcile(state, a, fetched.get(a) or {})

    def _reconcile(self, state: LocalState, key: str, fields: dict[bytes, bytes]) -> None:
        """Make the local copy of ``key`` what Redis holds now."""
        decoded = decode_entry(key, fields, state.dim)
        if decoded is not None and not state.dead(decoded[0]) and not state.expired(decoded[0]):
            apply_entry(state, *decoded)
        elif key not in self._pending:  # gone from Redis (and not about to be written by us)
            state.drop_key(key)

    async def _load(self, *, initial: bool) -> None:
        """Read every live entry and rule into the local state (see the module doc)."""
        state = self._state
        assert state is not None
        last_id, added, _ = await self._stream_info()
        rules: Any = await self.redis.hgetall(self.rules_key)
        loaded: list[tuple[CacheEntry, Vector]] = []
        pattern = glob_escape(self.entry_prefix) + "*"
        keys: list[bytes] = []
        async for raw in self.redis.scan_iter(match=pattern, count=1000):
            keys.append(raw if isinstance(raw, bytes) else raw.encode())
            if len(keys) >= 500:
                loaded += await self._fetch_many(keys)
                keys = []
        loaded += await self._fetch_many(keys)
        loaded.sort(key=lambda pair: pair[0].created)
        with state.lock:
            if initial:
                state.clear()
            # Recorded, not scanned for: every entry held here is either reloaded (and
            # checked against the rules) or dropped below, so no rule costs a scan here.
            for field, before in rules.items():
                state.add_rule(field.decode(), float(before), scan=False)
            alive = [(e, v) for e, v in loaded if not state.dead(e) and not state.expired(e)]
            dead = [e for e, _ in loaded if state.dead(e)]
            if not initial:
                present = {e.key for e, _ in alive} | set(self._pending)
                for key in [k for k in state.entries if k not in present]:
                    state.drop_key(key)
                for key in self._pending:  # a write of ours not in Redis yet, dead by a rule
                    entry = state.entries.get(key)
                    if entry is not None and state.dead(entry):
                        state.drop(entry)
            for entry, vector in alive:
                apply_entry(state, entry, vector)
            self._last_id = last_id
            self._position = added
        self.stats.loaded = len(alive)
        if not initial:
            self.stats.resyncs += 1
        if dead:  # invalidated by a rule but still stored: collect them (unless rewritten)
            pipe = self.redis.pipeline(transaction=False)
            for e in dead:
                args = [e.key, e.version, "\0", "", str(self.stream_maxlen), "0"]
                await self._delete_if(keys=[self.entry_prefix + e.key, self.stream], args=args,
                                      client=pipe)  # fmt: skip
            await pipe.execute()

    async def pull(self, sel: Selector) -> int:
        """Load into the local state the stored entries ``sel`` selects that it does not hold
        at their stored version (e.g. evicted by this instance's own LRU); returns how many
        it applied. One ``SCAN`` of the entries with their namespace, prompt and version
        narrowed by a script per batch; only the matching ones are fetched whole. For admin
        operations (a correction must reach entries the answering instance does not hold)."""
        state = self._state
        assert state is not None
        self._check_started()
        outer = dataclasses.replace(sel, prompt=None)
        cut = len(self.entry_prefix.encode())
        pattern = glob_escape(self.entry_prefix) + "*"
        wanted: list[bytes] = []
        batch: list[bytes] = []

        # Redis narrows each batch by namespace, tenant and route (on their encoded forms, as
        # request_namespace wrote them), so only candidates come back; each is checked again
        # here, its prompt digest included.
        args = [
            sel.namespace or "",
            "" if sel.tenant is None else quote(sel.tenant, safe=""),
            "" if sel.route is None else quote(sel.route, safe=""),
        ]

        async def sift(raws: list[bytes]) -> None:
            found: Any = await self._select(keys=raws, args=args)
            for i in range(0, len(found), 4):
                raw, ns, prompt, version = found[i : i + 4]
                key = raw[cut:].decode()
                if state.version_of(key) == version.decode():
                    continue
                probe = CacheEntry(key, "", ns.decode(), prompt.decode(), None, 0.0, None, 0)
                if not state.selects(outer, probe):
                    continue
                if sel.prompt is None or prompt_digest(probe.prompt) == sel.prompt:
                    wanted.append(raw)

        async for raw in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(raw if isinstance(raw, bytes) else raw.encode())
            if len(batch) >= 500:
                await sift(batch)
                batch = []
        if batch:
            await sift(batch)
        applied = 0
        for i in range(0, len(wanted), 500):
            for entry, vector in await self._fetch_many(wanted[i : i + 500]):
                with state.lock:
                    if not state.dead(entry) and not state.expired(entry):
                        apply_entry(state, entry, vector)
                        applied += 1
        return applied

    async def _fetch_many(self, raw_keys: Sequence[bytes]) -> list[tuple[CacheEntry, Vector]]:
        if not raw_keys:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for raw in raw_keys:
            pipe.hgetall(raw)
        out = []
        cut = len(self.entry_prefix.encode())
        assert self._state is not None
        for raw, fields in zip(raw_keys, await pipe.execute(), strict=True):
            decoded = decode_entry(raw[cut:].decode(), fields, self._state.dim)
            if decoded is not None:
                out.append(decoded)
        return out

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned >= 10.0:
            self._warned = now
            logger.warning(message)
