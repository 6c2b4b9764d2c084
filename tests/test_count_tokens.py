"""``POST /v1/messages/count_tokens`` with the official anthropic SDK against the proxy: passed
through to an Anthropic deployment (its path, model, key and the client's anthropic headers
checked on the simulated upstream), the local estimate for other providers and when the
upstream is down or failing, upstream refusals in Anthropic's shape without upstream secrets,
the key's scope, and the key's RPM (not TPM, not spend)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from litellm_proxy import call
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.mock.answers import count_tokens as mock_count
from routeguard.server import create_app
from routeguard.server.messages import count_tokens as local_count
from routeguard.server.thread import ServerThread

TOOL: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
UPSTREAM_KEY = "sk-ant-upstream-secret-4242"
MSG: Any = [{"role": "user", "content": "How many tokens is this sentence, roughly?"}]
N = 12  # counts per region check


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, MockServer, Gateway]]:
    with MockServer() as mock:
        ant = {"type": "anthropic", "api_base": mock.url, "api_key": UPSTREAM_KEY}
        down = {**ant, "api_base": f"http://127.0.0.1:{_closed_port()}"}
        oai = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k"}
        cfg = {
            "model_list": [
                {**ant, "model_name": "claude", "model": "sim-claude-upstream"},
                {**ant, "model_name": "other", "model": "sim-other"},
                {**ant, "model_name": "claude-503", "model": "sim-error-503"},
                {**ant, "model_name": "claude-429", "model": "sim-error-429"},
                {**ant, "model_name": "claude-cooling", "model": "sim-cooling"},
                {**ant, "model_name": "claude-badkey", "model": "sim-c", "api_key": "bad-key"},
                {**down, "model_name": "claude-down", "model": "sim-c", "timeout": 5},
                {**oai, "model_name": "gpt", "model": "sim-gpt"},
            ],
            "router_settings": {"num_retries": 0},
            "server": {"master_key": "sk-master"},
            # a routed model: its target is chosen per request (a rule here: no embedding)
            "routes": {
                "auto": {
                    "mode": "routed",
                    "cheap": "gpt",
                    "strong": "claude",
                    "threshold": 0.0,
                    "rules": [{"name": "all", "regex": ".", "target": "strong"}],
                }
            },
        }
        gw = Gateway.from_config(cfg)
        with ServerThread(create_app(gw)) as server:
            yield server.url, mock, gw


@pytest.fixture
def ant(served: tuple[str, MockServer, Gateway]) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=served[0], api_key="sk-master", max_retries=0) as c:
        yield c


def _raw(ant: anthropic.Anthropic, model: str, **kw: Any) -> tuple[int, dict[str, str]]:
    raw = ant.messages.with_raw_response.count_tokens(model=model, messages=MSG, **kw)
    return raw.parse().input_tokens, dict(raw.headers)


def test_anthropic_deployment_passes_through(
    ant: anthropic.Anthropic, served: tuple[str, MockServer, Gateway]
) -> None:
    mock = served[1]
    mock.reset()
    raw = ant.messages.with_raw_response.count_tokens(
        model="claude",
        system="Be brief.",
        messages=MSG,
        tools=[TOOL],
        extra_headers={"anthropic-beta": "token-counting-2024-11-01,files-api-2025-04-14"},
    )
    tokens = raw.parse().input_tokens
    assert raw.headers["x-routeguard-count"] == "upstream"
    assert raw.headers["x-routeguard-deployment"]
    (seen,) = mock.requests
    assert seen.path == "/v1/messages/count_tokens" and seen.method == "POST"
    assert seen.model == "sim-claude-upstream"  # the deployment's model, not the alias
    assert seen.headers["x-api-key"] == UPSTREAM_KEY  # the deployment's key, not the caller's
    assert "sk-master" not in str(seen.headers)
    assert seen.headers["anthropic-version"]
    assert seen.headers["anthropic-beta"] == "token-counting-2024-11-01,files-api-2025-04-14"
    assert seen.body["tools"] == [TOOL] and seen.body["system"] == "Be brief."
    assert seen.body["messages"] == MSG
    # the upstream's own count (the simulated tokenizer), not the proxy's estimate
    chars = len("Be brief.") + len(MSG[0]["content"])
    assert tokens > 0
    assert tokens != local_count({"model": "claude", "messages": MSG, "system": "Be brief.",
                                  "tools": [TOOL]})["input_tokens"]  # fmt: skip
    assert tokens >= mock_count(chars)


def test_other_providers_count_locally(
    ant: anthropic.Anthropic, served: tuple[str, MockServer, Gateway]
) -> None:
    mock = served[1]
    mock.reset()
    short, headers = _raw(ant, "gpt")
    assert headers["x-routeguard-count"] == "local"
    assert headers["x-routeguard-count-reason"] == "provider"
    out = ant.messages.count_tokens(
        model="gpt", messages=[{"role": "user", "content": "Hello there " * 100}]
    )
    assert short < out.input_tokens
    assert out.input_tokens == pytest.approx(len("Hello there " * 100) / 4, rel=0.1)
    with_tools = ant.messages.count_tokens(model="gpt", messages=MSG, tools=[TOOL])
    assert with_tools.input_tokens > short
    assert mock.requests == []  # no upstream call


@pytest.mark.parametrize("alias", ["claude-down", "claude-503"])
def test_upstream_down_or_failing_falls_back_to_the_local_count(
    ant: anthropic.Anthropic,
    served: tuple[str, MockServer, Gateway],
    alias: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="routeguard")
    tokens, headers = _raw(ant, alias)
    assert headers["x-routeguard-count"] == "local"
    assert headers["x-routeguard-count-reason"] == "upstream-error"
    assert tokens == local_count({"model": alias, "messages": MSG})["input_tokens"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "count_tokens" in logged and UPSTREAM_KEY not in logged


def test_a_routed_model_is_counted_locally(
    ant: anthropic.Anthropic, served: tuple[str, MockServer, Gateway]
) -> None:
    mock = served[1]
    mock.reset()
    tokens, headers = _raw(ant, "auto")
    assert (headers["x-routeguard-count"], headers["x-routeguard-count-reason"]) == (
        "local", "route")  # fmt: skip
    assert tokens == local_count({"model": "auto", "messages": MSG})["input_tokens"]
    assert mock.requests == []


def test_a_model_whose_deployments_all_cool_down_is_counted_locally(
    ant: anthropic.Anthropic, served: tuple[str, MockServer, Gateway]
) -> None:
    _, mock, gw = served
    (dep,) = gw.balancers["claude-cooling"].deployments
    for _ in range(gw.config.router.allowed_fails + 1):
        gw.fallback.cooldowns.failure(dep)
    mock.reset()
    _, headers = _raw(ant, "claude-cooling")
    assert headers["x-routeguard-count-reason"] == "unavailable" and mock.requests == []


def test_upstream_refusals_come_back_in_anthropic_shape_without_secrets(
    ant: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="role") as bad:  # the upstream's 400
        ant.messages.count_tokens(model="claude", messages=[{"role": "bot", "content": "x"}])  # type: ignore[misc,list-item]
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as limited:
        ant.messages.count_tokens(model="claude-429", messages=MSG)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    # the deployment's own key refused upstream: not the caller's fault, and never echoed
    with pytest.raises(anthropic.APIStatusError) as auth:
        ant.messages.count_tokens(model="claude-badkey", messages=MSG)
    assert auth.value.status_code == 502
    assert "bad-key" not in auth.value.response.text
    assert UPSTREAM_KEY not in auth.value.response.text


def test_scope_and_errors_are_anthropic_shaped(
    ant: anthropic.Anthropic, served: tuple[str, MockServer, Gateway]
) -> None:
    url, mock, gw = served
    with pytest.raises(anthropic.NotFoundError) as missing:
        ant.messages.count_tokens(model="nope", messages=MSG)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.0\.role"):  # local check
        ant.messages.count_tokens(model="gpt", messages=[{"role": "tool", "content": "x"}])  # type: ignore[misc,list-item]
    key, _ = gw.keys.create(KeySpec(models=["other"]))
    mock.reset()
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as scoped:
        with pytest.raises(anthropic.NotFoundError):  # out of scope: as if missing
            scoped.messages.count_tokens(model="claude", messages=MSG)
        ok = scoped.messages.with_raw_response.count_tokens(model="other", messages=MSG)
    assert ok.parse().input_tokens > 0 and ok.headers["x-routeguard-count"] == "upstream"
    assert [r.model for r in mock.requests] == ["sim-other"]
    assert key not in str(mock.requests[0].headers)  # the caller's key never goes upstream


def test_counts_against_the_keys_rpm_not_its_tpm_or_spend(
    served: tuple[str, MockServer, Gateway],
) -> None:
    url, _, gw = served
    key, rec = gw.keys.create(KeySpec(rpm=3, tpm=5, max_budget=1.0))
    big: Any = [{"role": "user", "content": "word " * 400}]  # far over the key's tpm
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as c:
        for model in ("claude", "gpt", "claude"):
            assert c.messages.count_tokens(model=model, messages=big).input_tokens > 5
        with pytest.raises(anthropic.RateLimitError) as limited:
            c.messages.count_tokens(model="gpt", messages=big)
    assert limited.value.body["type"] == "error"  # type: ignore[index]
    assert "rpm" in limited.value.message or "requests" in limited.value.message
    account = gw.budget.key_account(gw.keys.get(rec.key_id))
    assert account is not None
    backend = gw.budget.backend
    assert asyncio.run(backend.spent(account)) == 0
    assert asyncio.run(backend.reserved(account)) == 0


def test_a_customers_region_picks_the_deployment_that_counts(mock: MockServer) -> None:
    params = {"api_base": mock.url, "api_key": "k"}
    gw = Gateway.from_config({
        "model_list": [
            {"model_name": "claude", "litellm_params": {
                "model": "anthropic/sim-eu", "region_name": "eu", **params}},
            {"model_name": "claude", "litellm_params": {
                "model": "anthropic/sim-us", "region_name": "us", **params}},
            {"model_name": "eu-only", "litellm_params": {
                "model": "anthropic/sim-eu-only", "region_name": "eu", **params}},
        ],
        "general_settings": {"master_key": "sk-master"},
    })  # fmt: skip
    try:
        with ServerThread(create_app(gw)) as s:
            for user, region in (("anna", "eu"), ("kai", "us")):
                status, out = call(s.url, "POST", "/customer/new",
                                   {"user_id": user, "allowed_model_region": region},
                                   key="sk-master")  # fmt: skip
                assert status == 200, out
            mock.reset()
            with anthropic.Anthropic(base_url=s.url, api_key="sk-master", max_retries=0) as c:
                for _ in range(N):  # a filter that did nothing would pass with p = 2^-N
                    c.messages.count_tokens(
                        model="claude", messages=MSG, extra_body={"metadata": {"user_id": "anna"}}
                    )
                with pytest.raises(anthropic.BadRequestError, match="region"):  # none there
                    c.messages.count_tokens(
                        model="eu-only", messages=MSG, extra_body={"metadata": {"user_id": "kai"}}
                    )
    finally:
        gw.keys.close()
    assert [r.model for r in mock.requests] == ["sim-eu"] * N
    assert all("metadata" not in r.body for r in mock.requests)  # count_tokens takes none
