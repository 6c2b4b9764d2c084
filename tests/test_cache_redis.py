"""SemanticCache over RedisStore, against a real redis-server: several instances share one
cache through Redis and keep their local indexes in sync through the events stream.

Each test uses its own key prefix on the session's server (``redis_server`` fixture,
tests/conftest.py). Waits for propagation poll with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from conftest import RedisProcess
from embedders import WordsEmbedder
from routeguard.cache.redis_store import RedisStore
from routeguard.cache.semantic import SemanticCache

Factory = Callable[..., Awaitable[SemanticCache]]


def store(cache: SemanticCache) -> RedisStore:
    assert isinstance(cache.store, RedisStore)
    return cache.store


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> float:
    """Poll ``check`` until truthy; returns the seconds it took (fails past ``timeout``)."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.002)
    return time.perf_counter() - t0


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make(redis_server: str, prefix: str) -> AsyncIterator[Factory]:
    """``await make(**cache_kwargs)``: a started cache on the shared prefix, closed after."""
    async with AsyncExitStack() as stack:

        async def factory(url: str = redis_server, **kwargs: Any) -> SemanticCache:
            store = RedisStore(url, prefix=prefix, block_ms=200)
            kwargs.setdefault("threshold", 0.8)
            cache = SemanticCache(WordsEmbedder(), store=store, **kwargs)
            return await stack.enter_async_context(cache)

        yield factory


async def test_put_on_one_instance_is_a_hit_on_another(make: Factory) -> None:
    a, b = await make(), await make()
    a.put("how do I reset my password", {"answer": "use the link"}, metadata={"m": 1})
    took = await eventually(lambda: b.get_exact("how do I reset my password") is not None)
    assert took < 1.0
    hit = b.get("how do I reset my password please")  # semantic: the vector came across
    assert hit is not None and not hit.exact and hit.response == {"answer": "use the link"}
    assert hit.metadata == {"m": 1}
    assert store(a).stats.fetches == 0  # its own write echoed back: nothing to fetch
    assert store(b).stats.fetches == 1


async def test_invalidation_propagates(make: Factory) -> None:
    a, b = await make(), await make()
    a.put("one thing", 1, namespace="x")
    k2 = a.put("two things", 2, namespace="x")
    a.put("three things", 3, namespace="y")
    a.put("four things", 4, namespace="y")
    await eventually(lambda: len(b) == 4)
    assert b.invalidate(key=k2) == 1
    await eventually(lambda: a.get_exact("two things", "x") is None)
    assert b.invalidate(namespace="y") == 2
    await eventually(lambda: len(a) == 1)
    assert a.get("one thing", "x") is not None
    assert a.invalidate() == 1
    await eventually(lambda: len(b) == 0)
    # a restarted instance sees none of it (deleted, or dead by the recorded rules)
    c = await make()
    assert len(c) == 0


async def test_invalidation_rule_covers_a_racing_older_write(
    make: Factory, redis_server: str, prefix: str
) -> None:
    clock_t = [1_000.0]
    a = await make(clock=lambda: clock_t[0])
    b = await make()  # real clock: far in the future of a's
    b.invalidate(namespace="x")  # rule: namespace x, created before now (b's clock)
    await eventually(lambda: "ns:x" in a._state.rules)
    key = a.put("written late with an old timestamp", 1, namespace="x")
    await a.flush()
    assert a.get_exact("written late with an old timestamp", "x") is None  # dead locally too
    await store(b).caught_up()
    assert len(b) == 0
    r = aioredis.from_url(redis_server)
    try:
        assert await r.exists(f"{{{prefix}}}:e:{key}") == 1  # stored, but dead by the rule
        assert len(await make()) == 0  # a new instance skips it, and collects it
        assert await r.exists(f"{{{prefix}}}:e:{key}") == 0
    finally:
        await r.aclose()


async def test_ttl_expiry_in_redis(make: Factory, redis_server: str, prefix: str) -> None:
    a, b = await make(ttl=None), await make(ttl=None)  # no cache-wide TTL: "stays" never expires
    key = a.put("short lived answer", "gone soon", ttl=0.3)
    a.put("long lived answer", "stays")
    await eventually(lambda: len(b) == 2)
    r = aioredis.from_url(redis_server)
    try:
        entry_key = f"{{{prefix}}}:e:{key}"
        assert 0 < await r.pttl(entry_key) <= 300
        assert await r.pttl(f"{{{prefix}}}:e:{a.get_exact('long lived answer').key}") == -1  # type: ignore[union-attr]
        await asyncio.sleep(0.35)
        assert b.get("short lived answer") is None  # local expiry, same deadline
        assert await r.exists(entry_key) == 0  # Redis expired it too
    finally:
        await r.aclose()
    c = await make()
    assert len(c) == 1 and c.get("long lived answer") is not None


async def test_restart_reloads_everything(make: Factory, redis_server: str, prefix: str) -> None:
    a = await make()
    items = [(f"question {i} about subject {i * 13}", {"n": i}) for i in range(60)]
    a.put_many(items[:30], namespace="ns1")
    a.put_many(items[30:], namespace="ns2", context=[{"role": "user", "content": "earlier"}])
    await a.aclose()
    again = SemanticCache(
        WordsEmbedder(), threshold=0.8, store=RedisStore(redis_server, prefix=prefix)
    )
    async with again:
        assert len(again) == 60
        hit = again.get("question 7 about subject 91 again", namespace="ns1")
        assert hit is not None and hit.response == {"n": 7}
        ctx = [{"role": "user", "content": "earlier"}]
        hit = again.get("question 40 about subject 520", namespace="ns2", context=ctx)
        assert hit is not None and hit.exact and hit.response == {"n": 40}
        assert again.get("question 40 about subject 520", namespace="ns2") is None


async def test_namespaces_stay_isolated(make: Factory) -> None:
    a, b = await make(), await make()
    a.put("tell me a secret", "tenant A's answer", namespace="tenant-a")
    await eventually(lambda: len(b) == 1)
    assert b.get("tell me a secret", namespace="tenant-b") is None
    assert b.get("tell me a secret please", namespace="tenant-b") is None
    hit = b.get("tell me a secret", namespace="tenant-a")
    assert hit is not None and hit.response == "tenant A's answer"


async def test_racing_puts_converge(make: Factory, redis_server: str, prefix: str) -> None:
    a, b = await make(), await make()
    prompts = [f"contested prompt number {i}" for i in range(40)]
    for i, p in enumerate(prompts):  # interleaved writes of the same keys, both directions
        a.put(p, f"a{i}")
        b.put(p, f"b{i}")
        if i % 3 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(a.flush(), b.flush())
    await asyncio.gather(store(a).caught_up(), store(b).caught_up())
    r = aioredis.from_url(redis_server)
    try:
        for p in prompts:
            ha, hb = a.get_exact(p), b.get_exact(p)
            assert ha is not None and hb is not None and ha.response == hb.response
            stored = await r.hget(f"{{{prefix}}}:e:{ha.key}", "response")
            assert isinstance(stored, bytes) and msgspec.msgpack.decode(stored) == ha.response
    finally:
        await r.aclose()


async def test_start_while_another_instance_writes_misses_nothing(make: Factory) -> None:
    a = await make()

    async def writer() -> None:
        for i in range(200):
            a.put(f"streamed entry {i}", i)
            if i % 10 == 0:
                await asyncio.sleep(0.001)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.005)
    late = await make()  # loads while a keeps writing
    await task
    await a.flush()
    await eventually(lambda: len(late) == 200)


async def test_puts_from_worker_threads_and_stats(make: Factory) -> None:
    a, b = await make(), await make()
    await asyncio.gather(*(asyncio.to_thread(a.put, f"threaded {i}", i) for i in range(20)))
    await a.flush()
    await eventually(lambda: len(b) == 20)
    assert store(a).stats.writes == 20 and store(a).stats.write_errors == 0


async def test_a_store_must_be_started(redis_server: str, prefix: str) -> None:
    cache = SemanticCache(WordsEmbedder(), store=RedisStore(redis_server, prefix=prefix))
    with pytest.raises(RuntimeError, match=r"await cache\.start"):
        cache.put("a", 1)
    assert cache.get("a") is None  # reads are local and need nothing
    await cache.aclose()
    with pytest.raises(ValueError, match="exactly one"):
        RedisStore()


async def test_survives_a_redis_restart(redis_process: RedisProcess, prefix: str) -> None:
    def cache() -> SemanticCache:
        store = RedisStore(redis_process.url, prefix=prefix, block_ms=100)
        return SemanticCache(WordsEmbedder(), threshold=0.8, store=store)

    async with cache() as a, cache() as b:
        a.put("before the outage", 1)
        await eventually(lambda: len(b) == 1)
        redis_process.stop()
        a.put("during the outage", 2)  # queued; local state already has it
        assert a.get_exact("during the outage") is not None
        redis_process.start()  # empty: persistence is off
        await a.flush()
        # b reconnects and resyncs to what Redis holds now: only the write sent after
        await eventually(lambda: b.get_exact("during the outage") is not None, timeout=8)
        await eventually(lambda: b.get_exact("before the outage") is None, timeout=8)
        assert store(b).stats.resyncs >= 1


async def test_a_tailer_behind_a_trimmed_stream_reloads(make: Factory) -> None:
    a = await make()
    a.put_many([(f"entry {i}", i) for i in range(300)])
    await a.flush()
    b = await make()
    slow = store(b)
    assert slow.stats.loaded == 300
    # Pretend b read nothing since the beginning: the events it missed were trimmed away
    # (MAXLEN ~ keeps whole 100-event nodes), so it must reload instead of replaying.
    await redis_trim(slow, 150)
    slow._last_id, slow._position = b"0-0", 0
    await eventually(lambda: slow.stats.resyncs >= 1)
    assert len(b) == 300


async def redis_trim(s: RedisStore, keep: int) -> None:
    await s.redis.xtrim(s.stream, maxlen=keep, approximate=False)


async def test_close_right_after_start_is_prompt(redis_server: str, prefix: str) -> None:
    store = RedisStore(redis_server, prefix=prefix, block_ms=5_000)
    cache = SemanticCache(WordsEmbedder(), store=store)
    await cache.start()
    t0 = time.perf_counter()
    await cache.aclose()
    assert time.perf_counter() - t0 < 1.0 and not store.started


async def test_unencodable_response_leaves_both_sides_unchanged(make: Factory) -> None:
    a = await make()
    with pytest.raises(TypeError):
        a.put("a prompt", object())
    assert len(a) == 0 and a.get_exact("a prompt") is None
    await a.flush()
    assert store(a).stats.writes == 0


async def test_a_malformed_event_does_not_stop_mirroring(make: Factory) -> None:
    a, b = await make(), await make()
    await store(a).redis.xadd(store(a).stream, {"op": "inv"})  # no field, no before
    a.put("after the bad event", 1)
    await eventually(lambda: b.get_exact("after the bad event") is not None)
    assert store(b).stats.resyncs >= 1
