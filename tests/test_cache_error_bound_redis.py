"""The wrong-hit bound shared by two instances on one real redis-server: the evidence one
instance gathers (traffic per similarity bin, comparisons, shadow checks, feedback) is summed
in Redis and used by the other, so both decide on the same threshold, and both proxies'
``GET /admin/cache/stats`` report the same totals. Counts are never lost or doubled by the
sync (each instance sends what it saw since its last sync, in one transaction with the read).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from embedders import WideWordsEmbedder
from routeguard.cache.bound import COUNTERS
from routeguard.cache.evidence import RedisEvidence
from routeguard.cache.layer import CacheLayer
from routeguard.gateway import Gateway
from routeguard.mock import Meanings, MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-bound-redis"


def _groups() -> list[list[str]]:
    topics = ["ocean tides moon", "python list sort", "bread yeast rise", "mars red planet",
              "violin string tune", "coffee bean roast"]  # fmt: skip
    return [[f"explain {t} {f}" for f in ("please", "now", "today", "simply")] for t in topics]


def _cfg(url: str, redis_url: str, prefix: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k", "model_name": "qa",
           "model": "sim-qa"}  # fmt: skip
    cache = {"enabled": True, "backend": "redis", "redis_url": redis_url, "redis_prefix": prefix,
             "max_error_rate": 0.05}  # fmt: skip
    return {"model_list": [dep], "cache": cache, "server": {"master_key": MASTER}}


def _layer(gw: Gateway) -> CacheLayer:
    assert gw.cache is not None
    return gw.cache


def _evidence(gw: Gateway) -> RedisEvidence:
    ev = _layer(gw).evidence
    assert ev is not None
    return ev


class _ManualEvidence(RedisEvidence):
    """Syncs only when the test says so, so each instance's own counts can be read apart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["interval"] = 3600.0
        super().__init__(*args, **kwargs)


async def test_two_gateways_decide_on_the_sum_of_their_evidence(
    redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a background sync during the traffic would fold b's counts into a's before `alone` is
    # taken (counting them twice there), so the syncs below are the only ones
    monkeypatch.setattr("routeguard.cache.evidence.RedisEvidence", _ManualEvidence)
    prefix = f"eb-{uuid.uuid4().hex[:8]}"
    questions = [q for g in _groups() for q in g]
    with MockServer(meanings=Meanings.from_groups(_groups())) as mock:
        a = Gateway.from_config(_cfg(mock.url, redis_server, prefix), embedder=WideWordsEmbedder())
        b = Gateway.from_config(_cfg(mock.url, redis_server, prefix), embedder=WideWordsEmbedder())
        try:
            await a.start_cache()
            await b.start_cache()
            for i, q in enumerate(questions * 2):
                gw = a if i % 3 else b  # uneven split
                await gw.chat_result({"model": "qa", "messages": [{"role": "user", "content": q}]})
                await asyncio.gather(*_layer(gw)._comparing)
            alone = {
                name: _layer(a).bounds["qa"].evidence.get(name)
                + _layer(b).bounds["qa"].evidence.get(name)
                for name in COUNTERS
            }
            await _evidence(a).sync()
            await _evidence(b).sync()
            await _evidence(a).sync()  # a now reads what b sent
            ev_a = _layer(a).bounds["qa"].evidence
            ev_b = _layer(b).bounds["qa"].evidence
            assert ev_a.values == ev_b.values  # one shared view
            assert ev_a.get("lookups") > 0 and ev_a.get("free") > 0
            for name in COUNTERS:  # nothing lost, nothing counted twice
                assert ev_a.get(name) == alone[name]
            est_a = _layer(a).bounds["qa"].estimate(fresh=True)
            est_b = _layer(b).bounds["qa"].estimate(fresh=True)
            assert est_a == est_b
            # a third instance starting later reads everything at once
            c = Gateway.from_config(
                _cfg(mock.url, redis_server, prefix), embedder=WideWordsEmbedder()
            )
            try:
                await c.start_cache()
                assert _layer(c).bounds["qa"].evidence.values == ev_a.values
            finally:
                await c.aclose()
        finally:
            await a.aclose()
            await b.aclose()


def test_two_proxies_report_the_same_stats(redis_server: str) -> None:
    prefix = f"eb-{uuid.uuid4().hex[:8]}"
    questions = [q for g in _groups() for q in g]
    with MockServer(meanings=Meanings.from_groups(_groups())) as mock:
        gw_a = Gateway.from_config(_cfg(mock.url, redis_server, prefix),
                                   embedder=WideWordsEmbedder())  # fmt: skip
        gw_b = Gateway.from_config(_cfg(mock.url, redis_server, prefix),
                                   embedder=WideWordsEmbedder())  # fmt: skip
        with (
            ServerThread(create_app(gw_a)) as pa,
            ServerThread(create_app(gw_b)) as pb,
            openai.OpenAI(base_url=pa.url + "/v1", api_key=MASTER, max_retries=0) as ca,
            openai.OpenAI(base_url=pb.url + "/v1", api_key=MASTER, max_retries=0) as cb,
            httpx.Client() as http,
        ):
            for i, q in enumerate(questions):
                client = ca if i % 2 else cb
                client.chat.completions.create(
                    model="qa", messages=[{"role": "user", "content": q}]
                )
            auth = {"authorization": f"Bearer {MASTER}"}

            def stats(url: str) -> dict[str, Any]:
                r = http.get(url + "/admin/cache/stats", headers=auth)
                assert r.status_code == 200
                row: dict[str, Any] = r.json()["routes"]["qa"]
                row.pop("checks_here")  # this instance's own comparisons
                return row

            deadline = time.monotonic() + 15
            while True:
                sa, sb = stats(pa.url), stats(pb.url)
                settled = sa["semantic_lookups"] + _exact(gw_a) + _exact(gw_b) >= len(questions)
                if settled and sa == sb:
                    break
                assert time.monotonic() < deadline, f"stats never agreed: {sa} / {sb}"
                time.sleep(0.05)
            assert sa["free_checks"] > 0
            assert sa["semantic_lookups"] == sb["semantic_lookups"] > 0


def _exact(gw: Gateway) -> int:
    return _layer(gw).metrics.exact_hits
