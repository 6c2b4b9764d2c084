"""Feedback on a cache hit counts wherever it arrives: with ``cache.backend: redis`` the hits
one proxy serves are shared through a real redis-server, so ``POST /v1/feedback`` on another
proxy finds the hit, counts it in the route's wrong-hit bound (whose sums both proxies
report) and drops the entry on every instance."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from embedders import WideWordsEmbedder
from routeguard.cache.served import RedisServed
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from scrapes import scrape, value

MASTER = "sk-master-served-redis"
QUESTION = "explain ocean tides moon please"
DELAY = 0.5  # seconds A's served-hit record writes are held up in the race test


def _cfg(url: str, redis_url: str, prefix: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k", "model_name": "qa",
           "model": "sim-qa"}  # fmt: skip
    cache = {"enabled": True, "backend": "redis", "redis_url": redis_url, "redis_prefix": prefix,
             "max_error_rate": 0.05}  # fmt: skip
    return {"model_list": [dep], "cache": cache, "server": {"master_key": MASTER}}


def _until(check: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def test_feedback_on_another_instance_counts_and_drops_the_entry(redis_server: str) -> None:
    prefix = f"sv-{uuid.uuid4().hex[:8]}"
    with MockServer() as mock:
        gws = [Gateway.from_config(_cfg(mock.url, redis_server, prefix),
                                   embedder=WideWordsEmbedder()) for _ in range(2)]  # fmt: skip
        with (
            ServerThread(create_app(gws[0])) as pa,
            ServerThread(create_app(gws[1])) as pb,
            openai.OpenAI(base_url=pa.url + "/v1", api_key=MASTER, max_retries=0) as ca,
            httpx.Client(headers={"authorization": f"Bearer {MASTER}"}) as http,
        ):

            def ask() -> tuple[str, str]:
                raw = ca.chat.completions.with_raw_response.create(
                    model="qa", messages=[{"role": "user", "content": QUESTION}]
                )
                return raw.headers["x-routeguard-cache"], raw.headers["x-routeguard-request-id"]

            assert ask()[0] == "miss"
            state, rid = ask()
            assert state == "hit"  # served by A from its cache

            unknown = http.post(pb.url + "/v1/feedback",
                                json={"request_id": "req_never", "rating": "down"})  # fmt: skip
            assert unknown.status_code == 404

            answers: list[httpx.Response] = []

            def rated_on_b() -> bool:
                r = http.post(pb.url + "/v1/feedback", json={"request_id": rid, "rating": "down"})
                answers.append(r)
                return r.status_code == 200

            _until(rated_on_b, "B knows the hit A served")
            assert all(r.status_code == 404 for r in answers[:-1])  # only until A's write lands
            assert answers[-1].json()["recorded"] is True

            def wrong(url: str) -> int:
                r = http.get(url + "/admin/cache/stats")
                assert r.status_code == 200
                return int(r.json()["routes"]["qa"]["feedback_wrong"])

            # counted once, in the shared evidence both instances report
            _until(lambda: wrong(pa.url) == 1 and wrong(pb.url) == 1, "both report it")
            # and the entry marked wrong is gone on A too: the question goes upstream again
            _until(lambda: ask()[0] == "miss", "A dropped the entry B was told is wrong")
            time.sleep(1.2)  # two evidence syncs later, still counted once
            assert wrong(pa.url) == wrong(pb.url) == 1


def test_feedback_sent_the_moment_a_hit_arrives_counts_on_another_instance(
    redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The served-hit record is in Redis before the client learns the request id: made
    deterministic by delaying A's record writes (DELAY s) well past the feedback's round
    trip, so a record written after the answer (the race) would be missed by B."""
    prefix = f"sv-{uuid.uuid4().hex[:8]}"
    with MockServer() as mock:
        gws = [Gateway.from_config(_cfg(mock.url, redis_server, prefix),
                                   embedder=WideWordsEmbedder()) for _ in range(2)]  # fmt: skip
        shared = gws[0].cache.served if gws[0].cache is not None else None
        assert shared is not None
        real_set = shared.redis.set

        async def slow_set(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(DELAY)  # a slow network between A and Redis
            return await real_set(*args, **kwargs)

        monkeypatch.setattr(shared.redis, "set", slow_set)
        shared.wait = 4 * DELAY  # this hit may wait for its record (the default is shorter)
        with (
            ServerThread(create_app(gws[0])) as pa,
            ServerThread(create_app(gws[1])) as pb,
            openai.OpenAI(base_url=pa.url + "/v1", api_key=MASTER, max_retries=0) as ca,
            httpx.Client(headers={"authorization": f"Bearer {MASTER}"}) as http,
        ):
            for expected in ("miss", "hit"):
                raw = ca.chat.completions.with_raw_response.create(
                    model="qa", messages=[{"role": "user", "content": QUESTION}]
                )
                assert raw.headers["x-routeguard-cache"] == expected
            rid = raw.headers["x-routeguard-request-id"]
            # at once, on B (no retry, no sleep): B must already know the hit
            r = http.post(pb.url + "/v1/feedback", json={"request_id": rid, "rating": "down"})
            assert r.status_code == 200, r.text
            assert r.json()["recorded"] is True
            stats = http.get(pa.url + "/admin/cache/stats").json()["served_records"]
            assert (stats["written"], stats["late"], stats["unwaited"]) == (1, 0, 0)
            events = scrape(pa.url, MASTER)  # the same counters in /metrics
            for event in ("written", "failed", "late", "unwaited"):
                assert value(events, "routeguard_cache_served_record_events_total",
                             event=event) == stats[event], event  # fmt: skip


async def test_a_slow_or_unreachable_redis_never_holds_hits_for_long(redis_server: str) -> None:
    """A write later than ``wait`` answers the hit anyway (``late``) and later hits stop
    waiting (``unwaited``) until a write comes back in time; an unreachable Redis never
    raises into the hit."""
    served = RedisServed(redis_server, prefix=f"sv-{uuid.uuid4().hex[:8]}", wait=0.05)
    gate = asyncio.Event()
    real_set = served.redis.set

    async def held_set(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await real_set(*args, **kwargs)

    served.redis.set = held_set  # type: ignore[method-assign]
    try:
        assert await served.durable("req_1", {"route": "qa"}) is False  # the wait ran out
        assert await served.durable("req_2", {"route": "qa"}) is False  # did not wait
        assert served.stats() == {"written": 0, "failed": 0, "late": 1, "unwaited": 1,
                                  "pending": 2}  # fmt: skip
        await asyncio.sleep(2 * served.wait)  # both writes now took longer than the wait
        gate.set()
        await served.flush()  # the late writes still land: those hits stay rateable anywhere
        assert served.written == 2 and await served.recall("req_1") == {"route": "qa"}
        served.redis.set = real_set  # type: ignore[method-assign]
        # late writes do not make hits wait again; one back in time does
        assert await served.durable("req_3", {"route": "qa"}) is False
        await served.flush()
        assert await served.durable("req_4", {"route": "qa"}) is True
        assert served.stats()["unwaited"] == 2 and served.written == 4
    finally:
        await served.aclose()

    down = RedisServed("redis://127.0.0.1:9/0", wait=0.05)  # nothing listens there
    try:
        assert await down.durable("req_1", {"route": "qa"}) is False
        assert await down.durable("req_2", {"route": "qa"}) is False
        await down.flush()
        assert down.failures == 2 and down.written == 0
        assert down.late + down.unwaited == 2
    finally:
        await down.aclose()
