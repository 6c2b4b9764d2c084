"""The cache layer inside the gateway and the proxy: hits skip upstream and cost nothing,
keys respect tenant, parameters and conversation context, streams replay and get stored."""

from __future__ import annotations

from typing import Any

import openai

from embedders import WordsEmbedder
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread


def _cfg(url: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 1.0}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "cached", "model": "sim-cached"},
            {**dep, "model_name": "plain", "model": "sim-plain"},
        ],
        "routes": {"cached": {"cache": {"enabled": True, "threshold": 0.8}}},
    }


def _upstream(mock: MockServer, model: str) -> int:
    return sum(1 for r in mock.requests if r.model == model)


def _msg(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_hit_skips_upstream_and_costs_nothing(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        req = {"model": "cached", "messages": _msg("what is the tallest mountain on earth")}
        before = _upstream(mock, "sim-cached")
        first = await gw.chat_result(dict(req))
        assert first.cache == "miss" and first.cost > 0
        second = await gw.chat_result(dict(req))
        assert second.cache == "hit" and second.cost == 0.0 and second.cache_score == 1.0
        assert _upstream(mock, "sim-cached") == before + 1
        assert first.response is not None and second.response is not None
        content = first.response["choices"][0]["message"]["content"]
        assert second.response["choices"][0]["message"]["content"] == content
        assert second.response["id"] != first.response["id"]
        para = await gw.chat_result(
            {"model": "cached", "messages": _msg("tallest mountain on earth, what is it")}
        )
        assert para.cache == "hit" and para.cache_score is not None and para.cache_score < 1.0
        plain = await gw.chat_result({**req, "model": "plain"})
        assert plain.cache == "off"
    finally:
        await gw.aclose()


async def test_key_respects_params_tenant_and_context(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        base = {"model": "cached", "messages": _msg("how do I install it")}
        assert (await gw.chat_result(dict(base))).cache == "miss"
        assert (await gw.chat_result(dict(base))).cache == "hit"
        assert (await gw.chat_result({**base, "temperature": 1.5})).cache == "miss"
        assert (await gw.chat_result(dict(base), tenant="other")).cache == "miss"
        follow_up = {
            "model": "cached",
            "messages": [
                {"role": "user", "content": "tell me about rust"},
                {"role": "assistant", "content": "Rust is a language."},
                {"role": "user", "content": "how do I install it"},
            ],
        }
        assert (await gw.chat_result(follow_up)).cache == "miss"
        assert (await gw.chat_result(dict(base), use_cache=False)).cache == "off"
    finally:
        await gw.aclose()


async def test_streams_are_stored_and_replayed(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        req = {"model": "cached", "messages": _msg("name three prime numbers"), "stream": True}
        miss = await gw.chat_result(dict(req))
        assert miss.cache == "miss" and miss.stream is not None
        text = "".join(
            [
                c["choices"][0]["delta"].get("content") or ""
                async for c in miss.stream
                if c["choices"]
            ]
        )
        hit = await gw.chat_result({**req, "stream": False})
        assert hit.cache == "hit" and hit.response is not None
        assert hit.response["choices"][0]["message"]["content"] == text
        replay = await gw.chat_result(dict(req))
        assert replay.cache == "hit" and replay.stream is not None
        again = "".join(
            [
                c["choices"][0]["delta"].get("content") or ""
                async for c in replay.stream
                if c["choices"]
            ]
        )
        assert again == text
    finally:
        await gw.aclose()


def test_proxy_reports_cache_and_honours_no_cache(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    with (
        ServerThread(create_app(gw)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        msgs: Any = _msg("which planet is largest")
        first = client.chat.completions.with_raw_response.create(model="cached", messages=msgs)
        assert first.headers["x-routeguard-cache"] == "miss"
        second = client.chat.completions.with_raw_response.create(model="cached", messages=msgs)
        assert second.headers["x-routeguard-cache"] == "hit"
        assert second.headers["x-routeguard-attempts"] == "0"
        forced = client.chat.completions.with_raw_response.create(
            model="cached", messages=msgs, extra_headers={"cache-control": "no-cache"}
        )
        assert forced.headers["x-routeguard-cache"] == "off"
        streamed = client.chat.completions.create(model="cached", messages=msgs, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text == second.parse().choices[0].message.content
