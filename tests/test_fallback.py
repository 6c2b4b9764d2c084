"""Retries, cooldowns, fallback chains and deadlines, driven by scripted attempts."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from routeguard import config
from routeguard.backoff import backoff_delay
from routeguard.config import Deployment, RouterSettings
from routeguard.errors import (
    AllAttemptsFailed,
    ContextWindowExceeded,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
)
from routeguard.fallback import Cooldowns, Fallback
from routeguard.routing.balance import Balancer


def _deps(spec: dict[str, int]) -> dict[str, list[Deployment]]:
    entries = [
        {"model_name": alias, "type": "openai", "model": f"{alias}-{i}"}
        for alias, n in spec.items()
        for i in range(n)
    ]
    return config.load({"model_list": entries}, env={}).deployments


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _fallback(
    spec: dict[str, int],
    fallbacks: dict[str, list[str]] | None = None,
    ctx: dict[str, list[str]] | None = None,
    clock: Callable[[], float] | None = None,
    **settings: Any,
) -> Fallback:
    s = RouterSettings(**{"retry_backoff": 0.001, "retry_backoff_max": 0.002, **settings})
    balancers = {a: Balancer(d, s.strategy, random.Random(0)) for a, d in _deps(spec).items()}
    kw: dict[str, Any] = {"rng": random.Random(0)}
    if clock is not None:
        kw["clock"] = clock
    return Fallback(s, balancers, fallbacks or {}, ctx or {}, **kw)


class Script:
    """An attempt function that fails per a plan keyed by deployment model name."""

    def __init__(self, plan: dict[str, list[ProviderError | None]]) -> None:
        self.plan = plan
        self.calls: list[str] = []

    async def __call__(self, dep: Deployment, timeout: float) -> str:
        self.calls.append(dep.model)
        outcomes = self.plan.get(dep.model, [])
        err = outcomes.pop(0) if outcomes else None
        if err is not None:
            raise err
        return f"answer from {dep.model}"


async def test_retryable_error_is_retried_then_succeeds() -> None:
    fb = _fallback({"a": 1}, num_retries=2)
    script = Script({"a-0": [UpstreamServerError("boom"), None]})
    out = await fb.run("a", script)
    assert out.value == "answer from a-0"
    assert script.calls == ["a-0", "a-0"]
    assert len(out.attempts) == 2 and isinstance(out.attempts[0].error, UpstreamServerError)


async def test_bad_request_is_not_retried_nor_fallen_back() -> None:
    fb = _fallback({"a": 2, "b": 1}, {"a": ["b"]}, num_retries=3)
    script = Script({"a-0": [UpstreamBadRequest("bad")], "a-1": [UpstreamBadRequest("bad")]})
    with pytest.raises(UpstreamBadRequest):
        await fb.run("a", script)
    assert len(script.calls) == 1


async def test_auth_error_moves_to_next_deployment_without_retrying_it() -> None:
    fb = _fallback({"a": 2}, num_retries=3)
    script = Script({"a-0": [UpstreamAuthError("no")], "a-1": [UpstreamAuthError("no")]})
    with pytest.raises(AllAttemptsFailed) as info:
        await fb.run("a", script)
    assert sorted(script.calls) == ["a-0", "a-1"]  # each once, never retried
    assert info.value.status_code == 503
    assert "UpstreamAuthError" in info.value.message


async def test_fallback_chain_walks_aliases_in_order() -> None:
    fb = _fallback({"a": 1, "b": 1, "c": 1}, {"a": ["b", "c"]}, num_retries=1)
    script = Script(
        {"a-0": [UpstreamServerError("x")] * 2, "b-0": [UpstreamRateLimited("slow down")] * 2}
    )
    out = await fb.run("a", script)
    assert out.alias == "c" and out.value == "answer from c-0"
    assert script.calls == ["a-0", "a-0", "b-0", "b-0", "c-0"]


async def test_everything_failing_lists_every_attempt() -> None:
    fb = _fallback({"a": 1, "b": 1}, {"a": ["b"]}, num_retries=1)
    script = Script({"a-0": [UpstreamRateLimited("r")] * 2, "b-0": [UpstreamRateLimited("r")] * 2})
    with pytest.raises(AllAttemptsFailed) as info:
        await fb.run("a", script)
    err = info.value
    assert len(err.attempts) == 4
    assert err.status_code == 429  # every attempt was rate limited
    body = err.to_openai()
    assert len(body["error"]["attempts"]) == 4


async def test_context_window_error_switches_to_context_fallbacks() -> None:
    fb = _fallback({"a": 1, "b": 1, "long": 1}, {"a": ["b"]}, {"a": ["long"]})
    script = Script({"a-0": [ContextWindowExceeded("too long")]})
    out = await fb.run("a", script)
    assert out.alias == "long"
    assert script.calls == ["a-0", "long-0"]  # 'b' (same window) is not tried


async def test_context_window_without_fallback_is_a_client_error() -> None:
    fb = _fallback({"a": 1})
    with pytest.raises(ContextWindowExceeded):
        await fb.run("a", Script({"a-0": [ContextWindowExceeded("too long")]}))


async def test_pre_call_fit_check_skips_small_models() -> None:
    fb = _fallback({"a": 1, "long": 1}, ctx={"a": ["long"]})
    script = Script({})
    out = await fb.run("a", script, fits=lambda d: d.alias == "long")
    assert out.alias == "long" and script.calls == ["long-0"]


async def test_cooldown_opens_then_half_open_probe() -> None:
    clock = Clock()
    fb = _fallback({"a": 2}, clock=clock, num_retries=0, allowed_fails=2, cooldown_time=30)
    bad = Script({"a-0": [UpstreamServerError("x")] * 10})

    # Fail a-0 twice (the balancer may pick either; keep calling until a-0 has failed twice).
    while bad.calls.count("a-0") < 2:
        with contextlib.suppress(AllAttemptsFailed):
            await fb.run("a", bad)
    assert fb.cooldowns.is_open(fb.balancers["a"].deployments[0])
    before = bad.calls.count("a-0")
    for _ in range(20):
        await fb.run("a", bad)
    assert bad.calls.count("a-0") == before  # skipped while open

    clock.t += 31
    probe = Script({})
    seen = set()
    for _ in range(30):
        out = await fb.run("a", probe)
        seen.add(out.deployment.model)
    assert "a-0" in seen  # the probe went through, succeeded, and closed the circuit
    assert not fb.cooldowns.is_open(fb.balancers["a"].deployments[0])


def test_half_open_allows_exactly_one_probe() -> None:
    clock = Clock()
    cd = Cooldowns(allowed_fails=1, cooldown_time=10, clock=clock)
    dep = _deps({"a": 1})["a"][0]
    cd.failure(dep)
    assert not cd.available(dep)
    clock.t += 11
    assert cd.available(dep)
    cd.acquire(dep)  # the probe
    assert not cd.available(dep)  # a second concurrent caller is held back
    cd.failure(dep)  # probe failed: open again
    assert not cd.available(dep)
    clock.t += 11
    assert cd.available(dep)
    cd.acquire(dep)
    cd.success(dep)
    assert cd.available(dep) and cd.available(dep)


async def test_all_cooling_down_fails_fast() -> None:
    clock = Clock()
    fb = _fallback({"a": 1}, clock=clock, num_retries=0, allowed_fails=1, cooldown_time=60)
    with pytest.raises(AllAttemptsFailed):
        await fb.run("a", Script({"a-0": [UpstreamServerError("x")]}))
    script = Script({})
    with pytest.raises(AllAttemptsFailed) as info:
        await fb.run("a", script)
    assert script.calls == []
    assert "cooling down" in info.value.message


async def test_attempt_timeout_and_overall_deadline() -> None:
    fb = _fallback({"a": 1}, timeout=0.05, deadline=0.2, num_retries=10)
    calls = 0

    async def hang(dep: Deployment, timeout: float) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(AllAttemptsFailed) as info:
        await fb.run("a", hang)
    assert 2 <= calls <= 5  # a few 50 ms attempts fit in the 200 ms deadline, not 11
    assert "deadline" in info.value.message or info.value.status_code == 504


def test_backoff_is_jittered_bounded_and_honours_retry_after() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 4.0, None, rng) for n in range(1, 8) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100  # jitter
    assert backoff_delay(1, 0.5, 4.0, 2.0, rng) >= 2.0
    assert backoff_delay(1, 0.5, 4.0, 60.0, rng) == 4.0  # capped


def test_weighted_balancing_follows_weights() -> None:
    deps = config.load(
        {
            "model_list": [
                {"model_name": "a", "type": "openai", "model": "x", "weight": 3},
                {"model_name": "a", "type": "openai", "model": "y", "weight": 1},
            ]
        },
        env={},
    ).deployments["a"]
    b = Balancer(deps, "weighted", random.Random(3))
    picks = [b.pick(lambda d: True) for _ in range(4000)]
    share = sum(1 for p in picks if p is not None and p.model == "x") / len(picks)
    assert 0.70 < share < 0.80


def test_least_busy_and_lowest_latency() -> None:
    deps = _deps({"a": 3})["a"]
    b = Balancer(deps, "least-busy", random.Random(0))
    b.begin(deps[0])
    b.begin(deps[1])
    assert b.pick(lambda d: True) is deps[2]
    lat = Balancer(deps, "lowest-latency", random.Random(0))
    for d, secs in zip(deps, (0.3, 0.1, 0.2), strict=True):
        lat.begin(d)
        lat.end(d, secs)
    assert lat.pick(lambda d: True) is deps[1]
    assert lat.pick(lambda d: d is not deps[1]) is deps[2]


def test_rpm_and_tpm_limits_take_a_deployment_out_for_the_minute() -> None:
    deps = config.load(
        {
            "model_list": [
                {"model_name": "a", "type": "openai", "model": "x", "rpm": 2},
                {"model_name": "a", "type": "openai", "model": "y", "tpm": 100},
            ]
        },
        env={},
    ).deployments["a"]
    clock = Clock()
    b = Balancer(deps, "weighted", random.Random(0), clock=clock)
    x, y = deps
    b.begin(x)
    b.begin(x)
    assert not b.has_capacity(x)
    assert b.pick(lambda d: True) is y
    b.record_tokens(y, 150)
    assert b.pick(lambda d: True) is None  # both used up this minute
    clock.t += 60
    assert b.has_capacity(x) and b.has_capacity(y)


async def test_no_capacity_anywhere_is_reported() -> None:
    fb = _fallback({"a": 1})
    only = fb.balancers["a"].deployments[0]
    fb.balancers["a"] = Balancer([replace(only, rpm=1)], "weighted")
    await fb.run("a", Script({}))
    with pytest.raises(AllAttemptsFailed) as info:
        await fb.run("a", Script({}))
    assert "rpm/tpm" in info.value.message
