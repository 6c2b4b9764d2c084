"""Per-route input limits (``routes.<alias>.max_input_bytes``): an input over its route's
limit is refused with 413 in the caller's protocol before the budget, the embedder, the
cache, the router or any upstream sees it; other routes keep the global body limit."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from embedders import WideWordsEmbedder
from routeguard.config import ConfigError, load
from routeguard.errors import RequestTooLarge
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-limits"
LIMIT = 4_000


def _cfg(url: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    return {
        "model_list": [
            {**dep, "model_name": "small", "model": "sim-small"},
            {**dep, "model_name": "big", "model": "sim-big"},
            {**dep, "model_name": "vec", "model": "sim-vec"},
        ],
        "cache": {"enabled": True},
        "routes": {
            "small": {"max_input_bytes": LIMIT},
            "vec": {"max_input_bytes": LIMIT},
            "auto": {"mode": "routed", "cheap": "small", "strong": "big", "threshold": 0.0,
                     "max_input_bytes": LIMIT},
        },
        "server": {"master_key": MASTER},
    }  # fmt: skip


def _ask(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def test_over_the_limit_is_refused_before_any_work(mock: MockServer) -> None:
    embedder = WideWordsEmbedder()
    gw = Gateway.from_config(_cfg(mock.url), embedder=embedder)
    try:
        await gw.warm_up()
        calls, seen = embedder.calls, len(mock.requests)
        for model in ("small", "auto"):
            with pytest.raises(RequestTooLarge) as info:
                await gw.chat_result(_ask(model, "word " * LIMIT))
            assert info.value.status_code == 413 and f"'{model}'" in str(info.value)
        with pytest.raises(RequestTooLarge):
            await gw.embeddings({"model": "vec", "input": ["x" * (LIMIT + 1)]})
        assert embedder.calls == calls  # no embedding, cache lookup or routing
        assert len(mock.requests) == seen  # no upstream call
        # Under the limit, and on a route without one, the same text is served.
        assert (await gw.chat_result(_ask("small", "word " * 100))).response
        assert (await gw.chat_result(_ask("big", "word " * LIMIT))).response
        assert embedder.calls > calls and len(mock.requests) > seen  # the counters do count
    finally:
        await gw.aclose()


def test_the_proxy_answers_413_in_the_callers_protocol(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WideWordsEmbedder())
    with ServerThread(create_app(gw)) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c:
            with pytest.raises(openai.APIStatusError) as info:
                c.chat.completions.create(**_ask("small", "x" * (LIMIT + 100)))
            assert info.value.status_code == 413
            assert isinstance(info.value.body, dict)
            assert info.value.body["code"] == "request_too_large"
        with anthropic.Anthropic(base_url=srv.url, api_key=MASTER, max_retries=0) as ant:
            with pytest.raises(anthropic.APIStatusError) as ainfo:
                ant.messages.create(max_tokens=5, **_ask("small", "x" * (LIMIT + 100)))
            assert ainfo.value.status_code == 413
            assert isinstance(ainfo.value.body, dict) and ainfo.value.body["type"] == "error"


@pytest.mark.parametrize("bad", [0, -5])
def test_a_limit_must_be_positive(bad: int) -> None:
    cfg = _cfg("http://127.0.0.1:9")
    cfg["routes"]["small"]["max_input_bytes"] = bad
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert "routes.small.max_input_bytes" in str(info.value)
