"""Faithful parameters: every OpenAI request field is translated for the target provider or
refused with a 400 naming it and the provider; ``drop_params`` (per deployment, or
``router_settings`` / LiteLLM's ``litellm_settings``) drops such fields instead and the
response names them in ``x-routeguard-dropped-params``. Checked on what reaches the
simulated upstream."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from routeguard import config
from routeguard.errors import UpstreamBadRequest
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MSG: Any = [{"role": "user", "content": "hello"}]


def _cfg(url: str, drop: bool | None = None, global_drop: bool = False) -> dict[str, Any]:
    extra = {} if drop is None else {"drop_params": drop}
    return {
        "model_list": [
            {"model_name": "o", "type": "openai", "model": "sim-o", "api_base": url + "/v1",
             "api_key": "k", **extra},
            {"model_name": "a", "type": "anthropic", "model": "sim-a", "api_base": url,
             "api_key": "k", **extra},
            {"model_name": "g", "type": "gemini", "model": "sim-g", "api_base": url,
             "api_key": "k", **extra},
        ],
        "router_settings": {"num_retries": 0, "drop_params": global_drop},
    }  # fmt: skip


async def _sent(mock: MockServer, gw: Gateway, alias: str, **params: Any) -> dict[str, Any]:
    """The body the upstream received for one request with ``params``."""
    await gw.chat_result({"model": alias, "messages": MSG, **params})
    body = mock.requests[-1].body
    assert isinstance(body, dict)
    return body


async def test_each_provider_gets_what_it_can_honour(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        o = await _sent(mock, gw, "o", seed=7, logprobs=True, reasoning_effort="low")
        assert (o["seed"], o["logprobs"], o["reasoning_effort"]) == (7, True, "low")
        a = await _sent(mock, gw, "a", max_tokens=3000, reasoning_effort="medium", stop=["x"],
                        user="u1", top_p=None)  # fmt: skip
        assert a["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert a["stop_sequences"] == ["x"] and a["metadata"] == {"user_id": "u1"}
        g = await _sent(mock, gw, "g", seed=7, reasoning_effort="high", stop="x")
        cfg = g["generationConfig"]
        assert cfg["seed"] == 7 and cfg["thinkingConfig"] == {"thinkingBudget": 4096}
        assert cfg["stopSequences"] == ["x"]
        harmless = await _sent(mock, gw, "a", store=True, service_tier="auto")
        assert "store" not in harmless  # bookkeeping fields never reach other providers
    finally:
        await gw.aclose()


@pytest.mark.parametrize(
    ("alias", "params", "field"),
    [
        ("a", {"seed": 1}, "seed"),
        ("a", {"logprobs": True}, "logprobs"),
        ("a", {"presence_penalty": 0.5}, "presence_penalty"),
        ("g", {"top_logprobs": 2}, "top_logprobs"),
        ("g", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("g", {"parallel_tool_calls": False}, "parallel_tool_calls"),
        ("a", {"reasoning_effort": "extreme"}, "reasoning_effort"),
        ("a", {"reasoning_effort": "high", "max_tokens": 500}, "max_tokens"),
        ("a", {"reasoning_effort": "low", "max_tokens": 4000, "temperature": 0.2},
         "reasoning_effort"),
    ],
)  # fmt: skip
async def test_what_cannot_be_honoured_is_refused_by_name(
    mock: MockServer, alias: str, params: dict[str, Any], field: str
) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    seen = len(mock.requests)
    try:
        with pytest.raises(UpstreamBadRequest) as info:
            await gw.chat_result({"model": alias, "messages": MSG, **params})
        assert info.value.param == field and info.value.status_code == 400
        assert ("anthropic" if alias == "a" else "gemini") in info.value.message
        assert len(mock.requests) == seen  # nothing was sent
    finally:
        await gw.aclose()


@pytest.mark.parametrize("where", ["deployment", "router_settings"])
async def test_drop_params_drops_and_says_so(mock: MockServer, where: str) -> None:
    cfg = _cfg(mock.url, drop=True) if where == "deployment" else _cfg(mock.url, global_drop=True)
    gw = Gateway.from_config(cfg)
    try:
        result = await gw.chat_result({"model": "a", "messages": MSG, "seed": 3, "logprobs": True})
        assert result.dropped == ("seed", "logprobs") and result.response
        body = mock.requests[-1].body
        assert isinstance(body, dict) and "seed" not in body and "logprobs" not in body
        ok = await gw.chat_result({"model": "o", "messages": MSG, "seed": 3})
        assert ok.dropped == ()  # openai honours it
    finally:
        await gw.aclose()


def test_the_proxy_names_dropped_params_in_a_header(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url, drop=True))
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        bias = {"50256": -100}
        raw = c.chat.completions.with_raw_response.create(model="g", messages=MSG, logit_bias=bias)
        assert raw.headers["x-routeguard-dropped-params"] == "logit_bias"
        assert raw.parse().choices[0].message.content
        raw = c.chat.completions.with_raw_response.create(model="g", messages=MSG, seed=1)
        assert "x-routeguard-dropped-params" not in raw.headers
    strict = Gateway.from_config(_cfg(mock.url))
    with (
        ServerThread(create_app(strict)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="g", messages=MSG, logit_bias={"50256": -100})
        assert info.value.body is not None and "logit_bias" in str(info.value.body)


def test_litellm_drop_params_maps_to_ours() -> None:
    data = {"model_list": [
        {"model_name": "a", "litellm_params": {"model": "anthropic/claude", "api_key": "k"}},
        {"model_name": "b", "litellm_params": {"model": "anthropic/claude", "api_key": "k",
                                               "drop_params": False}}],
        "litellm_settings": {"drop_params": True}}  # fmt: skip
    cfg = config.load(data, env={})
    assert cfg.deployments["a"][0].drop_params is True
    assert cfg.deployments["b"][0].drop_params is False
