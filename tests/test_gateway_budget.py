"""Budgets inside the gateway and the proxy: holds before the call, exact settlement after,
refusals before any upstream call, no charge for cache hits or failures, streams settled."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import openai
import pytest

from asgi_request import body_of, post_scope
from embedders import WordsEmbedder
from routeguard.budget.accounts import usd_to_micros
from routeguard.budget.keys import KeySpec
from routeguard.errors import AllAttemptsFailed, BudgetExceeded, PermissionDenied, RateLimited
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.result import ChatResult
from routeguard.server import create_app
from routeguard.server.thread import ServerThread


def _cfg(url: str, **extra: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "m", "model": "sim-m"},
            {**dep, "model_name": "down", "model": "error-500"},
        ],
        "router_settings": {"num_retries": 0},
        "budgets": [
            {"name": "acme", "limit": 1.0},
            {"name": "t1", "parent": "acme", "limit": 0.5, "period": "daily"},
            {"name": "t2", "parent": "acme"},
            {"name": "rl", "rpm": 2},
        ],
        **extra,
    }


MSG = [{"role": "user", "content": "hello budget"}]


def _micros(result: ChatResult) -> int:
    return usd_to_micros(result.cost, round_up=True)


async def test_concurrent_requests_never_overspend(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.budget is not None
    try:
        req = {"model": "m", "messages": MSG, "max_tokens": 30}
        outcomes = await asyncio.gather(
            *(gw.chat_result(dict(req), accounts=["t1"]) for _ in range(60)),
            return_exceptions=True,
        )
        served = [o for o in outcomes if isinstance(o, ChatResult)]
        refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
        assert len(served) + len(refused) == 60 and served and refused
        assert all(r.account in ("t1", "acme") for r in refused)
        assert "budget 't1' exceeded" in refused[0].message or "acme" in refused[0].message
        backend = gw.budget.backend
        spent = await backend.spent("t1")
        assert spent == sum(_micros(r) for r in served)
        assert spent <= usd_to_micros(0.5)
        assert await backend.spent("acme") == spent  # the parent is charged too
        assert await backend.reserved("t1") == 0
    finally:
        await gw.aclose()


async def test_failures_and_cache_hits_cost_nothing(mock: MockServer) -> None:
    cfg = _cfg(mock.url, routes={"m": {"cache": {"enabled": True}}})
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    assert gw.budget is not None
    backend = gw.budget.backend
    try:
        with pytest.raises(AllAttemptsFailed):
            await gw.chat_result(
                {"model": "down", "messages": MSG, "max_tokens": 30}, accounts=["t2"]
            )
        assert await backend.spent("t2") == 0 and await backend.reserved("t2") == 0
        first = await gw.chat_result(
            {"model": "m", "messages": MSG, "max_tokens": 30}, accounts=["t2"]
        )
        after_first = await backend.spent("t2")
        assert after_first == _micros(first) > 0
        hit = await gw.chat_result(
            {"model": "m", "messages": MSG, "max_tokens": 30}, accounts=["t2"]
        )
        assert hit.cache == "hit" and await backend.spent("t2") == after_first
    finally:
        await gw.aclose()


async def test_streams_are_settled_from_usage(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.budget is not None
    try:
        result = await gw.chat_result(
            {"model": "m", "messages": MSG, "stream": True, "max_tokens": 30}, accounts=["t2"]
        )
        assert result.stream is not None
        assert await gw.budget.backend.reserved("t2") > 0  # held while streaming
        chunks = [c async for c in result.stream]
        assert chunks
        assert await gw.budget.backend.reserved("t2") == 0
        assert await gw.budget.backend.spent("t2") == _micros(result) > 0
    finally:
        await gw.aclose()


async def test_rate_limit(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        for _ in range(2):
            await gw.chat_result({"model": "m", "messages": MSG}, accounts=["rl"])
        with pytest.raises(RateLimited) as info:
            await gw.chat_result({"model": "m", "messages": MSG}, accounts=["rl"])
        assert info.value.retry_after is not None and info.value.retry_after > 0
    finally:
        await gw.aclose()


async def test_cache_hits_count_against_the_rate_limit(mock: MockServer) -> None:
    cfg = _cfg(mock.url, routes={"m": {"cache": {"enabled": True}}})
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    try:
        req = {"model": "m", "messages": MSG, "max_tokens": 30}
        first = await gw.chat_result(dict(req), accounts=["rl"])  # a miss: admitted upstream
        hit = await gw.chat_result(dict(req), accounts=["rl"])
        assert first.cache != "hit" and hit.cache == "hit"
        with pytest.raises(RateLimited) as info:  # a third request, even a hit, is refused
            await gw.chat_result(dict(req), accounts=["rl"])
        assert info.value.account == "rl" and info.value.unit == "requests"
        with pytest.raises(RateLimited):  # and so is a miss
            await gw.chat_result({**req, "messages": [{"role": "user", "content": "new"}]},
                                 accounts=["rl"])  # fmt: skip
    finally:
        await gw.aclose()


def test_proxy_charges_the_keys_chain(mock: MockServer) -> None:
    cfg = _cfg(mock.url, server={"master_key": "sk-admin"})
    gw = Gateway.from_config(cfg)
    key, _ = gw.keys.create(KeySpec(team="t1", org="acme"))
    rl_key, _ = gw.keys.create(KeySpec(user="rl"))
    with ServerThread(create_app(gw)) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0) as c:
            with pytest.raises(openai.RateLimitError) as info:
                for _ in range(200):
                    c.chat.completions.create(model="m", messages=MSG, max_tokens=30)  # type: ignore[arg-type]
            body: Any = info.value.body
            assert body["code"] == "budget_exceeded" and "t1" in body["message"]
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=rl_key, max_retries=0) as c:
            with pytest.raises(openai.RateLimitError) as rinfo:
                for _ in range(3):
                    c.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
            assert int(rinfo.value.response.headers["retry-after"]) >= 1
        req = urllib.request.Request(
            srv.url + "/admin/budgets", headers={"authorization": "Bearer sk-admin"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            rows = {row["name"]: row for row in json.loads(r.read())["data"]}
        assert 0 < rows["t1"]["spent"] <= 0.5 and rows["t1"]["limit"] == 0.5
        assert rows["acme"]["spent"] == rows["t1"]["spent"]


async def test_a_deferred_charge_is_made_by_finish(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.budget is not None
    backend = gw.budget.backend
    try:
        req = {"model": "m", "messages": MSG, "max_tokens": 30}
        result = await gw.chat_result(req, accounts=["t1"], defer_settle=True)
        assert result.owed is not None  # the charge, started when the upstream answered
        gw.finish(result)
        assert result.owed is None
        assert await backend.spent("t1") == _micros(result) > 0
        assert await backend.reserved("t1") == 0
        gw.finish(result)  # owed once: a second finish charges nothing
        assert await backend.spent("t1") == _micros(result)
        plain = await gw.chat_result(dict(req), accounts=["t2"])  # not deferred: charged now
        assert plain.owed is None and await backend.spent("t2") == _micros(plain) > 0
    finally:
        await gw.aclose()


async def test_a_deferred_charge_is_made_when_a_later_stage_fails(
    mock: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream answered, so what it cost is charged even when a stage after the call
    (here enforcement) fails the request: the hold is settled, not released."""
    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.budget is not None
    backend = gw.budget.backend
    served: list[ChatResult] = []

    async def refuse(call: Any, result: ChatResult) -> ChatResult:
        served.append(result)
        raise PermissionDenied("refused after the call")

    monkeypatch.setattr(gw, "_enforce", refuse)
    try:
        with pytest.raises(PermissionDenied):
            await gw.chat_result(
                {"model": "m", "messages": MSG, "max_tokens": 30}, accounts=["t1"],
                defer_settle=True,
            )  # fmt: skip
        assert await backend.spent("t1") == _micros(served[0]) > 0
        assert await backend.reserved("t1") == 0
    finally:
        await gw.aclose()


async def test_the_proxy_charges_an_answer_it_could_not_send(mock: MockServer) -> None:
    """The proxy charges an answer once it is written; a write that fails (the client gone)
    still charges it, as the upstream was paid."""
    gw = Gateway.from_config(_cfg(mock.url, server={"master_key": "sk-admin"}))
    assert gw.budget is not None
    key, _ = gw.keys.create(KeySpec(team="t2", org="acme"))
    app = create_app(gw)
    scope = post_scope("/v1/chat/completions", key)
    receive = body_of({"model": "m", "messages": MSG, "max_tokens": 30})
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        else:
            raise ConnectionResetError("the client went away")

    try:
        await app(scope, receive, send)  # a lost client is logged, not raised to the host
        assert statuses == [200]  # the answer was ready; its body never left; no second head
        spent = await gw.budget.backend.spent("t2")
        assert spent > 0 and await gw.budget.backend.spent("acme") == spent
        assert await gw.budget.backend.reserved("t2") == 0
    finally:
        await gw.aclose()
