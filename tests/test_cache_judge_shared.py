"""The per-minute cap on a cache judge model's calls is the cluster's with ``cache.backend:
redis``: two gateways on one real redis-server (in process, and as two proxies the openai
SDK calls), comparing at once, make at most ``judge_max_per_minute`` judge calls together
(counted on the simulated upstream), a slot
given back is free for the other instance, and with Redis unreachable each instance keeps
to its own cap. Clocks are injected, so the window's edges are the test's, not the wall's."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import openai
import redis

from embedders import WideWordsEmbedder, WordsEmbedder
from routeguard.cache.judge_limit import WINDOW, JudgeLimiter
from routeguard.cache.judge_window import RedisJudgeWindow
from routeguard.cache.layer import CacheLayer, Ticket
from routeguard.cache.semantic import CacheHit
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from scrapes import scrape, value

CAP = 3
DEAD = "redis://127.0.0.1:9/0"  # nothing listens there
MASTER = "sk-master-judge-shared"


def _cfg(url: str, redis_url: str, prefix: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    cache = {"enabled": True, "backend": "redis", "redis_url": redis_url, "redis_prefix": prefix,
             "max_error_rate": 0.05, "judge": "judge", "judge_max_per_minute": CAP}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "qa", "model": "sim-qa"},
            {**dep, "model_name": "judge", "model": "sim-judge"},
        ],
        "cache": cache,
    }


def _answer(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def _ticket(layer: CacheLayer, i: int) -> Ticket:
    """A miss whose candidate's answer differs from the fresh one (so the judge is asked)."""
    settings = layer.config.cache_for("qa")
    bound = layer.bound_for("qa", settings)
    ticket = Ticket(f"question {i}", "ns", [], settings, alias="qa",
                    request={"model": "qa", "messages": []})  # fmt: skip
    ticket.candidate = CacheHit(_answer(f"cached {i}"), 0.9, f"k{i}", False, "q", {})
    ticket.decision = bound.decide(0.9)
    return ticket


def _layer(gw: Gateway) -> CacheLayer:
    assert gw.cache is not None
    return gw.cache


def _until(check: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _judge_calls(mock: MockServer) -> int:
    return sum(r.model == "sim-judge" for r in mock.requests)


async def test_two_instances_make_the_capped_number_of_judge_calls_together(
    redis_server: str,
) -> None:
    prefix = f"jw-{uuid.uuid4().hex[:8]}"
    now = [1_000_000.0]  # one clock for both instances (wall and local)
    with MockServer() as mock:
        gws = [Gateway.from_config(_cfg(mock.url, redis_server, prefix),
                                   embedder=WordsEmbedder()) for _ in range(2)]  # fmt: skip
        layers = [gw.cache for gw in gws]
        assert all(layer is not None for layer in layers)
        try:
            for layer in layers:
                assert layer is not None
                layer.bound_for("qa", layer.config.cache_for("qa"))
                limiter = layer.limiters["qa"]
                limiter.clock = limiter.wall = lambda: now[0]

            async def burst(start: int) -> list[bool | None]:
                return await asyncio.gather(*(
                    layer.compare(_ticket(layer, start + i), _answer(f"fresh {start + i}"))
                    for layer in layers if layer is not None for i in range(12)
                ))  # fmt: skip

            verdicts = await burst(0)
            assert _judge_calls(mock) == CAP  # not CAP per instance
            assert sum(v is not None for v in verdicts) == CAP
            rows = [layer.stats()["routes"]["qa"] for layer in layers if layer is not None]
            assert sum(r["judge_calls"] for r in rows) == CAP
            assert sum(r["judge_capped"] for r in rows) == 24 - CAP
            assert all(r["judge_unshared"] == 0 for r in rows)
            window = layers[0].judge_window if layers[0] is not None else None
            assert window is not None
            with redis.Redis.from_url(redis_server) as r:
                assert r.zcard(window.key("qa")) == CAP

            now[0] += WINDOW - 1.0  # still inside the window: nothing more
            await burst(100)
            assert _judge_calls(mock) == CAP
            now[0] += 2.0  # the first calls left it: CAP more, again for both together
            await burst(200)
            assert _judge_calls(mock) == 2 * CAP
        finally:
            for gw in gws:
                await gw.aclose()


async def test_a_slot_given_back_is_free_for_the_other_instance(redis_server: str) -> None:
    window = RedisJudgeWindow(redis_server, prefix=f"jw-{uuid.uuid4().hex[:8]}")
    now = [50.0]
    a, b = (JudgeLimiter(per_minute=1, shared=window, route="qa", clock=lambda: now[0],
                         wall=lambda: now[0]) for _ in range(2))  # fmt: skip
    try:
        slot = await a.take()
        assert slot is not None and slot.member is not None
        assert await b.take() is None  # the instances' one call a minute is a's
        await a.give_back(slot)  # its call was not made (the payer could not afford it)
        assert a.calls == 0
        assert await b.take() is not None
        assert (a.capped, b.capped, b.calls) == (0, 1, 1)
    finally:
        await window.aclose()


async def test_with_redis_unreachable_each_instance_keeps_to_its_own_cap() -> None:
    windows = [RedisJudgeWindow(DEAD, timeout=1.0) for _ in range(2)]
    limiters = [JudgeLimiter(per_minute=2, shared=w, route="qa", clock=lambda: 7.0,
                             wall=lambda: 7.0) for w in windows]  # fmt: skip
    try:
        slots = await asyncio.gather(*(lim.take() for lim in limiters for _ in range(5)))
        assert sum(s is not None for s in slots) == 4  # the per-instance cap, never more
        for lim in limiters:
            assert (lim.calls, lim.unshared, lim.capped) == (2, 2, 3)
        assert all(w.failures == 2 for w in windows)
    finally:
        for w in windows:
            await w.aclose()


async def test_concurrent_takes_across_instances_never_overshoot(redis_server: str) -> None:
    """Many instances' limiters (each with a large cap of its own) racing for one window."""
    prefix = f"jw-{uuid.uuid4().hex[:8]}"
    windows = [RedisJudgeWindow(redis_server, prefix=prefix) for _ in range(4)]
    limiters = [JudgeLimiter(per_minute=5, shared=w, route="qa", wall=lambda: 9.0)
                for w in windows]  # fmt: skip
    try:
        slots = await asyncio.gather(*(lim.take() for lim in limiters for _ in range(10)))
        assert sum(s is not None for s in slots) == 5
        assert sum(lim.calls for lim in limiters) == 5
        assert sum(lim.capped for lim in limiters) == 35
    finally:
        for w in windows:
            await w.aclose()


def test_two_proxies_share_the_judge_cap(redis_server: str) -> None:
    """The same through two proxies and the openai SDK: lookups on both with a cached
    candidate each (all compared: the bound has certified nothing yet), a judge call per
    comparison up to the cap, and the judge upstream sees CAP calls in all."""
    prefix = f"jw-{uuid.uuid4().hex[:8]}"
    with MockServer() as mock:
        cfg = {**_cfg(mock.url, redis_server, prefix), "server": {"master_key": MASTER}}
        gws = [Gateway.from_config(cfg, embedder=WideWordsEmbedder()) for _ in range(2)]
        layers = [_layer(gw) for gw in gws]
        for layer in layers:
            limiter = layer.limiters["qa"]
            limiter.clock = limiter.wall = lambda: 5_000.0  # one minute for the whole test
        with (
            ServerThread(create_app(gws[0])) as pa,
            ServerThread(create_app(gws[1])) as pb,
            openai.OpenAI(base_url=pa.url + "/v1", api_key=MASTER, max_retries=0) as ca,
            openai.OpenAI(base_url=pb.url + "/v1", api_key=MASTER, max_retries=0) as cb,
        ):

            def ask(client: openai.OpenAI, text: str) -> None:
                client.chat.completions.create(
                    model="qa", messages=[{"role": "user", "content": text}]
                )

            def compared(layer: CacheLayer) -> int:
                return sum(layer.checks.values())

            ask(ca, "explain ocean tides moon please")
            _until(lambda: len(layers[1].cache) >= 1, "B holds the entry A stored")
            words = ["now", "today", "simply", "briefly", "quickly", "clearly", "again", "fully"]
            for i, word in enumerate(words):  # paraphrases on both, each its own answer
                ask(ca if i % 2 else cb, f"explain ocean tides moon {word}")
            _until(lambda: all(compared(layer) >= CAP and not layer._comparing
                               for layer in layers), "both compared CAP times")  # fmt: skip
            # each instance alone would have made CAP calls: together they made CAP
            assert _judge_calls(mock) == CAP
            assert sum(layer.limiters["qa"].calls for layer in layers) == CAP
            assert sum(layer.limiters["qa"].capped for layer in layers) >= CAP
            # the same counts in /metrics, per instance
            scraped = [scrape(srv.url, MASTER) for srv in (pa, pb)]
            calls = [value(m, "routeguard_cache_judge_calls_total", route="qa", result="called")
                     for m in scraped]  # fmt: skip
            capped = [value(m, "routeguard_cache_judge_calls_total", route="qa", result="capped")
                      for m in scraped]  # fmt: skip
            assert calls == [layer.limiters["qa"].calls for layer in layers]
            assert capped == [layer.limiters["qa"].capped for layer in layers]
            assert sum(calls) == CAP
            assert all(value(m, "routeguard_cache_judge_unshared_calls_total", route="qa") == 0
                       for m in scraped)  # fmt: skip
