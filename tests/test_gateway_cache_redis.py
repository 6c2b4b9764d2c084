"""The gateway's cache on the Redis backend (``cache: {backend: redis}``), against a real
redis-server: several gateways (in process, or behind the proxy) share one cache, tenants
stay apart, invalidation propagates, and an unreachable Redis bypasses the cache without
failing a request.

Each test uses its own ``redis_prefix`` on the session's server (``redis_server`` fixture),
or a server of its own it can stop (``redis_process``). Propagation is awaited through the
store (``flush`` on the writer, ``caught_up`` on the reader) or by polling with a deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import openai
import pytest

from conftest import RedisProcess
from embedders import WordsEmbedder
from routeguard.cache.keys import request_namespace
from routeguard.cache.layer import CacheLayer
from routeguard.cache.redis_store import RedisStore
from routeguard.config import load
from routeguard.errors import ConfigError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

Make = Callable[..., Any]


def _cfg(upstream: str, redis_url: str | None, prefix: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": upstream + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 1.0}  # fmt: skip
    cache: dict[str, Any] = {"enabled": True, "threshold": 0.8, "backend": "redis"}
    cache["redis_prefix"] = prefix
    if redis_url is not None:
        cache["redis_url"] = redis_url
    return {"model_list": [{**dep, "model_name": "cached", "model": "sim-cached"}], "cache": cache}


def _req(text: str) -> dict[str, Any]:
    return {"model": "cached", "messages": [{"role": "user", "content": text}]}


def _layer(gw: Gateway) -> CacheLayer:
    assert gw.cache is not None
    return gw.cache


def _store(gw: Gateway) -> RedisStore:
    store = _layer(gw).cache.store
    assert isinstance(store, RedisStore)
    return store


async def _sync(writer: Gateway, reader: Gateway) -> None:
    """Wait until ``writer``'s writes are in Redis and ``reader`` has applied them."""
    await _store(writer).flush()
    await _store(reader).caught_up()


async def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


@pytest.fixture
def prefix() -> str:
    return f"gw-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make(mock: MockServer, redis_server: str, prefix: str) -> AsyncIterator[Make]:
    """``make(url=...)``: a Gateway on the Redis cache (shared prefix), closed after the test."""
    async with AsyncExitStack() as stack:

        def factory(url: str | None = redis_server) -> Gateway:
            gw = Gateway.from_config(_cfg(mock.url, url, prefix), embedder=WordsEmbedder())
            stack.push_async_callback(gw.aclose)
            return gw

        yield factory


# --------------------------------------------------------------------------- config


def test_config_selects_the_redis_backend(redis_server: str) -> None:
    cfg = load(_cfg("http://127.0.0.1:9", redis_server, "p"))
    assert cfg.cache.backend == "redis" and cfg.cache.redis_url == redis_server
    assert cfg.cache.redis_prefix == "p"
    assert load(_cfg("http://127.0.0.1:9", None, "p") | {"cache": {}}).cache.backend == "memory"
    shared = _cfg("http://127.0.0.1:9", None, "p") | {"budget_settings": {"redis_url": "redis://h"}}
    assert load(shared).cache.redis_url == "redis://h"  # the budgets' Redis by default


@pytest.mark.parametrize(
    ("cache", "routes", "path", "words"),
    [
        ({"backend": "redis"}, {}, "cache.redis_url", "required"),
        ({"backend": "redis", "redis_url": "http://h"}, {}, "cache.redis_url", "redis://"),
        (
            {"backend": "redis", "redis_url": "redis://h", "redis_prefix": ""},
            {},
            "cache.redis_prefix",
            "empty",
        ),
        ({"backend": "disk"}, {}, "cache.backend", "disk"),
        ({}, {"m": {"cache": {"backend": "redis"}}}, "routes.m.cache.backend", "top-level"),
        ({}, {"m": {"cache": {"redis_url": "redis://h"}}}, "routes.m.cache.redis_url", "top-level"),
    ],
)
def test_config_errors_name_the_key(
    cache: dict[str, Any], routes: dict[str, Any], path: str, words: str
) -> None:
    dep = {"type": "openai", "model_name": "m", "model": "x", "api_key": "k"}
    with pytest.raises(ConfigError) as info:
        load({"model_list": [dep], "cache": cache, "routes": routes})
    problems = {p.path: p.message for p in info.value.problems}
    assert path in problems, problems
    assert words in problems[path]


# --------------------------------------------------------------------------- in process


async def test_a_response_cached_on_one_gateway_is_a_hit_on_another(make: Make) -> None:
    a, b = make(), make()
    await a.start_cache()
    await b.start_cache()
    first = await a.chat_result(_req("what is the capital of france"))
    assert first.cache == "miss" and first.response is not None
    await _sync(a, b)
    hit = await b.chat_result(_req("what is the capital of france"))
    assert hit.cache == "hit" and hit.cost == 0.0 and hit.response is not None
    content = first.response["choices"][0]["message"]["content"]
    assert hit.response["choices"][0]["message"]["content"] == content
    para = await b.chat_result(_req("the capital of france, what is it"))
    assert para.cache == "hit" and para.cache_score is not None and para.cache_score < 1.0
    assert _layer(a).metrics.errors == 0 and _layer(b).metrics.errors == 0


async def test_the_first_request_starts_the_cache(make: Make) -> None:
    a, b = make(), make()  # no start_cache(): chat_result starts it on its own loop
    first = await asyncio.gather(  # concurrent first requests: both wait for the one start
        a.chat_result(_req("how many legs does a spider have")),
        a.chat_result(_req("how many eyes does a spider have")),
    )
    assert [r.cache for r in first] == ["miss", "miss"]
    assert (await b.chat_result(_req("is the sky blue"))).cache == "miss"
    assert _layer(a).metrics.errors == 0 and _layer(b).metrics.errors == 0
    await _sync(a, b)
    assert (await b.chat_result(_req("how many legs does a spider have"))).cache == "hit"


async def test_tenants_stay_apart_across_gateways(make: Make) -> None:
    a, b = make(), make()
    await a.start_cache()
    await b.start_cache()
    await a.chat_result(_req("what is our refund policy"), tenant="acme")
    await _sync(a, b)
    assert (await b.chat_result(_req("what is our refund policy"), tenant="globex")).cache == "miss"
    assert (await b.chat_result(_req("what is our refund policy"), tenant="acme")).cache == "hit"


async def test_invalidation_propagates_across_gateways(make: Make) -> None:
    a, b = make(), make()
    await a.start_cache()
    await b.start_cache()
    await a.chat_result(_req("who wrote hamlet"), tenant="acme")
    await a.chat_result(_req("who wrote hamlet"), tenant="globex")
    await _sync(a, b)
    acme = request_namespace("acme", "cached", _req("who wrote hamlet"))
    assert _layer(b).cache.invalidate(namespace=acme) == 1
    await _sync(b, a)
    assert (await a.chat_result(_req("who wrote hamlet"), tenant="acme")).cache == "miss"
    assert (await a.chat_result(_req("who wrote hamlet"), tenant="globex")).cache == "hit"
    _layer(a).cache.invalidate()  # everything, everywhere
    await _sync(a, b)
    assert len(_layer(b).cache) == 0
    assert (await b.chat_result(_req("who wrote hamlet"), tenant="globex")).cache == "miss"


async def test_redis_going_down_bypasses_the_cache(
    mock: MockServer, redis_process: RedisProcess, prefix: str
) -> None:
    gw = Gateway.from_config(_cfg(mock.url, redis_process.url, prefix), embedder=WordsEmbedder())
    try:
        await gw.start_cache()
        assert (await gw.chat_result(_req("what is a black hole"))).cache == "miss"
        assert (await gw.chat_result(_req("what is a black hole"))).cache == "hit"
        await _store(gw).flush()  # else the queued write is replayed into the new Redis
        redis_process.stop()
        await _eventually(lambda: not _layer(gw).ready)
        for _ in range(3):
            down = await gw.chat_result(_req("what is a black hole"))
            assert down.cache == "off" and down.response is not None and down.response["choices"]
        assert _layer(gw).metrics.errors >= 3
        redis_process.start()  # empty again: persistence is off
        await _eventually(lambda: _layer(gw).ready)
        assert (await gw.chat_result(_req("what is a black hole"))).cache == "miss"
        assert (await gw.chat_result(_req("what is a black hole"))).cache == "hit"
    finally:
        await gw.aclose()


async def test_redis_down_at_start_is_retried_in_the_background(
    mock: MockServer, redis_process: RedisProcess, prefix: str
) -> None:
    redis_process.stop()
    gw = Gateway.from_config(_cfg(mock.url, redis_process.url, prefix), embedder=WordsEmbedder())
    try:
        await gw.start_cache()  # does not raise
        served = await gw.chat_result(_req("how far away is the moon"))
        assert served.cache == "off" and served.response is not None
        assert _layer(gw).metrics.errors >= 2  # the failed start, the bypassed request
        redis_process.start()
        await _eventually(lambda: _layer(gw).ready)
        assert (await gw.chat_result(_req("how far away is the moon"))).cache == "miss"
        assert (await gw.chat_result(_req("how far away is the moon"))).cache == "hit"
    finally:
        await gw.aclose()
    assert not _store(gw).started


# --------------------------------------------------------------------------- proxy


def test_two_proxies_share_the_cache(mock: MockServer, redis_server: str, prefix: str) -> None:
    gw_a = Gateway.from_config(_cfg(mock.url, redis_server, prefix), embedder=WordsEmbedder())
    gw_b = Gateway.from_config(_cfg(mock.url, redis_server, prefix), embedder=WordsEmbedder())
    msgs: Any = [{"role": "user", "content": "which ocean is the deepest"}]
    with (
        ServerThread(create_app(gw_a)) as proxy_a,
        ServerThread(create_app(gw_b)) as proxy_b,
        openai.OpenAI(base_url=proxy_a.url + "/v1", api_key="x", max_retries=0) as client_a,
        openai.OpenAI(base_url=proxy_b.url + "/v1", api_key="x", max_retries=0) as client_b,
    ):
        assert _store(gw_a).started and _store(gw_b).started  # by the lifespan startup
        first = client_a.chat.completions.with_raw_response.create(model="cached", messages=msgs)
        assert first.headers["x-routeguard-cache"] == "miss"
        deadline = time.monotonic() + 10
        while len(_layer(gw_b).cache) == 0:
            assert time.monotonic() < deadline, "the entry never reached the second proxy"
            time.sleep(0.01)
        second = client_b.chat.completions.with_raw_response.create(model="cached", messages=msgs)
        assert second.headers["x-routeguard-cache"] == "hit"
        assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
        streamed = client_b.chat.completions.create(model="cached", messages=msgs, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text == first.parse().choices[0].message.content
    assert not _store(gw_a).started and not _store(gw_b).started  # by the lifespan shutdown
