"""``DELETE /admin/cache`` and ``POST /admin/cache/correct`` through the real proxy: the
official openai SDK asks, the admin API (master key, plain HTTP) deletes and corrects, and
the next request shows it. In memory and with two proxies on one real redis-server, where
the change made on one is seen on the other once it has caught up with the stream (awaited
through the store, never a sleep). Tenants are the keys' teams: ``team:/a``, ``team:/b``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from conftest import RedisProcess
from embedders import WordsEmbedder
from routeguard.budget.keys import KeySpec
from routeguard.cache.layer import CacheLayer
from routeguard.cache.redis_store import RedisStore
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-cache-admin"
Q = "what is the capital of france"
PARA = "the capital of france, what is it"
CORRECT = "/admin/cache/correct"


def _cfg(upstream: str, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": upstream + "/v1", "api_key": "k"}
    return {
        "model_list": [
            {**dep, "model_name": "cached", "model": "sim-cached"},
            {**dep, "model_name": "other", "model": "sim-other"},
        ],
        "server": {"master_key": MASTER},
        "cache": {"enabled": True, "threshold": 0.8, **(cache or {})},
    }


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``check`` until it holds (fails past ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.01)


def _layer(gw: Gateway) -> CacheLayer:
    assert gw.cache is not None
    return gw.cache


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _ask(client: openai.OpenAI, text: str, model: str = "cached") -> tuple[str, str]:
    """(x-routeguard-cache, the answer) of one chat request."""
    msgs: Any = [{"role": "user", "content": text}]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=msgs)
    return raw.headers["x-routeguard-cache"], raw.parse().choices[0].message.content or ""


def _streamed(client: openai.OpenAI, text: str) -> str:
    msgs: Any = [{"role": "user", "content": text}]
    chunks = client.chat.completions.create(model="cached", messages=msgs, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"authorization": f"Bearer {MASTER}"}, timeout=30)


def _error(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    return err


# --------------------------------------------------------------------------- memory


def test_delete_and_correct_through_the_proxy(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    token_a, _ = gw.keys.create(KeySpec(team="a"))
    token_b, _ = gw.keys.create(KeySpec(team="b"))
    with (
        ServerThread(create_app(gw)) as proxy,
        _client(proxy.url, token_a) as a,
        _client(proxy.url, token_b) as b,
        _admin(proxy.url) as admin,
    ):
        for client in (a, b):  # put, then hit, in each tenant
            assert _ask(client, Q)[0] == "miss"
            assert _ask(client, Q)[0] == "hit"
        answer_b = _ask(b, Q)[1]

        # delete tenant a's entries (query parameters): a misses, b still hits
        resp = admin.delete("/admin/cache", params={"tenant": "team:/a"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["deleted"] == 1 and body["backend"] == "memory"
        assert body["filters"] == {"tenant": "team:/a"}
        assert _ask(b, Q) == ("hit", answer_b)
        assert _ask(a, Q)[0] == "miss"
        assert _ask(a, Q)[0] == "hit"  # stored again

        # delete by route + exact prompt (JSON body), normalised as lookups are
        resp = admin.request(
            "DELETE", "/admin/cache", json={"route": "cached", "prompt": Q.upper()}
        )
        assert resp.status_code == 200 and resp.json()["deleted"] == 2
        assert _ask(a, Q)[0] == "miss" and _ask(b, Q)[0] == "miss"

        # correct tenant b's answer: the next hit (exact, semantic, streamed) is the new one
        resp = admin.post(
            "/admin/cache/correct",
            json={"tenant": "team:/b", "route": "cached", "prompt": f"  {Q} ", "content": "Paris."},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["replaced"] == 1 and resp.json()["object"] == "cache.correction"
        assert _ask(b, Q) == ("hit", "Paris.")
        assert _ask(b, PARA) == ("hit", "Paris.")
        assert _streamed(b, Q) == "Paris."
        hit_a = _ask(a, Q)
        assert hit_a[0] == "hit" and hit_a[1] != "Paris."  # tenant a keeps its own answer

        # everything, explicitly
        resp = admin.delete("/admin/cache", params={"all": "true"})
        assert resp.status_code == 200 and resp.json()["deleted"] == 2
        assert resp.json()["filters"] == {"all": True}
        assert len(_layer(gw).cache) == 0


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "param", "words"),
    [
        ("DELETE", "/admin/cache", {}, 400, "all", "all: true"),
        ("DELETE", "/admin/cache", {"params": {"all": "maybe"}}, 400, "all", "true or false"),
        ("DELETE", "/admin/cache", {"json": {"all": True, "route": "cached"}}, 400, "all", "route"),
        ("DELETE", "/admin/cache", {"params": {"team": "a"}}, 400, "team", "not a cache filter"),
        ("DELETE", "/admin/cache", {"json": {"route": "nope"}}, 400, "route", "'nope'"),
        ("DELETE", "/admin/cache", {"json": {"tenant": ""}}, 400, "tenant", "non-empty"),
        ("DELETE", "/admin/cache", {"json": {"prompt": 3}}, 400, "prompt", "string"),
        (
            "DELETE",
            "/admin/cache",
            {"params": {"route": "cached"}, "json": {"tenant": "x"}},
            400,
            None,
            "not both",
        ),
        ("DELETE", "/admin/cache?route=cached&route=other", {}, 400, "route", "2 times"),
        (
            "POST",
            "/admin/cache/correct",
            {"json": {"prompt": Q, "tenant": "t"}},
            400,
            "content",
            "",
        ),
        (
            "POST",
            "/admin/cache/correct",
            {"json": {"content": "x", "tenant": "t"}},
            400,
            "prompt",
            "",
        ),
        (
            "POST",
            "/admin/cache/correct",
            {"json": {"prompt": Q, "content": "x"}},
            400,
            "tenant",
            "",
        ),
        (
            "POST",
            "/admin/cache/correct",
            {"json": {"prompt": "never asked", "content": "x", "tenant": "team:/a"}},
            404,
            "prompt",
            "nothing to correct",
        ),
        ("GET", "/admin/cache", {}, 405, None, "accepts DELETE"),
        ("DELETE", "/admin/cache/correct", {}, 405, None, "accepts POST"),
    ],
)
def test_bad_admin_requests_get_openai_style_errors(
    mock: MockServer,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    param: str | None,
    words: str,
) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    with ServerThread(create_app(gw)) as proxy, _admin(proxy.url) as admin:
        resp = admin.request(method, path, **kwargs)
        assert resp.status_code == status, resp.text
        err = _error(resp)
        assert err["param"] == param and words in err["message"]


def test_only_the_master_key_may_change_the_cache(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    token, _ = gw.keys.create(KeySpec(team="a"))
    with ServerThread(create_app(gw)) as proxy, _client(proxy.url, token) as client:
        assert _ask(client, Q)[0] == "miss"
        for key in (token, "sk-wrong"):
            with httpx.Client(base_url=proxy.url, headers={"authorization": f"Bearer {key}"}) as h:
                resp = h.delete("/admin/cache", params={"all": "true"})
                assert resp.status_code in (401, 403) and "error" in resp.json()
                resp = h.post("/admin/cache/correct", json={"prompt": Q, "content": "x"})
                assert resp.status_code in (401, 403)
        assert _ask(client, Q)[0] == "hit"  # untouched


def test_a_proxy_without_a_cache_says_so(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url, {"enabled": False}), embedder=WordsEmbedder())
    with ServerThread(create_app(gw)) as proxy, _admin(proxy.url) as admin:
        resp = admin.delete("/admin/cache", params={"all": "true"})
        assert resp.status_code == 400 and "cache.enabled" in _error(resp)["message"]


# --------------------------------------------------------------------------- two proxies


def _store(gw: Gateway) -> RedisStore:
    store = _layer(gw).cache.store
    assert isinstance(store, RedisStore)
    return store


def _on_its_loop(gw: Gateway, what: str) -> None:
    """Run the store's ``flush`` or ``caught_up`` on the loop of the proxy that owns it."""
    store = _store(gw)
    assert store._loop is not None
    asyncio.run_coroutine_threadsafe(getattr(store, what)(), store._loop).result(30)


def _sync(writer: Gateway, reader: Gateway) -> None:
    """Wait until ``writer``'s writes are in Redis and ``reader`` has applied the stream."""
    _on_its_loop(writer, "flush")
    _on_its_loop(reader, "caught_up")


def test_two_proxies_on_redis_see_each_others_deletes_and_corrections(
    mock: MockServer, redis_server: str
) -> None:
    cache = {"backend": "redis", "redis_url": redis_server, "redis_prefix": uuid.uuid4().hex}
    gw1 = Gateway.from_config(_cfg(mock.url, cache), embedder=WordsEmbedder())
    gw2 = Gateway.from_config(_cfg(mock.url, cache), embedder=WordsEmbedder())
    # Each proxy keeps its own keys; the same team is the same tenant on both.
    a1, _ = gw1.keys.create(KeySpec(team="a"))
    a2, _ = gw2.keys.create(KeySpec(team="a"))
    b2, _ = gw2.keys.create(KeySpec(team="b"))
    with (
        ServerThread(create_app(gw1)) as p1,
        ServerThread(create_app(gw2)) as p2,
        _client(p1.url, a1) as on1,
        _client(p2.url, a2) as on2,
        _client(p2.url, b2) as b_on2,
        _admin(p1.url) as admin1,
        _admin(p2.url) as admin2,
    ):
        assert _ask(on1, Q)[0] == "miss"
        assert _ask(b_on2, Q)[0] == "miss"
        _sync(gw1, gw2)
        _sync(gw2, gw1)
        original = _ask(on2, Q)
        assert original[0] == "hit"

        # delete tenant a + prompt on proxy 1: proxy 2 misses once caught up; b keeps its entry
        resp = admin1.request("DELETE", "/admin/cache", json={"tenant": "team:/a", "prompt": Q})
        assert resp.status_code == 200 and resp.json()["deleted"] == 1
        assert resp.json()["backend"] == "redis" and "stream" in resp.json()["note"]
        _on_its_loop(gw2, "caught_up")
        assert _ask(on2, Q)[0] == "miss"  # and stored again, from proxy 2
        assert _ask(b_on2, Q)[0] == "hit"
        _sync(gw2, gw1)

        # correct on proxy 2: proxy 1's next hit is the corrected answer
        resp = admin2.post(
            "/admin/cache/correct", json={"tenant": "team:/a", "prompt": Q, "content": "Paris."}
        )
        assert resp.status_code == 200 and resp.json()["replaced"] == 1
        _on_its_loop(gw1, "caught_up")
        assert _ask(on1, Q) == ("hit", "Paris.")
        assert _ask(on1, PARA) == ("hit", "Paris.")
        assert _ask(on2, Q) == ("hit", "Paris.")
        assert _ask(b_on2, Q) == ("hit", original[1])  # tenant b untouched

        # everything, from proxy 2: both empty
        resp = admin2.delete("/admin/cache", params={"all": "1"})
        assert resp.status_code == 200 and resp.json()["deleted"] == 2
        _on_its_loop(gw1, "caught_up")
        assert len(_layer(gw1).cache) == 0 and len(_layer(gw2).cache) == 0
        assert _ask(on1, Q)[0] == "miss"


def test_redis_down_is_a_503_that_changes_nothing(
    mock: MockServer, redis_process: RedisProcess
) -> None:
    cache = {"backend": "redis", "redis_url": redis_process.url, "redis_prefix": "down"}
    gw = Gateway.from_config(_cfg(mock.url, cache), embedder=WordsEmbedder())
    with (
        ServerThread(create_app(gw)) as proxy,
        _client(proxy.url, MASTER) as client,
        _admin(proxy.url) as admin,
    ):
        assert _ask(client, Q)[0] == "miss"
        _on_its_loop(gw, "flush")
        redis_process.stop()
        wait_until(lambda: not _layer(gw).ready)
        resp = admin.delete("/admin/cache", params={"all": "true"})
        assert resp.status_code == 503 and _error(resp)["code"] == "cache_unavailable"
        resp = admin.post(CORRECT, json={"tenant": "default", "prompt": Q, "content": "x"})
        assert resp.status_code == 503 and "nothing was changed" in _error(resp)["message"]
        assert len(_layer(gw).cache) == 1  # still here
        redis_process.start()  # empty: persistence is off
        wait_until(lambda: _layer(gw).ready)
        resp = admin.delete("/admin/cache", params={"all": "true"})
        assert resp.status_code == 200 and resp.json()["deleted"] == 0  # reloaded: empty
