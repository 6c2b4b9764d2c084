"""Who may be served whose cached answer: tenants whose names contain "/" stay apart, and
``cache.scope`` (team | key | user, per route) narrows sharing inside a tenant, on the
memory and on the Redis backend (a real redis-server, two gateways sharing one prefix)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import openai
import pytest

from embedders import WordsEmbedder
from routeguard.budget.keys import KeyRecord, KeySpec
from routeguard.cache.keys import request_namespace
from routeguard.cache.redis_store import RedisStore
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.auth import Principal
from routeguard.server.thread import ServerThread

QUESTION = "what is the refund policy for annual plans"


def _cfg(url: str, cache: dict[str, Any]) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    return {
        "model_list": [{**dep, "model_name": n, "model": "sim-" + n}
                       for n in ("team", "key", "user")],
        "cache": {"enabled": True, "threshold": 0.8, **cache},
        "routes": {"key": {"cache": {"scope": "key"}}, "user": {"cache": {"scope": "user"}}},
    }  # fmt: skip


def _key(key_id: str, org: str | None = None, team: str | None = None) -> KeyRecord:
    spec = KeySpec(org=org, team=team)
    return KeyRecord(key_id=key_id, digest="-", last4="----", created_at=0.0, spec=spec)


def _req(alias: str, user: str | None = None, text: str = QUESTION) -> dict[str, Any]:
    req: dict[str, Any] = {"model": alias, "messages": [{"role": "user", "content": text}]}
    if user is not None:
        req["user"] = user
    return req


class Pair:
    """A writer and a reader gateway: one gateway in memory mode, two on one Redis prefix."""

    def __init__(self, writer: Gateway, reader: Gateway) -> None:
        self.writer, self.reader = writer, reader

    async def ask(self, gw: Gateway, req: dict[str, Any], key: KeyRecord) -> str:
        """The cache outcome of ``req`` sent with ``key``, as the proxy would send it."""
        tenant = Principal("key", key).tenant
        result = await gw.chat_result(req, tenant=tenant, key=key)
        return result.cache

    async def write(self, req: dict[str, Any], key: KeyRecord) -> None:
        """Ask on the writer (a miss, stored) and wait until the reader has the entry."""
        assert await self.ask(self.writer, req, key) == "miss"
        if self.writer is not self.reader:
            for gw in (self.writer, self.reader):
                assert gw.cache is not None
            ws, rs = self.writer.cache.cache.store, self.reader.cache.cache.store  # type: ignore[union-attr]
            assert isinstance(ws, RedisStore) and isinstance(rs, RedisStore)
            await ws.flush()
            await rs.caught_up()

    async def read(self, req: dict[str, Any], key: KeyRecord) -> str:
        """Ask on the reader."""
        return await self.ask(self.reader, req, key)


@asynccontextmanager
async def _pair(
    backend: str, mock: MockServer, redis_url: str, scoped: bool
) -> AsyncIterator[Pair]:
    async with AsyncExitStack() as stack:

        def make(cache: dict[str, Any]) -> Gateway:
            cfg = _cfg(mock.url, cache)
            if not scoped:  # no route sets a scope
                del cfg["routes"]
            gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
            stack.push_async_callback(gw.aclose)
            return gw

        if backend == "memory":
            gw = make({})
            yield Pair(gw, gw)
            return
        prefix = f"ten-{uuid.uuid4().hex[:8]}"
        cache = {"backend": "redis", "redis_url": redis_url, "redis_prefix": prefix}
        writer, reader = make(cache), make(cache)
        for gw in (writer, reader):
            await gw.start_cache()
        yield Pair(writer, reader)


@pytest.fixture(params=["memory", "redis"])
async def pair(
    request: pytest.FixtureRequest, mock: MockServer, redis_server: str
) -> AsyncIterator[Pair]:
    """Gateways whose routes 'key' and 'user' set ``cache.scope`` ('team' keeps the default)."""
    async with _pair(request.param, mock, redis_server, scoped=True) as p:
        yield p


@pytest.fixture(params=["memory", "redis"])
async def plain_pair(
    request: pytest.FixtureRequest, mock: MockServer, redis_server: str
) -> AsyncIterator[Pair]:
    """Gateways with the default scope everywhere."""
    async with _pair(request.param, mock, redis_server, scoped=False) as p:
        yield p


# --------------------------------------------------------------------------- tenants


def test_tenant_names_encode_every_component() -> None:
    pairs = [
        (_key("k1", "x/y", "z"), _key("k2", "x", "y/z")),
        (_key("k1", "-", "a"), _key("k2", None, "a")),
        (_key("k1", "a", None), _key("k2", "a", "-")),
        (_key("team:a/b"), _key("k2", "a", "b")),  # a key id that reads like a team
    ]
    for a, b in pairs:
        assert Principal("key", a).tenant != Principal("key", b).tenant, (a.spec, b.spec)
    assert (
        Principal("key", _key("k1", "acme", "ml")).tenant
        == Principal("key", _key("k2", "acme", "ml")).tenant
    )
    req = _req("team")
    assert request_namespace("a/b", "c", req) != request_namespace("a", "b/c", req)
    assert request_namespace("t", "r", req, ("key:a/b",)) != request_namespace(
        "t", "key:a", req, ("b/r",)
    )


async def test_slashes_in_org_and_team_do_not_share_a_partition(plain_pair: Pair) -> None:
    pair = plain_pair
    owner, other = _key("k1", "x/y", "z"), _key("k2", "x", "y/z")
    await pair.write(_req("team"), owner)
    assert await pair.read(_req("team"), other) == "miss"
    assert await pair.read(_req("team"), owner) == "hit"
    teammate = _key("k3", "x/y", "z")  # same org and team: the default scope shares
    assert await pair.read(_req("team"), teammate) == "hit"


# --------------------------------------------------------------------------- scopes


def test_scope_parts() -> None:
    from routeguard.cache.keys import scope_parts

    assert scope_parts("team", "k1", "bob") == ()
    assert scope_parts("key", "k1", "bob") == ("key:k1",)
    assert scope_parts("user", "k1", "bob") != scope_parts("user", "k1", None)
    assert scope_parts("user", "k1", "null") != scope_parts("user", "k1", None)


async def test_team_scope_shares_between_keys_and_users(pair: Pair) -> None:
    a, a2 = _key("ka", "acme", "ml"), _key("ka2", "acme", "ml")
    await pair.write(_req("team", user="alice"), a)
    assert await pair.read(_req("team", user="bob"), a2) == "hit"


async def test_key_scope_keeps_each_key_apart(pair: Pair) -> None:
    a, a2, a3 = (_key(k, "acme", "ml") for k in ("ka", "ka2", "ka3"))
    await pair.write(_req("key", user="alice"), a)
    para = _req("key", text="the refund policy for annual plans, what is it")
    assert await pair.read(para, a3) == "miss"  # the semantic tier is partitioned too
    assert await pair.read(para, a) == "hit"
    assert await pair.read(_req("key", user="alice"), a2) == "miss"
    assert await pair.read(_req("key", user="bob"), a) == "hit"  # same key, any user


async def test_user_scope_keeps_each_user_apart(pair: Pair) -> None:
    a, a2 = _key("ka", "acme", "ml"), _key("ka2", "acme", "ml")
    await pair.write(_req("user", user="alice"), a)
    assert await pair.read(_req("user", user="bob"), a) == "miss"
    assert await pair.read(_req("user"), a) == "miss"  # no user is not any user
    assert await pair.read(_req("user", user="alice"), a2) == "miss"  # another key
    assert await pair.read(_req("user", user="alice"), a) == "hit"


def test_scope_is_validated_and_per_route(mock: MockServer) -> None:
    from routeguard.config import load
    from routeguard.errors import ConfigError

    cfg = load(_cfg(mock.url, {"scope": "key"}))
    assert cfg.cache_for("team").scope == "key" and cfg.cache_for("user").scope == "user"
    assert load(_cfg(mock.url, {})).cache_for("team").scope == "team"
    with pytest.raises(ConfigError) as info:
        load(_cfg(mock.url, {"scope": "org"}))
    assert any(p.path == "cache.scope" for p in info.value.problems)


# --------------------------------------------------------------------------- the proxy


def test_proxy_keeps_tenants_and_keys_apart(mock: MockServer) -> None:
    """Through the proxy with the openai SDK: virtual keys whose org/team differ only in
    where the "/" falls miss each other's entries; a key-scoped route keeps teammates apart."""
    gw = Gateway.from_config(
        {**_cfg(mock.url, {}), "server": {"master_key": "sk-master-test"}}, embedder=WordsEmbedder()
    )
    tokens = {
        name: gw.keys.create(KeySpec(org=org, team=team))[0]
        for name, org, team in [("xy_z", "x/y", "z"), ("x_yz", "x", "y/z"), ("xy_z2", "x/y", "z")]
    }
    msgs: Any = [{"role": "user", "content": QUESTION}]
    with ServerThread(create_app(gw)) as srv:

        def outcome(name: str, model: str) -> str:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key=tokens[name], max_retries=0)
            with client:
                raw = client.chat.completions.with_raw_response.create(model=model, messages=msgs)
            return raw.headers["x-routeguard-cache"]

        assert outcome("xy_z", "team") == "miss"
        assert outcome("x_yz", "team") == "miss"
        assert outcome("xy_z2", "team") == "hit"
        assert outcome("xy_z", "key") == "miss"
        assert outcome("xy_z2", "key") == "miss"
        assert outcome("xy_z", "key") == "hit"
