"""A key's model scope covers what is *served*: fallbacks, context-window fallbacks and
routing targets outside it are skipped, and when nothing in scope is left the error says
so. The checks live in the Gateway, so a library caller passing ``key=`` gets exactly the
proxy's."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from embedders import WideWordsEmbedder, WordsEmbedder
from routeguard.budget.keys import KeySpec
from routeguard.errors import (
    AllAttemptsFailed,
    AuthenticationError,
    ModelNotFound,
    RouteguardError,
)
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MSG: Any = [{"role": "user", "content": "hello scope"}]
LONG: Any = [{"role": "user", "content": "long words " * 400}]  # ~1100 tokens


def _cfg(url: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    return {
        "model_list": [
            {**dep, "model_name": "fast", "model": "sim-fast", "context_window": 200},
            {**dep, "model_name": "smart", "model": "sim-smart"},
            {**dep, "model_name": "broken", "model": "error-500"},
            {**dep, "model_name": "emb", "model": "text-embedding-3-small"},
        ],
        "context_window_fallbacks": {"fast": ["smart"]},
        "fallbacks": {"broken": ["smart"]},
        "router_settings": {"num_retries": 0},
        "routes": {"auto": {"mode": "routed", "cheap": "fast", "strong": "smart",
                            "threshold": 0.0,
                            "rules": [{"name": "all", "regex": ".", "target": "strong"}]}},
    }  # fmt: skip


def _denied(exc: BaseException) -> bool:
    return isinstance(exc, RouteguardError) and exc.status_code == 403


async def test_a_context_window_fallback_outside_the_scope_is_not_served(
    mock: MockServer,
) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        _, fast_only = gw.keys.create(KeySpec(models=["fast"]))
        with pytest.raises(RouteguardError) as caught:
            await gw.chat_result({"model": "fast", "messages": LONG}, key=fast_only)
        assert _denied(caught.value)
        assert "smart" not in caught.value.message and fast_only.key_id in caught.value.message
        # A key that may use both is served by the longer-context model, as before.
        _, both = gw.keys.create(KeySpec(models=["fast", "smart"]))
        ok = await gw.chat_result({"model": "fast", "messages": LONG}, key=both)
        assert ok.alias == "smart"
    finally:
        await gw.aclose()


async def test_a_fallback_outside_the_scope_is_skipped(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        _, key = gw.keys.create(KeySpec(models=["broken"]))
        with pytest.raises(AllAttemptsFailed) as caught:
            await gw.chat_result({"model": "broken", "messages": MSG}, key=key)
        assert "smart" not in caught.value.message  # counted, not named
        assert "1 fallback model(s) outside the key's models" in caught.value.message
        assert all(a.alias == "broken" for a in caught.value.attempts)
    finally:
        await gw.aclose()


async def test_a_routed_alias_serves_only_targets_in_scope(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        _, cheap = gw.keys.create(KeySpec(models=["auto", "fast"]))
        r = await gw.chat_result({"model": "auto", "messages": MSG}, key=cheap)
        assert r.alias == "fast" and r.deployment.model == "sim-fast"
        _, alias_only = gw.keys.create(KeySpec(models=["auto"]))
        with pytest.raises(RouteguardError) as caught:
            await gw.chat_result({"model": "auto", "messages": MSG}, key=alias_only)
        assert _denied(caught.value) and "none of the 2 models it routes to" in str(caught.value)
        assert "smart" not in str(caught.value)  # targets outside the scope are not named
        unscoped = await gw.chat_result({"model": "auto", "messages": MSG})
        assert unscoped.alias == "smart"  # the rule's choice, for callers without a scope
    finally:
        await gw.aclose()


async def test_library_callers_get_the_proxys_checks(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        _, key = gw.keys.create(KeySpec(models=["fast"]))
        # Out of scope answers as a missing model would (404): a key cannot probe for names.
        with pytest.raises(ModelNotFound):
            await gw.chat_result({"model": "smart", "messages": MSG}, key=key)
        with pytest.raises(ModelNotFound):
            await gw.embeddings({"model": "emb", "input": "hello"}, key=key)
        _, expired = gw.keys.create(KeySpec(expires_at=time.time() - 1))
        with pytest.raises(AuthenticationError):
            await gw.chat_result({"model": "fast", "messages": MSG}, key=expired)
    finally:
        await gw.aclose()


def test_the_proxy_answers_403_without_naming_the_model_outside_the_scope(
    mock: MockServer,
) -> None:
    # 384-d vectors: the proxy's startup warms the learned router, which needs them.
    gw = Gateway.from_config(_cfg(mock.url), embedder=WideWordsEmbedder())
    secret, _ = gw.keys.create(KeySpec(models=["fast"]))
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=secret, max_retries=0) as client,
    ):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="fast", messages=LONG)
        assert "smart" not in caught.value.message  # counted, not named
        assert "1 fallback model(s) outside the key's models" in caught.value.message
        ok = client.chat.completions.create(model="fast", messages=MSG)
        assert ok.choices[0].message.content


class _CountedModels(list[str]):
    """A key's model list that counts how many times it is walked."""

    walks = 0

    def __iter__(self) -> Any:
        type(self).walks += 1
        return super().__iter__()


async def test_a_keys_long_model_list_is_not_walked_per_request(mock: MockServer) -> None:
    """The fallback walker of a key's scope is found from the key's own record, not by
    making its model list a set on every request (twice with a budget); an updated key
    gets the walker of its new scope."""
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        models = _CountedModels(["smart", "broken", *(f"other-{i}" for i in range(3_000))])
        key = gw.keys.create(KeySpec(models=models))[1]
        _CountedModels.walks = 0
        for _ in range(20):
            result = await gw.chat_result({"model": "broken", "messages": MSG}, key=key)
            assert result.alias == "smart"  # its fallback, in scope
        assert _CountedModels.walks == 1
        narrowed = gw.keys.update(key.key_id, {"models": ["broken", "fast"]})
        with pytest.raises(RouteguardError, match="outside the key's models"):  # smart now
            await gw.chat_result({"model": "broken", "messages": MSG}, key=narrowed)
    finally:
        await gw.aclose()
