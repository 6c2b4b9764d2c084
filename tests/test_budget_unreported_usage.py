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
from routeguard.providers.anthropic import response_from_anthropic, usage_from_anthropic
from routeguard.providers.converse import usage_from_converse
from routeguard.providers.gemini import response_from_gemini, usage_from_gemini
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
        ("oai-usage", "openai", "sim-m", url + "/v1", {}),
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
        assert result.billed is not None  # reports cost it at what was charged
        assert abs(2 * result.cost * 1e6 - spent) <= 2  # two requests, rounded up each
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
    """A missing, negative, boolean or zero count is replaced by its estimate; a usable
    count is kept; the completion estimate never passes the request's bound."""
    request = {"model": "m", "messages": MSG, "max_tokens": 20}
    billed = billable_usage(usage, request, _dep(), 4096, sent_tokens=500)
    prompt, completion = billed["prompt_tokens"], billed["completion_tokens"]
    assert type(prompt) is int and prompt > 0
    assert type(completion) is int and 0 <= completion <= 20
    given = usage.get("completion_tokens")
    if type(given) is int and given > 0:  # a usable count kept (the prompt estimated)
        assert completion == given
    else:
        assert completion == 20  # the sent estimate, cut to max_tokens


def test_usable_counts_are_charged_as_reported() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    request = {"model": "m", "messages": MSG}
    assert billable_usage(usage, request, _dep(), 4096, sent_tokens=99) is usage


ESSAY = "word " * 2000  # ~2,000 tokens of answer


def _openai(usage: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": ESSAY}
    choice = {"index": 0, "finish_reason": "stop", "message": message}
    return {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice], **usage}


ZEROS = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
GEMINI_TEXT = {"content": {"parts": [{"text": ESSAY}], "role": "model"}, "finishReason": "STOP"}
ANSWERS = {
    "openai zeros": lambda: _openai({"usage": ZEROS}),
    "anthropic empty usage": lambda: response_from_anthropic(
        {
            "id": "msg",
            "model": "c",
            "content": [{"type": "text", "text": ESSAY}],
            "stop_reason": "end_turn",
            "usage": {},
        }
    ),
    "gemini without a candidates count": lambda: response_from_gemini(
        {"candidates": [GEMINI_TEXT], "usageMetadata": {"promptTokenCount": 12}}, "g"
    ),
}


@pytest.mark.parametrize("kind", list(ANSWERS))
async def test_made_up_zero_counts_do_not_make_an_answer_free(mock: MockServer, kind: str) -> None:
    """Zeros where the counts should be (an OpenAI-compatible server's, or a translation's
    missing fields) are estimated: a long answer is charged as one."""
    cfg = _cfg(mock.url)
    cfg["model_list"][0].update(input_cost_per_mtok=0.0, output_cost_per_mtok=1_000_000.0)
    gw = Gateway.from_config(cfg)
    answer = ANSWERS[kind]()

    async def chat(request: Any, dep: Any, timeout: float) -> Any:
        return answer

    gw._providers["openai"].chat = chat  # type: ignore[method-assign]
    try:
        _, key = gw.keys.create(KeySpec(max_budget=1e9))
        account = gw.budget.key_account(key)
        assert account is not None
        await gw.chat_result({"model": "oai", "messages": MSG, "max_tokens": 1000}, key=key)
        # $1 an output token: the answer's ~2,000 tokens, within the bound of 1,000
        assert await gw.budget.backend.spent(account) == 1000 * 1_000_000
    finally:
        await gw.aclose()


async def test_embeddings_reported_as_zero_tokens_are_not_free(mock: MockServer) -> None:
    cfg = _cfg(mock.url)
    cfg["model_list"][0].update(input_cost_per_mtok=1_000_000.0)
    gw = Gateway.from_config(cfg)

    async def embed(request: Any, dep: Any, timeout: float) -> Any:
        data = [{"object": "embedding", "index": 0, "embedding": [0.1]}]
        return {"object": "list", "model": "e", "data": data, "usage": dict(ZEROS)}

    gw._providers["openai"].embed = embed  # type: ignore[method-assign]
    try:
        _, key = gw.keys.create(KeySpec(max_budget=1e9))
        account = gw.budget.key_account(key)
        assert account is not None
        await gw.embeddings({"model": "oai", "input": ESSAY}, key=key)
        assert await gw.budget.backend.spent(account) > 0
    finally:
        await gw.aclose()


@pytest.mark.parametrize(
    ("translate", "counts"),
    [
        (usage_from_anthropic, {}),
        (
            usage_from_anthropic,
            {"input_tokens": 9, "cache_read_input_tokens": -8, "output_tokens": 5},
        ),
        (usage_from_anthropic, {"input_tokens": 9}),
        (usage_from_anthropic, {"input_tokens": 9, "output_tokens": True}),
        (usage_from_converse, {"inputTokens": 9, "cacheWriteInputTokens": -1, "outputTokens": 5}),
        (usage_from_converse, {"outputTokens": 5}),
        (usage_from_gemini, {"promptTokenCount": 12}),
        (
            usage_from_gemini,
            {"promptTokenCount": 12, "candidatesTokenCount": 5, "thoughtsTokenCount": -4},
        ),
    ],
)
def test_translations_carry_no_usage_without_usable_counts(translate: Any, counts: Any) -> None:
    """A translated answer carries the provider's counts only when they are counts: a
    missing input or output count, or a negative part (summed into the prompt, it would
    lower the charge), gives no usage, which the gateway then estimates."""
    assert translate(counts) is None


def test_translations_keep_usable_counts() -> None:
    counted = usage_from_anthropic(
        {"input_tokens": 9, "cache_read_input_tokens": 100, "output_tokens": 5}
    )
    assert counted is not None and counted["prompt_tokens"] == 109
    assert counted["completion_tokens"] == 5
    counted = usage_from_gemini({"promptTokenCount": 12, "candidatesTokenCount": 5})
    assert counted is not None and (counted["prompt_tokens"], counted["total_tokens"]) == (12, 17)


async def test_an_unbudgeted_answer_without_usage_is_costed_at_its_estimate(
    mock: MockServer,
) -> None:
    """Without any budget the estimate is still what reports cost the answer at (spend
    records, request log, metrics read ``ChatResult.cost``), streamed or not."""
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        request = {"model": "oai", "messages": MSG, "max_tokens": 50}
        result = await gw.chat_result(dict(request))
        assert result.billed is not None and result.cost > 0
        streamed = await gw.chat_result({**request, "stream": True})
        assert streamed.stream is not None
        async for _ in streamed.stream:
            pass
        assert streamed.billed is not None and streamed.cost > 0
        reported = await gw.chat_result({**request, "model": "oai-usage"})
        assert reported.billed is None and reported.cost > 0
    finally:
        await gw.aclose()
