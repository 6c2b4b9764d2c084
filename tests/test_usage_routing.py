"""Usage-based and lowest-cost routing, per-deployment rpm/tpm limits (estimated before the
call, corrected after, counted once across fallbacks) and the 429 when every deployment is
at its limit, through the official openai and anthropic SDKs. Per process here; shared on
Redis in test_shared_routing.py."""

from __future__ import annotations

import random
from typing import Any

import anthropic
import httpx
import openai
import pytest

from routeguard import config
from routeguard.budget.keys import KeySpec
from routeguard.config import Deployment, RouterSettings
from routeguard.errors import AllAttemptsFailed, UpstreamServerError
from routeguard.fallback import Fallback
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.routing.balance import Balancer, LocalUsage
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MSG = [{"role": "user", "content": "say something short"}]


class Clock:
    """A settable clock (unix seconds)."""

    def __init__(self, t: float = 60_000.0 + 15.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _deps(*entries: dict[str, Any]) -> list[Deployment]:
    models = [{"model_name": "a", "type": "openai", "model": f"m{i}", **e} for i, e in
              enumerate(entries)]  # fmt: skip
    return config.load({"model_list": models}, env={}).deployments["a"]


def test_usage_based_picks_the_fewest_tokens_this_minute_then_fewest_requests() -> None:
    clock = Clock()
    x, y, z = deps = _deps({}, {}, {})
    b = Balancer(deps, "usage-based", random.Random(0), clock=clock)
    b.record_tokens(x, 300)
    b.record_tokens(y, 100)
    b.record_tokens(z, 100)
    b.begin(y)  # y: one request more than z, same tokens
    b.end(y, 0.1)
    assert b.pick(lambda d: True) is z
    assert b.pick(lambda d: d is not z) is y
    b.record_tokens(z, 250)
    assert b.pick(lambda d: True) is y
    clock.t += 60  # a new minute: everyone at zero, ties broken at random
    picked = {b.pick(lambda d: True).id for _ in range(60)}  # type: ignore[union-attr]
    assert picked == {x.id, y.id, z.id}


def test_usage_based_ties_are_random_among_equals_only() -> None:
    x, y, z = deps = _deps({}, {}, {})
    b = Balancer(deps, "usage-based", random.Random(1), clock=Clock())
    b.record_tokens(x, 10)
    picked = {b.pick(lambda d: True).id for _ in range(40)}  # type: ignore[union-attr]
    assert picked == {y.id, z.id}


def test_lowest_cost_picks_the_cheapest_healthy_deployment() -> None:
    cheap, mid, dear = deps = _deps(
        {"input_cost_per_mtok": 0.5, "output_cost_per_mtok": 1.5},
        {"input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
        {"input_cost_per_mtok": 5.0, "output_cost_per_mtok": 15.0},
    )
    b = Balancer(deps, "lowest-cost", random.Random(0))
    assert b.pick(lambda d: True) is cheap
    assert b.pick(lambda d: d is not cheap) is mid
    assert b.pick(lambda d: d is dear) is dear


def test_tpm_counts_the_prompt_estimate_and_a_fresh_minute_admits_one_large_request() -> None:
    clock = Clock()
    (x,) = deps = _deps({"tpm": 1000})
    b = Balancer(deps, "weighted", clock=clock)
    assert b.has_capacity(x, 5000)  # nothing used this minute: one request goes, however large
    charge = b.begin(x, 700)
    assert not b.has_capacity(x, 400)  # 700 estimated + 400 > 1000
    assert b.has_capacity(x, 300)
    b.record_tokens(x, 200, charge)  # the real total replaces the estimate
    assert b.usage.get(x.id, b.minute()) == (1, 200)
    assert b.has_capacity(x, 800)


def test_repeated_reports_of_a_growing_total_count_once() -> None:
    clock = Clock()
    (x,) = deps = _deps({"tpm": 10_000})
    b = Balancer(deps, "usage-based", clock=clock)
    charge = b.begin(x, 50)
    for total in (40, 90, 90, 130):  # a stream's cumulative usage chunks
        b.record_tokens(x, total, charge)
    assert b.usage.get(x.id, b.minute()) == (1, 130)


def test_local_usage_ignores_corrections_for_a_past_minute() -> None:
    u = LocalUsage()
    u.add("d", 10, 1, 100)
    u.add("d", 11, 1, 5)
    u.add("d", 10, 0, -100)  # a late refund for minute 10: minute 11 keeps its own counts
    assert u.get("d", 11) == (1, 5)
    assert u.get("d", 10) == (0, 0)


class Script:
    """Attempts that fail for the named deployments and answer with usage otherwise."""

    def __init__(self, failing: set[str], total: int) -> None:
        self.failing = failing
        self.total = total
        self.calls: list[str] = []

    async def __call__(self, dep: Deployment, timeout: float) -> dict[str, Any]:
        self.calls.append(dep.id)
        if dep.id in self.failing:
            raise UpstreamServerError("boom")
        return {"usage": {"total_tokens": self.total}}


def _walker(
    spec: dict[str, list[dict[str, Any]]], clock: Clock, **router: Any
) -> tuple[Fallback, dict[str, Balancer]]:
    models = [
        {"model_name": alias, "type": "openai", "model": f"{alias}-{i}", **e}
        for alias, entries in spec.items()
        for i, e in enumerate(entries)
    ]
    fallbacks = router.pop("fallbacks", {})
    cfg = config.load({"model_list": models}, env={})
    s = RouterSettings(**{"retry_backoff": 0.0, "retry_backoff_max": 0.0, **router})
    balancers = {
        a: Balancer(d, s.strategy, random.Random(0), clock=clock)
        for a, d in cfg.deployments.items()
    }
    return Fallback(s, balancers, fallbacks, {}, rng=random.Random(0)), balancers


async def test_a_request_that_falls_back_is_counted_once_on_the_deployment_that_answered() -> None:
    clock = Clock()
    entries = [{"tpm": 10_000, "input_cost_per_mtok": c} for c in (1.0, 2.0)]
    fb, balancers = _walker({"a": entries}, clock, strategy="lowest-cost")
    first, second = balancers["a"].deployments
    script = Script({first.id}, total=42)
    out = await fb.run("a", script, tokens=500)
    assert script.calls == [first.id, second.id]
    balancers["a"].record_tokens(out.deployment, 42, out.charge)
    usage = balancers["a"].usage
    minute = balancers["a"].minute()
    assert usage.get(first.id, minute) == (1, 0)  # the failed try: a request, no tokens
    assert usage.get(second.id, minute) == (1, 42)


async def test_every_deployment_at_its_limit_is_a_429_with_the_time_to_the_next_minute() -> None:
    clock = Clock(60_000.0 + 45.0)
    fb, _ = _walker({"a": [{"rpm": 1}, {"rpm": 1}]}, clock)
    script = Script(set(), total=10)
    await fb.run("a", script)
    await fb.run("a", script)
    with pytest.raises(AllAttemptsFailed) as info:
        await fb.run("a", script)
    err = info.value
    assert err.status_code == 429 and err.error_type == "rate_limit_error"
    assert err.retry_after == pytest.approx(15.0)
    assert "rpm/tpm limit" in err.message
    assert len(script.calls) == 2  # the third request never went upstream
    clock.t += 15.0
    await fb.run("a", script)  # the next minute serves again


async def test_a_limited_alias_falls_back_and_only_a_mix_of_outages_is_a_503() -> None:
    clock = Clock()
    fb, balancers = _walker(
        {"a": [{"rpm": 1}], "b": [{}]}, clock, num_retries=0, fallbacks={"a": ["b"]}
    )
    ok = Script(set(), total=10)
    await fb.run("a", ok)
    out = await fb.run("a", ok)  # a at its limit: b serves
    assert out.alias == "b"
    b_dep = balancers["b"].deployments[0]
    with pytest.raises(AllAttemptsFailed) as info:
        await fb.run("a", Script({b_dep.id}, total=10))
    assert info.value.status_code == 503  # b is down, not rate limited: no Retry-After
    assert info.value.retry_after is None


def test_clients_get_a_429_in_their_protocol_with_retry_after(mock: MockServer) -> None:
    cfg = {
        "model_list": [
            {"model_name": "limited", "type": "openai", "model": "sim-a", "api_key": "k",
             "api_base": mock.url + "/v1", "rpm": 1},
            {"model_name": "limited", "type": "anthropic", "model": "sim-b", "api_key": "k",
             "api_base": mock.url, "rpm": 1},
        ],
        "router_settings": {"strategy": "usage-based"},
    }  # fmt: skip
    gw = Gateway.from_config(cfg)
    with (
        ServerThread(create_app(gw)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as oa,
        anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as an,
    ):
        served = {
            oa.chat.completions.with_raw_response.create(model="limited", messages=MSG).headers[
                "x-routeguard-deployment"
            ]
            for _ in range(2)
        }
        assert len(served) == 2  # usage-based: the second request went to the unused one
        with pytest.raises(openai.RateLimitError) as info:
            oa.chat.completions.create(model="limited", messages=MSG)  # type: ignore[arg-type]
        wait = int(info.value.response.headers["retry-after"])
        assert 1 <= wait <= 60
        assert info.value.body["code"] == "rate_limited"  # type: ignore[index]
        with pytest.raises(anthropic.RateLimitError) as ainfo:
            an.messages.create(
                model="limited", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        assert 1 <= int(ainfo.value.response.headers["retry-after"]) <= 60
        assert ainfo.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        # Not a 5xx: the client knows to wait, not that the gateway is broken.
        r = httpx.post(
            server.url + "/v1/chat/completions", json={"model": "limited", "messages": MSG}
        )
        assert r.status_code == 429


def test_litellm_strategies_map_to_ours() -> None:
    params = {"model": "openai/gpt-4o", "api_key": "k", "rpm": 5}
    base = {"model_list": [{"model_name": "a", "litellm_params": params}]}
    for theirs, ours in (
        ("usage-based-routing", "usage-based"),
        ("usage-based-routing-v2", "usage-based"),
        ("cost-based-routing", "lowest-cost"),
        ("simple-shuffle", "weighted"),
    ):
        cfg = config.load({**base, "router_settings": {"routing_strategy": theirs}}, env={})
        assert cfg.router.strategy == ours
        assert not [w for w in cfg.warnings if "routing_strategy" in w]
        assert cfg.deployments["a"][0].rpm == 5


def test_litellm_router_redis_settings_share_cooldowns_usage_and_budgets() -> None:
    params = {"model": "openai/gpt-4o", "api_key": "k"}
    cfg = config.load(
        {
            "model_list": [{"model_name": "a", "litellm_params": params}],
            "router_settings": {
                "routing_strategy": "usage-based-routing-v2",
                "redis_host": "os.environ/REDIS_HOST",
                "redis_port": 6380,
                "redis_password": "os.environ/REDIS_PASSWORD",
            },
        },
        env={"REDIS_HOST": "cache.internal", "REDIS_PASSWORD": "p@ss"},
    )
    assert cfg.router.redis_url == "redis://:p%40ss@cache.internal:6380"
    assert cfg.budget.backend == "redis" and cfg.budget.redis_url == cfg.router.redis_url
    assert not [w for w in cfg.warnings if "redis" in w]
    url = config.load(
        {
            "model_list": [{"model_name": "a", "litellm_params": params}],
            "router_settings": {"redis_url": "redis://r:6379/2"},
        },
        env={},
    ).router.redis_url
    assert url == "redis://r:6379/2"


def test_router_redis_url_defaults_to_a_redis_budget_store_and_is_checked() -> None:
    models = [{"model_name": "a", "type": "openai", "model": "x"}]
    shared = config.load(
        {"model_list": models, "budget_settings": {"backend": "redis", "redis_url": "redis://b/0"}},
        env={},
    )
    assert shared.router.redis_url == "redis://b/0"
    local = config.load({"model_list": models, "budget_settings": {"redis_url": "redis://b/0"}})
    assert local.router.redis_url is None  # a memory budget store: nothing is shared
    bad = {"redis_url": "http://x", "redis_prefix": "{a}", "redis_sync_interval": 0}
    with pytest.raises(config.ConfigError) as info:
        config.load({"model_list": models, "router_settings": bad}, env={})
    paths = {p.path for p in info.value.problems}
    assert paths == {f"router_settings.{k}" for k in bad}
    with pytest.raises(config.ConfigError) as info:
        config.load({"model_list": models, "router_settings": {"strategy": "fastest"}}, env={})
    assert [p.path for p in info.value.problems] == ["router_settings.strategy"]


async def test_a_key_scoped_away_from_the_fallback_still_gets_the_429(mock: MockServer) -> None:
    dep = {"type": "openai", "api_key": "k", "api_base": mock.url + "/v1"}
    cfg = {
        "model_list": [{"model_name": "a", "model": "sim-a", "rpm": 1, **dep},
                       {"model_name": "b", "model": "sim-b", "rpm": 1, **dep}],
        "fallbacks": {"a": ["b"]},
    }  # fmt: skip
    gw = Gateway.from_config(cfg)
    _, rec = gw.keys.create(KeySpec(models=["a"]))
    try:
        await gw.chat_result({"model": "a", "messages": MSG}, key=rec)
        with pytest.raises(AllAttemptsFailed) as info:
            await gw.chat_result({"model": "a", "messages": MSG}, key=rec)
        assert info.value.status_code == 429 and info.value.retry_after is not None
    finally:
        await gw.aclose()


def test_litellm_rpm_and_tpm_beside_litellm_params_are_read_too() -> None:
    entry = {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o", "api_key": "k",
             "tpm": 1000}, "rpm": 7, "tpm": 5, "extra_key": 1}  # fmt: skip
    cfg = config.load({"model_list": [entry]}, env={})
    dep = cfg.deployments["a"][0]
    assert (dep.rpm, dep.tpm) == (7, 1000)  # litellm_params wins where both are set
    assert "model_list[0].extra_key is not supported and is ignored" in cfg.warnings
