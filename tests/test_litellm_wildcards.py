"""LiteLLM's wildcard deployments, default and content-policy fallbacks, against the
simulated upstream: a ``model_name`` pattern serves any name it matches, sending the
requested name upstream; exact aliases and more specific patterns win; the concrete model is
priced by its own name; ``/v1/models`` lists aliases then patterns; a content-policy refusal
moves to ``content_policy_fallbacks`` only."""

from __future__ import annotations

import urllib.request
from typing import Any

import openai
import pytest

from routeguard import config
from routeguard.config.wildcards import Wildcard, compile_pattern, substitute
from routeguard.errors import ConfigError, ContentPolicyViolation, InvalidRequest, ModelNotFound
from routeguard.gateway import MAX_WILDCARD_NAMES, Gateway
from routeguard.mock import MockServer
from routeguard.pricing import LIST_PRICES, list_price
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MSG: Any = [{"role": "user", "content": "hi"}]
MASTER = "sk-master-wild"


def _litellm(url: str, **extra: Any) -> dict[str, Any]:
    oa = {"api_base": url + "/v1", "api_key": "k"}
    an = {"api_base": url, "api_key": "k"}
    return {
        "model_list": [
            {"model_name": "*", "litellm_params": {"model": "openai/*", **oa}},
            {"model_name": "claude-*", "litellm_params": {"model": "anthropic/claude-*", **an}},
            {"model_name": "anthropic/*", "litellm_params": {"model": "anthropic/*", **an}},
            {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/exact-up", **oa}},
        ],
        **extra,
    }


def _last(mock: MockServer) -> tuple[str, str | None]:
    req = mock.requests[-1]
    return req.path, req.model


async def test_a_pattern_serves_every_matching_name_and_exact_aliases_win(
    mock: MockServer,
) -> None:
    gw = Gateway.from_config(_litellm(mock.url))
    try:
        cases = {  # requested -> (upstream path, upstream model)
            "gpt-4o-mini": ("/v1/chat/completions", "exact-up"),  # exact alias beats "*"
            "some-new-model": ("/v1/chat/completions", "some-new-model"),  # "*"
            "claude-3-5-haiku": ("/v1/messages", "claude-3-5-haiku"),  # "claude-*" beats "*"
            "anthropic/claude-x": ("/v1/messages", "claude-x"),  # "anthropic/*"
        }
        for name, expected in cases.items():
            out = await gw.chat({"model": name, "messages": MSG})
            assert isinstance(out, dict) and out["choices"][0]["message"]["content"]
            assert _last(mock) == expected, name
        assert "*" not in gw.config.deployments  # never a literal alias
        models = gw.models()
        assert models[0] == "gpt-4o-mini" and set(models[1:]) == {"*", "claude-*", "anthropic/*"}
    finally:
        await gw.aclose()


def test_the_most_specific_pattern_wins_and_stars_fill_in_order() -> None:
    rx = compile_pattern("fo::*:static::*")
    m = rx.match("fo::hi:static::there")
    assert m is not None and m.groups() == ("hi", "there")
    assert substitute("openai/fo::*:static::*", m.groups()) == "openai/fo::hi:static::there"
    assert substitute("fixed-model", ("x",)) == "fixed-model"
    data = {"model_list": [
        {"model_name": "*", "litellm_params": {"model": "openai/*", "api_key": "k"}},
        {"model_name": "gpt-*", "litellm_params": {"model": "openai/gpt-*", "api_key": "k"}},
        {"model_name": "gpt-4o-*", "litellm_params": {"model": "openai/gpt-4o-*", "api_key": "k"}},
    ]}  # fmt: skip
    cfg = config.load(data, env={})
    assert [w.pattern for w in cfg.wildcards] == ["gpt-4o-*", "gpt-*", "*"]
    first: Wildcard = cfg.wildcards[0]
    assert first.captures("gpt-4o-mini") == ("mini",) and first.captures("gpt-4") is None
    assert first.captures("bad name") is None  # spaces are no model name


def test_a_model_with_more_stars_than_its_pattern_is_an_error_at_its_key() -> None:
    data = {"model_list": [{"model_name": "x-*", "type": "openai", "model": "*-*"}]}
    with pytest.raises(ConfigError) as info:
        config.load(data, env={})
    assert [p.path for p in info.value.problems] == ["model_list[0].model"]


async def test_the_concrete_model_is_priced_by_its_own_name(mock: MockServer) -> None:
    gw = Gateway.from_config(_litellm(mock.url))
    try:
        await gw.chat({"model": "gpt-4o-2024-08-06", "messages": MSG})
        dep = gw.balancers["gpt-4o-2024-08-06"].deployments[0]
        price = LIST_PRICES["gpt-4o"]
        assert (dep.input_cost_per_mtok, dep.output_cost_per_mtok) == pytest.approx(price)
        assert list_price("anthropic/claude-3-5-haiku-20241022") == LIST_PRICES["claude-3-5-haiku"]
        assert list_price("gpt-4o-mini") == LIST_PRICES["gpt-4o-mini"]  # the longest prefix
        assert list_price("totally-unknown") is None
    finally:
        await gw.aclose()


async def test_an_unpriced_wildcard_model_is_refused_only_under_a_budget(
    mock: MockServer,
) -> None:
    cfg = _litellm(mock.url, litellm_settings={"max_budget": 10, "budget_duration": "30d"})
    gw = Gateway.from_config(cfg)
    try:
        with pytest.raises(InvalidRequest, match="no known price") as info:
            await gw.chat({"model": "my-finetune", "messages": MSG})
        assert info.value.status_code == 400 and info.value.param == "model"
        out = await gw.chat({"model": "gpt-4o", "messages": MSG})  # priced: charged
        assert isinstance(out, dict)
        spent = await gw.budget.backend.spent("litellm-proxy")
        assert spent > 0
    finally:
        await gw.aclose()
    # The same model with the price written on the wildcard entry is served.
    cfg = _litellm(mock.url, litellm_settings={"max_budget": 10})
    cfg["model_list"][0]["model_info"] = {
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6,
    }
    gw = Gateway.from_config(cfg)
    try:
        assert isinstance(await gw.chat({"model": "my-finetune", "messages": MSG}), dict)
        dep = gw.balancers["my-finetune"].deployments[0]
        assert dep.input_cost_per_mtok == pytest.approx(1.0)
    finally:
        await gw.aclose()
    # Without a budget, an unpriced model is served (and costs nothing on record).
    gw = Gateway.from_config(_litellm(mock.url))
    try:
        assert isinstance(await gw.chat({"model": "my-finetune", "messages": MSG}), dict)
    finally:
        await gw.aclose()


async def test_names_served_by_patterns_are_bounded(mock: MockServer) -> None:
    gw = Gateway.from_config(_litellm(mock.url))
    try:
        for i in range(MAX_WILDCARD_NAMES + 5):
            assert gw.serves(f"m-{i}")
        assert len(gw._wild) == MAX_WILDCARD_NAMES
        assert "m-0" not in gw.balancers and f"m-{MAX_WILDCARD_NAMES + 4}" in gw.balancers
        assert gw.balancers["m-0"].deployments[0].model == "m-0"  # rebuilt when asked for
        assert not gw.serves("a*b")
    finally:
        await gw.aclose()


async def test_without_a_catch_all_an_unknown_name_is_still_not_found(mock: MockServer) -> None:
    data = _litellm(mock.url)
    data["model_list"] = data["model_list"][1:]
    gw = Gateway.from_config(data)
    try:
        with pytest.raises(ModelNotFound):
            await gw.chat({"model": "gpt-4o", "messages": MSG})
    finally:
        await gw.aclose()


async def test_default_fallbacks_apply_to_aliases_without_their_own(mock: MockServer) -> None:
    oa = {"api_base": mock.url + "/v1", "api_key": "k"}
    data = {
        "model_list": [
            {"model_name": "broken", "litellm_params": {"model": "openai/m-error-500", **oa}},
            {"model_name": "own", "litellm_params": {"model": "openai/m-error-503", **oa}},
            {"model_name": "backup", "litellm_params": {"model": "openai/backup-up", **oa}},
            {"model_name": "other", "litellm_params": {"model": "openai/other-up", **oa}},
            {"model_name": "*", "litellm_params": {"model": "openai/*", **oa}},
        ],
        "router_settings": {"default_fallbacks": ["backup"], "num_retries": 0},
        "litellm_settings": {"fallbacks": [{"own": ["other"]}]},
    }
    gw = Gateway.from_config(data)
    try:
        for requested, served in (("broken", "backup"), ("own", "other"),
                                  ("wild-error-500", "backup")):  # fmt: skip
            result = await gw.chat_result({"model": requested, "messages": MSG})
            assert result.alias == served, requested
    finally:
        await gw.aclose()
    # "nope" would be served by "*": without it, it is an unknown model at the key written
    bad = {**data, "model_list": data["model_list"][:-1],
           "router_settings": {"default_fallbacks": ["nope"]}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        config.load(bad, env={})
    assert [p.path for p in info.value.problems] == ["router_settings.default_fallbacks[0]"]


async def test_content_policy_fallbacks_are_used_only_for_content_refusals(
    mock: MockServer,
) -> None:
    oa = {"api_base": mock.url + "/v1", "api_key": "k"}
    data = {
        "model_list": [
            {"model_name": "strict", "litellm_params": {"model": "openai/m-content-policy", **oa}},
            {"model_name": "lenient", "litellm_params": {"model": "openai/lenient-up", **oa}},
            {"model_name": "down", "litellm_params": {"model": "openai/m-error-500", **oa}},
            {"model_name": "bare", "litellm_params": {"model": "openai/b-content-policy", **oa}},
        ],
        "router_settings": {"num_retries": 0},
        "litellm_settings": {
            "content_policy_fallbacks": [{"strict": ["lenient"]}, {"down": ["lenient"]}],
        },
    }
    gw = Gateway.from_config(data)
    try:
        result = await gw.chat_result({"model": "strict", "messages": MSG})
        assert result.alias == "lenient" and result.attempts == 2
        with pytest.raises(Exception) as info:  # a 500 is no content refusal
            await gw.chat({"model": "down", "messages": MSG})
        assert not isinstance(info.value, ContentPolicyViolation)
        with pytest.raises(ContentPolicyViolation) as refused:  # no chain: the 400 itself
            await gw.chat({"model": "bare", "messages": MSG})
        assert refused.value.status_code == 400
        assert refused.value.code == "content_policy_violation"
    finally:
        await gw.aclose()


def test_the_proxy_lists_patterns_and_serves_wildcard_names_to_the_sdk(
    mock: MockServer,
) -> None:
    data = _litellm(mock.url, general_settings={"master_key": MASTER})
    gw = Gateway.from_config(data)
    with ServerThread(create_app(gw)) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as client:
            ids = [m.id for m in client.models.list()]
            assert ids[0] == "gpt-4o-mini" and set(ids[1:]) == {"*", "claude-*", "anthropic/*"}
            out = client.chat.completions.create(model="o3-mini", messages=MSG)
            assert out.choices[0].message.content
            assert _last(mock) == ("/v1/chat/completions", "o3-mini")
            assert client.models.retrieve("claude-3-7-sonnet").id == "claude-3-7-sonnet"
            with pytest.raises(openai.NotFoundError):
                client.models.retrieve("a*b")
            stream = client.chat.completions.create(model="mistral-tiny", messages=MSG, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        # Callers choose wildcard names: metrics label them by their pattern (bounded).
        req = urllib.request.Request(srv.url + "/metrics",
                                     headers={"authorization": f"Bearer {MASTER}"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
        assert 'gen_ai_request_model="*"' in text
        assert "o3-mini" not in text and "mistral-tiny" not in text


async def test_a_key_may_be_scoped_to_a_pattern(mock: MockServer) -> None:
    from routeguard.budget.keys import KeySpec
    from routeguard.errors import ModelNotFound

    gw = Gateway.from_config(_litellm(mock.url))
    try:
        _, rec = gw.keys.create(KeySpec(models=["claude-*"]))
        out = await gw.chat_result({"model": "claude-3-5-haiku", "messages": MSG}, key=rec)
        assert out.alias == "claude-3-5-haiku"
        with pytest.raises(ModelNotFound):  # out of scope: as if missing
            await gw.chat_result({"model": "gpt-4o", "messages": MSG}, key=rec)
    finally:
        await gw.aclose()


@pytest.mark.parametrize(
    ("status", "error", "refusal"),
    [
        (400, {"code": "content_policy_violation", "message": "rejected"}, True),  # OpenAI
        (
            400,
            {
                "code": "content_filter",
                "message": "The response was filtered due to the "
                "prompt triggering Azure OpenAI's content management policy.",
            },
            True,
        ),  # Azure
        (400, {"message": "Your request was rejected as a result of our safety system."}, True),
        (400, {"code": "invalid_value", "message": "temperature must be <= 2"}, False),
        (500, {"code": "content_filter", "message": "server error"}, False),  # not a refusal
    ],
)
def test_content_policy_refusals_are_recognised(
    status: int, error: dict[str, Any], refusal: bool
) -> None:
    from routeguard.providers.anthropic import ERRORS as ANTHROPIC
    from routeguard.providers.openai import ERRORS as OPENAI

    for fmt in (OPENAI, ANTHROPIC):
        err = fmt.from_body(status, {"error": error})
        assert isinstance(err, ContentPolicyViolation) is refusal, (fmt, error)
        if refusal:
            assert (err.status_code, err.code, err.fallback_ok) == (
                400,
                "content_policy_violation",
                False,
            )
