"""Routed and pinned routes in the gateway and the proxy: rules, the learned cheap/strong
router with a fixed threshold, pinned routes skipping the cache, and config validation."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from embedders import WordsEmbedder
from routeguard import config
from routeguard.errors import ConfigError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread


def _cfg(url: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    return {
        "model_list": [
            {**dep, "model_name": "cheap-m", "model": "sim-cheap"},
            {**dep, "model_name": "strong-m", "model": "sim-strong"},
            {**dep, "model_name": "safe-m", "model": "sim-safe"},
        ],
        "cache": {"enabled": True},
        "routes": {
            "auto": {
                "mode": "routed",
                "cheap": "cheap-m",
                "strong": "strong-m",
                "threshold": -1.0,  # every learned score is >= -1: the strong model
                "rules": [
                    {"name": "proof", "regex": "(?i)\\bprove\\b", "target": "strong"},
                    {"name": "hdr", "headers": {"x-task": "chit-chat"}, "target": "cheap"},
                ],
            },
            "rules-only": {"mode": "routed", "default": "cheap-m",
                           "rules": [{"name": "long", "min_tokens": 50, "target": "strong-m"}]},
            "safety": {"mode": "pinned", "target": "safe-m"},
        },
    }  # fmt: skip


def _msg(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_rules_and_default(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        short = await gw.chat_result({"model": "rules-only", "messages": _msg("hi")})
        assert short.alias == "cheap-m" and short.route == "default"
        long = await gw.chat_result({"model": "rules-only", "messages": _msg("word " * 300)})
        assert long.alias == "strong-m" and long.route == "rule:long"
        assert "rules-only" in gw.models() and "auto" in gw.models()
    finally:
        await gw.aclose()


async def test_pinned_route_never_caches(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        for _ in range(2):
            r = await gw.chat_result({"model": "safety", "messages": _msg("delete the database")})
            assert r.alias == "safe-m" and r.route == "pinned" and r.cache == "off"
    finally:
        await gw.aclose()


def test_proxy_routes_by_rule_header_and_learned_score(mock: MockServer) -> None:
    cfg = _cfg(mock.url)
    cfg["cache"] = {"enabled": False}
    gw = Gateway.from_config(cfg)  # the learned router embeds with the real MiniLM
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        msgs: Any = _msg("Please prove that sqrt(2) is irrational")
        proof = c.chat.completions.with_raw_response.create(model="auto", messages=msgs)
        assert proof.headers["x-routeguard-route"] == "rule:proof"
        assert proof.headers["x-routeguard-model"] == "strong-m"
        chat: Any = _msg("how are you today")
        hdr = c.chat.completions.with_raw_response.create(
            model="auto", messages=chat, extra_headers={"x-task": "chit-chat"}
        )
        assert hdr.headers["x-routeguard-model"] == "cheap-m"
        learned = c.chat.completions.with_raw_response.create(model="auto", messages=chat)
        assert learned.headers["x-routeguard-route"].startswith("learned")
        assert learned.headers["x-routeguard-model"] == "strong-m"
        assert learned.parse().choices[0].message.content


def test_route_config_is_validated() -> None:
    base = {"model_list": [{"model_name": "a", "type": "openai", "model": "m"}]}
    with pytest.raises(ConfigError) as info:
        config.load({**base, "routes": {"r": {"mode": "routed", "cheap": "a", "strong": "zzz",
                                              "threshold": 0.1}}}, env={})  # fmt: skip
    assert "unknown model 'zzz'" in str(info.value)
    with pytest.raises(ConfigError):
        config.load({**base, "routes": {"p": {"mode": "pinned"}}}, env={})
    with pytest.raises(ConfigError):
        config.load({**base, "routes": {"r": {"mode": "sideways"}}}, env={})
    ok = config.load({**base, "routes": {"p": {"mode": "pinned", "target": "a"}}}, env={})
    assert list(ok.routing) == ["p"]
    assert (ok.routing["p"].mode, ok.routing["p"].target) == ("pinned", "a")


def test_embedding_precision_is_configurable(mock: MockServer) -> None:
    from routeguard.embed import MiniLMEmbedder, default_embedder

    cfg = _cfg(mock.url)
    cfg["embedding"] = {"precision": "bf16"}
    gw = Gateway.from_config(cfg)  # the default MiniLM at bf16, for the cache and the routers
    assert gw.cache is not None
    emb = gw.cache.cache.embedder
    assert isinstance(emb, MiniLMEmbedder) and emb.precision == "bf16"
    assert emb is default_embedder("bf16") and emb is not default_embedder("f32")
    assert gw.routers["auto"]._embedder is emb  # one vector per request, shared
    with pytest.raises(ConfigError, match="embedding"):
        config.load({**cfg, "embedding": {"precision": "f8"}}, env={})


def test_embedding_precision_defaults_to_auto(mock: MockServer) -> None:
    from routeguard.embed import default_embedder, resolve_precision

    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.config.embedding.precision == "auto"
    assert gw.cache is not None
    emb = gw.cache.cache.embedder
    assert emb is default_embedder() is default_embedder("auto")
    assert emb.precision == resolve_precision("auto")
    assert gw.routers["auto"]._embedder is emb
    explicit = Gateway.from_config({**_cfg(mock.url), "embedding": {"precision": "f32"}})
    assert explicit.cache is not None and explicit.cache.cache.embedder is default_embedder("f32")
