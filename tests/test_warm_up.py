"""Ready means loaded: the proxy's startup loads the embedder and router models before it
reports ready, so the first request does not pay for loading them."""

from __future__ import annotations

from typing import Any

import pytest

from embedders import WordsEmbedder
from routeguard.errors import RouteguardError
from routeguard.gateway import Gateway
from routeguard.server import create_app


def _cfg(cache: bool, routes: dict[str, Any]) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "k"}
    return {
        "model_list": [
            {**dep, "model_name": "cheap-m", "model": "sim-cheap"},
            {**dep, "model_name": "strong-m", "model": "sim-strong"},
        ],
        "cache": {"enabled": cache},
        "routes": routes,
    }


async def _startup(gw: Gateway) -> list[str]:
    """Drive the app's ASGI lifespan through startup and shutdown; the messages it sent."""
    app = create_app(gw)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []
    calls_at_ready: list[int] = []
    embedder = gw.cache.cache.embedder if gw.cache is not None else None

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg["type"])
        if msg["type"] == "lifespan.startup.complete" and isinstance(embedder, WordsEmbedder):
            calls_at_ready.append(embedder.calls)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return [*sent, *(f"calls:{n}" for n in calls_at_ready)]


async def test_startup_embeds_before_it_reports_ready() -> None:
    semantic = {
        "mode": "routed",
        "default": "cheap-m",
        "semantic_routes": {
            "threshold": 0.5,
            "routes": [{"name": "code", "target": "strong-m", "utterances": ["fix this bug"]}],
        },
    }
    embedder = WordsEmbedder()
    gw = Gateway.from_config(_cfg(True, {"auto": semantic}), embedder=embedder)
    built = embedder.calls  # the utterances, embedded when the route was built
    events = await _startup(gw)
    assert events[:2] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # The cache's embedder (which the semantic router shares) ran before "ready": once for
    # the cache and once through the router, so neither loads on the first request.
    assert events[2] == f"calls:{built + 2}"


async def test_a_router_that_cannot_score_fails_at_startup_not_on_a_request() -> None:
    # The bundled learned model wants 384-d MiniLM vectors: a 64-d embedder is a config
    # mistake the warm-up finds before the proxy reports ready.
    learned = {"mode": "routed", "cheap": "cheap-m", "strong": "strong-m", "threshold": 0.0}
    gw = Gateway.from_config(_cfg(True, {"auto": learned}), embedder=WordsEmbedder())
    with pytest.raises(RouteguardError, match="expects 384-d vectors"):
        await gw.warm_up()


async def test_nothing_to_load_means_nothing_embedded() -> None:
    rules = {"mode": "routed", "default": "cheap-m",
             "rules": [{"name": "long", "min_tokens": 50, "target": "strong-m"}]}  # fmt: skip
    gw = Gateway.from_config(_cfg(False, {"rules-only": rules}))
    assert gw.cache is None
    await gw.warm_up()  # rules need no embedding: nothing is loaded, nothing raises
    router = gw.routers["rules-only"]
    assert router.semantic is None and router.learned is None
