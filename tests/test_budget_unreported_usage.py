"""An upstream that answers without token usage (some OpenAI-compatible servers), or with
counts no provider can mean (negative, not integers), is still charged: an estimate of the
prompt and of the answer it sent, within the request's bound, never nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from asgi_request import body_of, post_scope
from routeguard.budget.keys import KeySpec
from routeguard.deployment import Deployment
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.mock.bedrock_wire import SIM_AWS_ACCESS_KEY_ID, SIM_AWS_SECRET_ACCESS_KEY
from routeguard.relay import billable_usage
from routeguard.server import create_app

PRICE = {"api_key": "k", "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}
CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
MSG = [{"role": "user", "content": "tell me something about budgets"}]


def _cfg(url: str) -> dict[str, Any]:
    aws = {
        "aws_region_name": "us-east-1",
        "aws_access_key_id": SIM_AWS_ACCESS_KEY_ID,
        "aws_secret_access_key": SIM_AWS_SECRET_ACCESS_KEY,
        "headers": {"x-mock-behaviour": "no-usage"},  # its model id is fixed: by header
    }
    models = [
        ("oai", "openai", "sim-no-usage", url + "/v1", {}),
        ("an", "anthropic", "sim-no-usage", url, {}),
        ("g", "gemini", "sim-no-usage", url, {}),
        ("br", "bedrock", CLAUDE, url, aws),
    ]
    return {
        "model_list": [
            {**PRICE, "model_name": name, "type": kind, "model": model, "api_base": base, **extra}
            for name, kind, model, base, extra in models
        ],
        "router_settings": {"num_retries": 0},
        "server": {"master_key": "sk-admin"},
    }


@pytest.mark.parametrize("alias", ["oai", "an", "g", "br"])
async def test_an_answer_without_usage_is_charged_an_estimate(
    mock: MockServer, caplog: pytest.LogCaptureFixture, alias: str
) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        _, key = gw.keys.create(KeySpec(max_budget=10.0))
        account = gw.budget.key_account(key)
        assert account is not None
        request = {"model": alias, "messages": MSG, "max_tokens": 50}
        with caplog.at_level(logging.WARNING, logger="routeguard"):
            for _ in range(2):
                result = await gw.chat_result(dict(request), key=key)
                assert "prompt_tokens" not in result.usage  # the upstream said nothing
        spent = await gw.budget.backend.spent(account)
        dep = result.deployment
        most = dep.cost(4 * len(str(MSG)), 50) * 1e6 * 2  # well above the two estimates
        assert 0 < spent <= most
        assert await gw.budget.backend.reserved(account) == 0
        warned = [r for r in caplog.records if "without usable token counts" in r.getMessage()]
        assert len(warned) == 1 and dep.id in warned[0].getMessage()  # once a deployment
    finally:
        await gw.aclose()


async def test_the_proxy_charges_an_answer_without_usage(mock: MockServer) -> None:
    """The proxy's deferred charge (made after the answer is written) estimates too."""
    gw = Gateway.from_config(_cfg(mock.url))
    app = create_app(gw)
    token, key = gw.keys.create(KeySpec(max_budget=10.0))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        body = {"model": "oai", "messages": MSG, "max_tokens": 50}
        await app(post_scope("/v1/chat/completions", token), body_of(body), send)
        assert sent[0]["status"] == 200
        account = gw.budget.key_account(key)
        assert account is not None
        assert await gw.budget.backend.spent(account) > 0
        assert await gw.budget.backend.reserved(account) == 0
    finally:
        await gw.aclose()


def _dep(provider: str = "openai") -> Deployment:
    return Deployment("d", "m", provider, "sim-m", "", None, input_cost_per_mtok=1.0)


@pytest.mark.parametrize(
    "usage",
    [
        {},
        {"prompt_tokens": -5_000_000, "completion_tokens": 10},
        {"prompt_tokens": 10, "completion_tokens": -1},
        {"prompt_tokens": True, "completion_tokens": 3},
        {"completion_tokens": 7},
        {"prompt_tokens": 0, "total_tokens": 0},
        {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    ],
)
def test_counts_no_provider_can_mean_are_estimated(usage: dict[str, Any]) -> None:
    """A missing, negative or boolean count is replaced by its estimate (a reported
    prompt of 0 too, as for streams); a usable count is kept; the completion estimate never
    passes the request's bound."""
    request = {"model": "m", "messages": MSG, "max_tokens": 20}
    billed = billable_usage(usage, request, _dep(), 4096, sent_tokens=500)
    prompt, completion = billed["prompt_tokens"], billed["completion_tokens"]
    assert type(prompt) is int and prompt > 0
    assert type(completion) is int and 0 <= completion <= 20
    given = usage.get("completion_tokens")
    if type(given) is int and given >= 0:  # a usable count kept (the prompt estimated)
        assert completion == given
    else:
        assert completion == 20  # the sent estimate, cut to max_tokens


def test_usable_counts_are_charged_as_reported() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}
    request = {"model": "m", "messages": MSG}
    assert billable_usage(usage, request, _dep(), 4096, sent_tokens=99) is usage
