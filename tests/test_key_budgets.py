"""A virtual key's own limits: ``max_budget``, ``rpm`` and ``tpm`` on the key are enforced
(in-process and through Redis), under the key's user/team/org budgets, and follow updates."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import openai
import pytest

from priced import micros, priced_config
from routeguard.budget.accounts import usd_to_micros
from routeguard.budget.keys import KeySpec
from routeguard.errors import BudgetExceeded, InvalidRequest, RateLimited
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.result import ChatResult
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MSG = [{"role": "user", "content": "hello key budget"}]


async def _burst(gw: Gateway, key: Any, n: int) -> tuple[list[ChatResult], list[BaseException]]:
    req = {"model": "m", "messages": MSG, "max_tokens": 20}
    outcomes = await asyncio.gather(
        *(gw.chat_result(dict(req), key=key) for _ in range(n)), return_exceptions=True
    )
    served = [o for o in outcomes if isinstance(o, ChatResult)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return served, errors


async def test_max_budget_on_a_key_without_any_configured_budget(mock: MockServer) -> None:
    gw = Gateway.from_config(priced_config(mock.url))
    try:
        _, rec = gw.keys.create(KeySpec(max_budget=0.3))
        served, errors = await _burst(gw, rec, 40)
        assert served and errors
        assert all(isinstance(e, BudgetExceeded) and e.account == rec.key_id for e in errors)
        assert gw.budget is not None
        spent = await gw.budget.backend.spent(rec.key_id)
        assert spent == sum(micros(r) for r in served) <= usd_to_micros(0.3)
        assert await gw.budget.backend.reserved(rec.key_id) == 0
        # Another key is not affected by this key's budget.
        _, other = gw.keys.create(KeySpec(max_budget=10.0))
        ok, failed = await _burst(gw, other, 3)
        assert len(ok) == 3 and not failed
    finally:
        await gw.aclose()


async def test_key_budget_sits_under_its_team_budget(mock: MockServer) -> None:
    budgets = [{"name": "acme", "limit": 5.0}, {"name": "t1", "parent": "acme", "limit": 0.2}]
    cfg = priced_config(mock.url, budgets=budgets)
    gw = Gateway.from_config(cfg)
    try:
        # The key alone would allow $1, but its team allows only $0.20: the team refuses.
        _, rec = gw.keys.create(KeySpec(team="t1", org="acme", max_budget=1.0))
        served, errors = await _burst(gw, rec, 40)
        assert served and errors
        assert {e.account for e in errors if isinstance(e, BudgetExceeded)} == {"t1"}
        assert gw.budget is not None
        backend = gw.budget.backend
        spent = await backend.spent(rec.key_id)
        assert spent == await backend.spent("t1") == await backend.spent("acme")
        assert spent <= usd_to_micros(0.2)
    finally:
        await gw.aclose()


async def test_key_rpm_and_updates_take_effect(mock: MockServer) -> None:
    gw = Gateway.from_config(priced_config(mock.url))
    try:
        _, rec = gw.keys.create(KeySpec(rpm=2))
        req = {"model": "m", "messages": MSG}
        for _ in range(2):
            await gw.chat_result(dict(req), key=rec)
        with pytest.raises(RateLimited) as info:
            await gw.chat_result(dict(req), key=rec)
        assert info.value.account == rec.key_id
        # Raising the limit lets the key through at once.
        rec = gw.keys.update(rec.key_id, {"rpm": 100})
        await gw.chat_result(dict(req), key=rec)
        # A budget of $0 set later refuses the next request up front.
        rec = gw.keys.update(rec.key_id, {"max_budget": 0.0})
        with pytest.raises(BudgetExceeded):
            await gw.chat_result(dict(req), key=rec)
    finally:
        await gw.aclose()


def test_bad_budget_period_is_refused_at_creation(mock: MockServer) -> None:
    gw = Gateway.from_config(priced_config(mock.url))
    with pytest.raises(InvalidRequest, match="budget_period"):
        gw.keys.create(KeySpec(max_budget=1.0, budget_period="fortnightly"))


def test_proxy_enforces_and_reports_a_keys_budget(mock: MockServer) -> None:
    gw = Gateway.from_config(priced_config(mock.url, server={"master_key": "sk-admin"}))
    with ServerThread(create_app(gw)) as srv:
        body = json.dumps({"max_budget": 0.5, "budget_period": "daily"}).encode()
        req = urllib.request.Request(
            srv.url + "/admin/keys",
            data=body,
            method="POST",
            headers={"authorization": "Bearer sk-admin", "content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            made = json.loads(r.read())
        assert made["spend"] == 0.0
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key=made["key"], max_retries=0)
        with client as c, pytest.raises(openai.RateLimitError) as info:
            for _ in range(200):
                c.chat.completions.create(model="m", messages=MSG, max_tokens=20)  # type: ignore[arg-type]
        err: Any = info.value.body
        assert err["code"] == "budget_exceeded" and made["key_id"] in err["message"]
        get = urllib.request.Request(
            srv.url + f"/admin/keys/{made['key_id']}",
            headers={"authorization": "Bearer sk-admin"},
        )
        with urllib.request.urlopen(get, timeout=5) as r:
            shown = json.loads(r.read())
        assert 0 < shown["spend"] <= 0.5 and shown["reserved"] == 0.0


async def test_key_budget_is_shared_through_redis(mock: MockServer, redis_server: str) -> None:
    settings = {"backend": "redis", "redis_url": redis_server}
    cfg = priced_config(mock.url, budget_settings=settings, server={"key_hash_secret": "s3cret"})
    a, b = Gateway.from_config(cfg), Gateway.from_config(cfg)
    try:
        _, rec = a.keys.create(KeySpec(max_budget=0.25))
        outcomes = await asyncio.gather(
            _burst(a, rec, 30), _burst(b, rec, 30)
        )  # the same key used on two instances
        served = [r for ok, _ in outcomes for r in ok]
        errors = [e for _, bad in outcomes for e in bad]
        assert served and errors and all(isinstance(e, BudgetExceeded) for e in errors)
        assert a.budget is not None and b.budget is not None
        spent = await a.budget.backend.spent(rec.key_id)
        assert spent == await b.budget.backend.spent(rec.key_id)
        assert spent == sum(micros(r) for r in served) <= usd_to_micros(0.25)
    finally:
        await a.aclose()
        await b.aclose()


async def test_end_users_get_their_own_budget_under_the_key(mock: MockServer) -> None:
    cfg = priced_config(mock.url, budget_settings={"end_user": {"limit": 0.2, "rpm": 1000}})
    gw = Gateway.from_config(cfg)
    try:
        _, rec = gw.keys.create(KeySpec(max_budget=5.0))
        _, other_key = gw.keys.create(KeySpec(max_budget=5.0))
        req = {"model": "m", "messages": MSG, "max_tokens": 20}
        served = 0
        with pytest.raises(BudgetExceeded) as info:
            for _ in range(100):
                await gw.chat_result({**req, "user": "alice"}, key=rec)
                served += 1
        assert served > 0 and info.value.account == f"eu.{rec.key_id}.alice"
        # Bob, and an "alice" of another key, are untouched by alice's budget.
        await gw.chat_result({**req, "user": "bob"}, key=rec)
        await gw.chat_result({**req, "user": "alice"}, key=other_key)
        assert gw.budget is not None
        backend = gw.budget.backend
        alice = await backend.spent(f"eu.{rec.key_id}.alice")
        bob = await backend.spent(f"eu.{rec.key_id}.bob")
        assert 0 < alice <= usd_to_micros(0.2) and bob > 0
        assert await backend.spent(rec.key_id) == alice + bob  # the key pays for both
        # An end-user id that cannot be an account name is hashed, not refused.
        await gw.chat_result({**req, "user": "carol {x}: y"}, key=rec)
    finally:
        await gw.aclose()
