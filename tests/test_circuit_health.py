"""Only upstream health opens a deployment's circuit (connect errors, 5xx, 429, a bad key,
no first byte in time); what one caller's own request causes (a long answer running past
the attempt's time, a rejected request, a forbidden resource) never cools a deployment down
for everyone. Real upstream: the simulated one, paced so that long answers take long."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from ports import free_port
from routeguard import config
from routeguard.config import Deployment, RouterSettings
from routeguard.errors import (
    AllAttemptsFailed,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    error_for_status,
)
from routeguard.fallback import Fallback
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.routing.balance import Balancer

MSG = [{"role": "user", "content": "tell me something"}]


def _cfg(mock: MockServer, model: str, **dep: Any) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "m",
                "type": "openai",
                "model": model,
                "api_key": "k",
                "api_base": mock.url + "/v1",
                **dep,
            }
        ],
        "router_settings": {
            "num_retries": 0,
            "timeout": 0.4,
            "allowed_fails": 2,
            "cooldown_time": 300,
        },
    }


async def test_long_answers_running_out_of_time_do_not_open_the_circuit(mock: MockServer) -> None:
    # 10 tokens a second: an answer of ~25 tokens needs ~2.5 s, far past the 0.4 s attempt
    # timeout; one of 2 tokens (max_tokens) comes back in ~0.2 s.
    cfg = _cfg(mock, "sim-paced", headers={"x-mock-tokens-per-s": "10"})
    gw = Gateway.from_config(cfg)
    dep = gw.balancers["m"].deployments[0]
    try:
        for _ in range(4):  # one caller's long answers, more than allowed_fails of them
            with pytest.raises(AllAttemptsFailed) as info:
                await gw.chat_result({"model": "m", "messages": MSG})
            (attempt,) = info.value.attempts
            assert isinstance(attempt.error, UpstreamTimeout)
            assert not attempt.error.health
        assert not gw.fallback.cooldowns.is_open(dep)
        # The next tenant's short answer is served, not refused as "cooling down".
        short = await gw.chat_result({"model": "m", "messages": MSG, "max_tokens": 2})
        assert short.response is not None
        assert short.response["choices"][0]["finish_reason"] == "length"
    finally:
        await gw.aclose()


async def test_no_first_byte_in_time_opens_the_circuit(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock, "sim-slow-3000"))  # headers only after 3 s
    dep = gw.balancers["m"].deployments[0]
    try:
        for _ in range(2):
            with pytest.raises(AllAttemptsFailed) as info:
                await gw.chat_result({"model": "m", "messages": MSG, "stream": True})
            (attempt,) = info.value.attempts
            assert isinstance(attempt.error, UpstreamTimeout) and attempt.error.health
        assert gw.fallback.cooldowns.is_open(dep)
        with pytest.raises(AllAttemptsFailed, match="cooling down"):
            await gw.chat_result({"model": "m", "messages": MSG, "stream": True})
    finally:
        await gw.aclose()


async def test_connect_errors_open_the_circuit(mock: MockServer) -> None:
    cfg = _cfg(mock, "sim")
    cfg["model_list"][0]["api_base"] = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens
    gw = Gateway.from_config(cfg)
    try:
        for _ in range(2):
            with pytest.raises(AllAttemptsFailed):
                await gw.chat_result({"model": "m", "messages": MSG})
        assert gw.fallback.cooldowns.is_open(gw.balancers["m"].deployments[0])
    finally:
        await gw.aclose()


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose listen queue is full: connecting to it hangs (the SYN is dropped)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    held = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        held.append(c)
    try:
        yield port
    finally:
        for c in held:
            c.close()
        srv.close()


async def test_a_connect_that_hangs_opens_the_circuit(mock: MockServer, blackhole: int) -> None:
    # A plain call: its attempt timeout alone would not count (it may be a long answer),
    # but never getting connected is the upstream's health.
    cfg = _cfg(mock, "sim")
    cfg["model_list"][0]["api_base"] = f"http://127.0.0.1:{blackhole}/v1"
    gw = Gateway.from_config(cfg)
    try:
        for _ in range(2):
            with pytest.raises(AllAttemptsFailed) as info:
                await gw.chat_result({"model": "m", "messages": MSG})
            (attempt,) = info.value.attempts
            assert isinstance(attempt.error, UpstreamTimeout) and attempt.error.health
        assert gw.fallback.cooldowns.is_open(gw.balancers["m"].deployments[0])
    finally:
        await gw.aclose()


def _fallback(allowed_fails: int = 2) -> Fallback:
    s = RouterSettings(num_retries=0, allowed_fails=allowed_fails, cooldown_time=300)
    deps = config.load(
        {"model_list": [{"model_name": "a", "type": "openai", "model": "a-0"}]}, env={}
    ).deployments
    balancers = {a: Balancer(d, s.strategy, random.Random(0)) for a, d in deps.items()}
    return Fallback(s, balancers, {}, {}, rng=random.Random(0))


def _raising(err: ProviderError) -> Any:
    async def attempt(dep: Deployment, timeout: float) -> str:
        raise err

    return attempt


@pytest.mark.parametrize(
    ("error", "opens"),
    [
        (error_for_status(503, "x"), True),
        (error_for_status(500, "x"), True),
        (error_for_status(429, "x"), True),
        (error_for_status(401, "x"), True),  # the deployment's own key: every caller fails
        (error_for_status(403, "x"), False),  # may be a resource the caller named
        (error_for_status(404, "x"), False),
        (error_for_status(408, "x"), False),
        (UpstreamTimeout("no complete answer", health=False), False),
        (UpstreamTimeout("no first byte"), True),
    ],
)
async def test_which_failures_count_toward_the_circuit(error: ProviderError, opens: bool) -> None:
    fb = _fallback()
    dep = fb.balancers["a"].deployments[0]
    for _ in range(3):
        with pytest.raises(AllAttemptsFailed):
            await fb.run("a", _raising(error))
    assert fb.cooldowns.is_open(dep) is opens


def test_error_classes_say_whether_they_are_health() -> None:
    assert UpstreamServerError("x").health and UpstreamRateLimited("x").health
    assert UpstreamAuthError("x").health
    assert not UpstreamBadRequest("x").health and not UpstreamNotFound("x").health


async def test_a_bad_request_does_not_count_even_as_a_probe() -> None:
    fb = _fallback(allowed_fails=1)
    dep = fb.balancers["a"].deployments[0]
    with pytest.raises(UpstreamBadRequest):
        await fb.run("a", _raising(UpstreamBadRequest("bad")))
    assert not fb.cooldowns.is_open(dep)
