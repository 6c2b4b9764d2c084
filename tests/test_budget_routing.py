"""Budget-aware routing: once a caller's budget is nearly used, a route with
``budget_aware`` sends what it would have sent to the strong model to the cheap one."""

from __future__ import annotations

from typing import Any

import pytest

from embedders import WordsEmbedder
from routeguard import config
from routeguard.errors import ConfigError, RouteguardError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer


def _cfg(url: str, aware: Any = 0.5) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "cheap-m", "model": "sim-cheap",
             "input_cost_per_mtok": 100.0, "output_cost_per_mtok": 200.0},
            {**dep, "model_name": "strong-m", "model": "sim-strong"},
        ],
        "router_settings": {"num_retries": 0},
        "budgets": [{"name": "org", "limit": 10.0},
                    {"name": "team", "parent": "org", "limit": 1.0, "soft_limit": 0.9}],
        # A rule sends everything to the strong model (no embedding needed in the test).
        "routes": {"auto": {"mode": "routed", "cheap": "cheap-m", "strong": "strong-m",
                            "threshold": 0.0,
                            "rules": [{"name": "all", "regex": ".", "target": "strong"}],
                            "budget_aware": aware}},
    }  # fmt: skip


MSG = [{"role": "user", "content": "explain the proof in detail"}]


async def test_strong_calls_go_cheap_once_half_the_budget_is_used(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    assert gw.budget is not None
    try:
        seen: list[tuple[str, str | None]] = []
        for _ in range(40):
            r = await gw.chat_result({"model": "auto", "messages": MSG, "max_tokens": 20},
                                     accounts=["team"])  # fmt: skip
            seen.append((r.alias, r.route))
        spent = await gw.budget.backend.spent("team")
        first_cheap = next(i for i, (alias, _) in enumerate(seen) if alias == "cheap-m")
        assert all(alias == "strong-m" for alias, _ in seen[:first_cheap])
        assert all(alias == "cheap-m" and route == "budget:team" for alias, route in
                   seen[first_cheap:])  # fmt: skip
        # It switched as the team crossed half its limit, not before.
        assert 0 < first_cheap < 40 and spent >= 500_000
        # Requests charged elsewhere (no budget) still reach the strong model.
        other = await gw.chat_result({"model": "auto", "messages": MSG})
        assert other.alias == "strong-m"
    finally:
        await gw.aclose()


async def test_soft_limit_also_triggers_and_false_turns_it_off(mock: MockServer) -> None:
    cfg = _cfg(mock.url, aware=1.0)  # only the soft limit ($0.90) can trigger it
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    try:
        routes = []
        for _ in range(60):
            try:
                r = await gw.chat_result({"model": "auto", "messages": MSG, "max_tokens": 20},
                                         accounts=["team"])  # fmt: skip
            except Exception:
                break
            routes.append(r.route)
        assert "budget:team" in routes and routes[0] == "rule:all"
    finally:
        await gw.aclose()
    off = Gateway.from_config(_cfg(mock.url, aware=False), embedder=WordsEmbedder())
    try:
        routers = off.routers["auto"]
        assert routers.budget_aware is None
    finally:
        await off.aclose()


def test_budget_aware_is_validated() -> None:
    base = _cfg("http://127.0.0.1:1")
    base["routes"]["auto"]["budget_aware"] = 1.5
    with pytest.raises((ConfigError, RouteguardError), match="budget_aware"):
        Gateway(config.load(base, env={}), embedder=WordsEmbedder())
