"""A cache judge model's calls (``cache.judge: <alias>``) are paid for: charged once to the
accounts the compared request was charged to, or to ``cache.judge_account``, and written to
the spend log as that request's ``judge`` row; a payer that cannot afford one gets no call
(and the bound no evidence from it). In process, and through the proxy with the official
SDK and ``GET /admin/spend``."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from typing import Any

import openai
import pytest

from embedders import WordsEmbedder
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.result import ChatResult
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-judge-bill"
# Six shared words: close enough to be each other's candidate, never served cold.
FIRST = "alpha bravo charlie delta echo foxtrot please"
SECOND = "alpha bravo charlie delta echo foxtrot now"


def _cfg(url: str, judges_limit: float = 100.0, **cache: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "qa", "model": "sim-qa"},
            {**dep, "model_name": "judge", "model": "sim-judge", "input_cost_per_mtok": 30.0},
        ],
        "budgets": [
            {"name": "team-a", "limit": 100.0},
            {"name": "judges", "limit": judges_limit},
        ],
        "cache": {"enabled": True, "max_error_rate": 0.05, "judge": "judge", **cache},
        "server": {"master_key": MASTER},
    }


def _micros(usd: float) -> int:
    return math.ceil(usd * 1_000_000 - 1e-6)


async def _ask_two(gw: Gateway) -> tuple[list[ChatResult], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    gw.spend_sink = rows.append
    out = []
    for text in (FIRST, SECOND):
        req = {"model": "qa", "messages": [{"role": "user", "content": text}]}
        out.append(await gw.chat_result(req, accounts=["team-a"]))
        assert gw.cache is not None
        await asyncio.gather(*gw.cache._comparing)
    return out, rows


async def test_a_judge_call_is_charged_to_the_requests_accounts(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        (first, second), rows = await _ask_two(gw)
        assert gw.cache is not None
        assert gw.cache.checks == {("qa", "miss", "wrong"): 1}  # the judge said DIFFERENT
        [row] = rows
        assert row["request_id"] == f"{second.request_id}:judge"
        assert (row["model"], row["route"], row["cache"], row["status"]) == (
            "judge", "qa", "judge", 200)  # fmt: skip
        want = (row["prompt_tokens"] * 30.0 + row["completion_tokens"] * 2.0) / 1e6
        assert row["cost_usd"] == pytest.approx(want, rel=1e-9) and want > 0
        spent = await gw.budget.backend.spent("team-a")
        # each settlement rounds up to a micro-dollar; nothing charged twice, nothing left out
        assert spent == sum(_micros(c) for c in (first.cost, second.cost, row["cost_usd"]))
        assert await gw.budget.backend.spent("judges") == 0
        assert await gw.budget.backend.reserved("team-a") == 0
    finally:
        await gw.aclose()


async def test_a_judge_account_pays_instead(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url, judge_account="judges"), embedder=WordsEmbedder())
    try:
        (first, second), [row] = await _ask_two(gw)
        assert await gw.budget.backend.spent("team-a") == _micros(first.cost) + _micros(second.cost)
        assert await gw.budget.backend.spent("judges") == _micros(row["cost_usd"])
    finally:
        await gw.aclose()


async def test_a_payer_that_cannot_afford_the_judge_gets_no_call(mock: MockServer) -> None:
    cfg = _cfg(mock.url, judges_limit=1e-6, judge_account="judges")
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    try:
        _, rows = await _ask_two(gw)
        assert rows == []
        assert gw.cache is not None
        assert gw.cache.checks == {("qa", "miss", "unpaid"): 1}
        assert await gw.budget.backend.spent("judges") == 0
        assert await gw.budget.backend.reserved("judges") == 0
    finally:
        await gw.aclose()


def test_an_unknown_judge_account_is_named() -> None:
    from routeguard import config
    from routeguard.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cache\.judge_account.*no budget account named 'nope'"):
        config.load(_cfg("http://127.0.0.1:9", judge_account="nope"), env={})


def test_the_proxys_spend_log_shows_judge_calls_for_the_callers_key(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    secret, rec = gw.keys.create(KeySpec(team="search", org="acme", max_budget=5.0))
    with ServerThread(create_app(gw)) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=secret, max_retries=0) as c:
            for text in (FIRST, SECOND):
                c.chat.completions.create(model="qa", messages=[{"role": "user", "content": text}])
        by_model: dict[str, Any] = {}
        for _ in range(200):  # the judge runs after the answer is out: until its row is in
            req = urllib.request.Request(f"{srv.url}/admin/spend?group_by=model&team=search")
            req.add_header("authorization", f"Bearer {MASTER}")
            with urllib.request.urlopen(req, timeout=10) as r:
                by_model = {row["group"]: row for row in json.loads(r.read())["data"]}
            if "judge" in by_model:
                break
            time.sleep(0.05)
        assert by_model["judge"]["requests"] == 1 and by_model["qa"]["requests"] == 2
        total = sum(row["cost_usd"] for row in by_model.values())
        spent = gw.budget.backend.spent_sync(rec.key_id)  # type: ignore[attr-defined]
        # the key's own account paid for both answers and the judge, each once
        assert spent == pytest.approx(total * 1_000_000, abs=3)
