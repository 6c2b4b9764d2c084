"""Feedback on a cache hit counts wherever it arrives: with ``cache.backend: redis`` the hits
one proxy serves are shared through a real redis-server, so ``POST /v1/feedback`` on another
proxy finds the hit, counts it in the route's wrong-hit bound (whose sums both proxies
report) and drops the entry on every instance."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai

from embedders import WideWordsEmbedder
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-served-redis"
QUESTION = "explain ocean tides moon please"


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
