"""Bedrock calls are charged: Bedrock model ids (inference-profile geographies, ARNs,
version suffixes) find their list price, and a call through the simulated Bedrock, chat or
stream, is charged its usage at that price to the proxy-wide budget."""

from __future__ import annotations

from typing import Any

import pytest

from routeguard.budget.accounts import usd_to_micros
from routeguard.config.litellm import PROXY_ACCOUNT
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.mock.bedrock_wire import SIM_AWS_ACCESS_KEY_ID, SIM_AWS_SECRET_ACCESS_KEY
from routeguard.pricing import LIST_PRICES, list_price
from routeguard.result import ChatResult

CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "eu.amazon.nova-pro-v1:0"
PROFILE_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
)


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        (f"bedrock/{CLAUDE}", "claude-3-5-haiku"),
        ("bedrock/converse/anthropic.claude-3-5-sonnet-20240620-v1:0", "claude-3-5-sonnet"),
        (PROFILE_ARN, "claude-sonnet-4"),
        ("us.anthropic.claude-opus-4-5-20251101-v1:0", "claude-opus-4-5"),
        (NOVA, "amazon.nova-pro"),
        ("amazon.nova-micro-v1:0", "amazon.nova-micro"),
        ("amazon.titan-embed-text-v2:0", "amazon.titan-embed-text-v2"),
        ("cohere.embed-multilingual-v3", "cohere.embed-multilingual-v3"),
        ("us.meta.llama3-1-70b-instruct-v1:0", "meta.llama3-1-70b-instruct"),
        ("meta.llama3-70b-instruct-v1:0", "meta.llama3-70b-instruct"),
        ("mistral.mistral-7b-instruct-v0:2", "mistral.mistral-7b-instruct"),
        ("mistral.mistral-large-2407-v1:0", "mistral.mistral-large-2407"),
    ],
)
def test_bedrock_ids_find_their_list_price(model: str, entry: str) -> None:
    assert list_price(model) == LIST_PRICES[entry]


def test_other_names_keep_their_price_and_unknown_bedrock_models_have_none() -> None:
    assert list_price("gpt-4.1-mini") == LIST_PRICES["gpt-4.1-mini"]  # a dot, not a publisher
    assert list_price("anthropic/claude-3-5-haiku-20241022") == LIST_PRICES["claude-3-5-haiku"]
    assert list_price("ai21.jamba-1-5-large-v1:0") is None
    assert list_price("us.amazon.nova-unreleased-v1:0") is None


def _bedrock(model: str, base: str) -> dict[str, Any]:
    return {"model": f"bedrock/{model}", "aws_bedrock_runtime_endpoint": base,
            "aws_region_name": "us-east-1", "aws_access_key_id": SIM_AWS_ACCESS_KEY_ID,
            "aws_secret_access_key": SIM_AWS_SECRET_ACCESS_KEY}  # fmt: skip


def _expected(result: ChatResult, entry: str) -> float:
    per_input, per_output = LIST_PRICES[entry]
    usage = result.usage
    return (usage["prompt_tokens"] * per_input + usage["completion_tokens"] * per_output) / 1e6


async def test_a_bedrock_call_is_charged_its_list_price(mock: MockServer) -> None:
    gw = Gateway.from_config(
        {
            "model_list": [
                {"model_name": "claude", "litellm_params": _bedrock(CLAUDE, mock.url)},
                {"model_name": "nova", "litellm_params": _bedrock(NOVA, mock.url)},
            ],
            "litellm_settings": {"max_budget": 100},
        }
    )
    assert gw.budget is not None
    try:
        charged = []
        for alias, entry, stream in [("claude", "claude-3-5-haiku", False),
                                     ("nova", "amazon.nova-pro", True)]:  # fmt: skip
            (dep,) = gw.config.deployments[alias]
            assert (dep.input_cost_per_mtok, dep.output_cost_per_mtok) == LIST_PRICES[entry]
            request = {"model": alias, "messages": [{"role": "user", "content": "Hello"}]}
            if stream:
                request |= {"stream": True, "stream_options": {"include_usage": True}}
            result = await gw.chat_result(request, accounts=[PROXY_ACCOUNT])
            if stream:
                assert result.stream is not None
                assert [c async for c in result.stream]
            assert result.usage["prompt_tokens"] > 0 and result.usage["completion_tokens"] > 0
            assert result.cost == pytest.approx(_expected(result, entry), rel=1e-9)
            assert result.cost > 0
            charged.append(usd_to_micros(result.cost, round_up=True))
        assert await gw.budget.backend.spent(PROXY_ACCOUNT) == sum(charged)
    finally:
        await gw.aclose()
