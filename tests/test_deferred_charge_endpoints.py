"""The proxy's deferred charge (``chat_result(defer_settle=True)`` + ``Gateway.finish``):
every endpoint that serves through ``ProxyApp._serve_chat`` charges a non-streamed answer
exactly once and leaves no hold, a stream is still settled by its relay, embeddings are
untouched, cache hits cost nothing, holds on two roots are charged once, and a request
cancelled while its answer is written is still charged."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from asgi_request import post_scope
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app

MSG = [{"role": "user", "content": "hello budget"}]


def _cfg(url: str) -> dict[str, Any]:
    dep = {"api_key": "k", "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}
    return {
        "model_list": [
            {**dep, "model_name": "m", "type": "openai", "model": "sim-m", "api_base": url + "/v1"},
            {**dep, "model_name": "an", "type": "anthropic", "model": "sim-an", "api_base": url},
            {
                **dep,
                "model_name": "e",
                "type": "openai",
                "model": "text-embedding-3-small",
                "api_base": url + "/v1",
            },
        ],
        "router_settings": {"num_retries": 0},
        "budgets": [{"name": "t"}],
        "server": {"master_key": "sk-admin"},
    }


BODIES = {
    "/v1/chat/completions": {"model": "m", "messages": MSG, "max_tokens": 20},
    "/v1/messages": {"model": "an", "messages": MSG, "max_tokens": 20},
    "/v1/responses": {"model": "m", "input": "hello budget", "max_output_tokens": 20},
    "/v1/completions": {"model": "m", "prompt": "hello budget", "max_tokens": 20},
    "/v1/embeddings": {"model": "e", "input": "hello budget"},
}


async def _call(app: Any, key: str, path: str, body: Any) -> tuple[int, bytes]:
    raw = json.dumps(body).encode()
    scope = post_scope(path, key)
    out: list[Any] = []

    given = [False]

    async def receive() -> dict[str, Any]:
        if given[0]:  # the client stays: a disconnect watcher waits
            await asyncio.Event().wait()
        given[0] = True
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await app(scope, receive, send)
    status = out[0]["status"]
    return status, b"".join(m.get("body", b"") for m in out[1:])


@pytest.mark.parametrize(
    ("path", "stream"),
    [(p, s) for p in BODIES for s in (False, True) if not (s and p == "/v1/embeddings")],
)
async def test_every_endpoint_charges_once(mock: MockServer, path: str, stream: bool) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.budget is not None
    backend = gw.budget.backend
    key, _ = gw.keys.create(KeySpec(team="t"))
    app = create_app(gw)
    finished: list[Any] = []
    finish = gw.finish

    def spy(result: Any) -> None:
        finished.append((result.wire, result.owed is not None))
        finish(result)

    gw.finish = spy  # type: ignore[method-assign]
    try:
        body = {**BODIES[path], **({"stream": True} if stream else {})}
        status, raw = await _call(app, key, path, body)
        assert status == 200, raw[:300]
        spent = await backend.spent("t")
        assert spent > 0 and await backend.reserved("t") == 0
        assert gw.budget.overages == 0
        assert not gw.budget._linked
        if path == "/v1/responses":  # passed through natively (ProxyApp._passed_through)
            assert finished and finished[0][0] == "responses"
        if path != "/v1/embeddings" and not stream:
            assert finished == [(finished[0][0], True)]  # owed, and finished once

    finally:
        await gw.aclose()


async def test_a_cache_hit_through_the_proxy_costs_nothing(mock: MockServer) -> None:
    from embedders import WordsEmbedder

    cfg = {**_cfg(mock.url), "routes": {"m": {"cache": {"enabled": True}}}}
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    assert gw.budget is not None
    key, _ = gw.keys.create(KeySpec(team="t"))
    app = create_app(gw)
    try:
        body = BODIES["/v1/chat/completions"]
        assert (await _call(app, key, "/v1/chat/completions", body))[0] == 200
        first = await gw.budget.backend.spent("t")
        status, _ = await _call(app, key, "/v1/chat/completions", body)
        assert status == 200 and first > 0
        assert await gw.budget.backend.spent("t") == first
        assert await gw.budget.backend.reserved("t") == 0
    finally:
        await gw.aclose()


@pytest.mark.parametrize("fail_late", [False, True])
async def test_linked_holds_across_roots_are_charged_once(
    mock: MockServer, monkeypatch: pytest.MonkeyPatch, fail_late: bool
) -> None:
    from routeguard.errors import PermissionDenied

    cfg = {**_cfg(mock.url), "budgets": [{"name": "t"}, {"name": "u"}]}  # two roots
    gw = Gateway.from_config(cfg)
    assert gw.budget is not None
    backend = gw.budget.backend
    if fail_late:

        async def refuse(call: Any, result: Any) -> Any:
            raise PermissionDenied("refused after the call")

        monkeypatch.setattr(gw, "_enforce", refuse)
    try:
        req = {"model": "m", "messages": MSG, "max_tokens": 20}
        if fail_late:
            with pytest.raises(PermissionDenied):
                await gw.chat_result(req, accounts=["t", "u"], defer_settle=True)
        else:
            result = await gw.chat_result(req, accounts=["t", "u"], defer_settle=True)
            assert gw.budget._linked  # the second root's hold waits with the first
            gw.finish(result)
            gw.finish(result)
        t, u = await backend.spent("t"), await backend.spent("u")
        assert t == u > 0
        assert await backend.reserved("t") == await backend.reserved("u") == 0
        assert not gw.budget._linked
    finally:
        await gw.aclose()


async def test_a_request_cancelled_while_its_answer_is_written_is_charged(
    mock: MockServer,
) -> None:
    """The drain cut (Lifecycle.drain cancels the request's task) while ``send`` waits."""
    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.budget is not None
    key, _ = gw.keys.create(KeySpec(team="t"))
    app = create_app(gw)
    raw = json.dumps(BODIES["/v1/chat/completions"]).encode()
    scope = post_scope("/v1/chat/completions", key)
    writing = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            writing.set()
            await asyncio.Event().wait()  # a client that never reads

    try:
        task = asyncio.create_task(app(scope, receive, send))
        await writing.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await gw.budget.backend.spent("t") > 0
        assert await gw.budget.backend.reserved("t") == 0
    finally:
        await gw.aclose()
