"""An ASGI host whose ``send`` raises once the response has started (the ASGI spec has a
server raise ``OSError`` on a closed connection): the proxy writes no second response head
after the first, does not turn the lost client into a logged crash, and still charges what
the upstream answer cost."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from asgi_request import body_of, post_scope
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app

MSG = [{"role": "user", "content": "hello there"}]
BODIES = {
    "/v1/chat/completions": {"model": "m", "messages": MSG, "max_tokens": 20},
    "/v1/messages": {"model": "m", "messages": MSG, "max_tokens": 20},
}


class _Gone(OSError):
    """What an ASGI server raises from ``send`` once its client has gone."""


def _cfg(url: str) -> dict[str, Any]:
    model = {"model_name": "m", "type": "openai", "model": "sim-m", "api_base": url + "/v1"}
    price = {"api_key": "k", "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}
    return {
        "model_list": [{**model, **price}],
        "router_settings": {"num_retries": 0},
        "server": {"master_key": "sk-admin"},
    }


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("fails_on", ["http.response.start", "http.response.body"])
async def test_a_send_that_raises_gets_no_second_head(
    mock: MockServer, caplog: pytest.LogCaptureFixture, path: str, fails_on: str
) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    app = create_app(gw)
    token, rec = gw.keys.create(KeySpec(max_budget=10.0))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == fails_on:
            raise _Gone("the client closed the connection")

    try:
        with caplog.at_level(logging.INFO, logger="routeguard"):
            await app(post_scope(path, token), body_of(BODIES[path]), send)
        heads = [m for m in sent if m["type"] == "http.response.start"]
        assert len(heads) == 1 and heads[0]["status"] == 200
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        account = gw.budget.key_account(rec)
        assert account is not None
        assert await gw.budget.backend.spent(account) > 0  # the answer was paid for
        assert await gw.budget.backend.reserved(account) == 0
    finally:
        await gw.aclose()


async def test_a_failure_after_the_head_is_logged_not_answered_twice(
    mock: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Any other error once the head is out (a bug, ours or the host's) is logged as one,
    and no error response follows the head already sent."""
    gw = Gateway.from_config(_cfg(mock.url))
    app = create_app(gw)
    token, _ = gw.keys.create(KeySpec())
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            raise RuntimeError("a host that cannot write")

    path = "/v1/chat/completions"
    try:
        with caplog.at_level(logging.INFO, logger="routeguard"):
            await app(post_scope(path, token), body_of(BODIES[path]), send)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and "unexpected error serving" in errors[0].getMessage()
    finally:
        await gw.aclose()


async def test_a_lost_client_of_an_error_answer_is_not_raised_to_the_host(
    mock: MockServer,
) -> None:
    """The same for an error answer: a 401 to a client that already left."""
    gw = Gateway.from_config(_cfg(mock.url))
    app = create_app(gw)

    async def send(message: dict[str, Any]) -> None:
        raise _Gone("the client closed the connection")

    path = "/v1/chat/completions"
    try:
        await app(post_scope(path, "sk-wrong"), body_of(BODIES[path]), send)
    finally:
        await gw.aclose()


async def test_a_head_the_host_refused_still_gets_the_error_answer(mock: MockServer) -> None:
    """A host that refuses a head without writing it (routeguard's own server raises
    RuntimeError for an invalid header before writing anything) still gets the JSON error
    answer: nothing of the first head went out."""
    gw = Gateway.from_config(_cfg(mock.url))
    app = create_app(gw)
    token, _ = gw.keys.create(KeySpec())
    written: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and not written:
            written.append({"type": "refused"})
            raise RuntimeError("invalid HTTP header value")  # nothing written
        written.append(message)

    path = "/v1/chat/completions"
    try:
        await app(post_scope(path, token), body_of(BODIES[path]), send)
        assert [m["type"] for m in written[1:]] == ["http.response.start", "http.response.body"]
        assert written[1]["status"] == 500
        assert b"internal error" in written[2]["body"]
    finally:
        await gw.aclose()


def _statuses(path: Path) -> list[int]:
    return [json.loads(line)["status"] for line in path.read_text().splitlines()]


def _logged(url: str, log_path: Path) -> tuple[Gateway, Any, str]:
    """A gateway on the simulated upstream at ``url``, its app writing the request log to
    ``log_path``, and a virtual key's token."""
    gw = Gateway.from_config(_cfg(url))
    app = create_app(gw, request_log=str(log_path))
    token, _ = gw.keys.create(KeySpec())
    return gw, app, token


async def test_a_client_lost_while_its_answer_was_written_is_logged_as_499(
    mock: MockServer, tmp_path: Path
) -> None:
    """nginx's 499, not a 200: the client never got the whole answer (its cost is kept)."""
    log_path = tmp_path / "requests.jsonl"
    gw, app, token = _logged(mock.url, log_path)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise _Gone("the client closed the connection")

    path = "/v1/chat/completions"
    try:
        await app(post_scope(path, token), body_of(BODIES[path]), send)
        assert app.request_log is not None
        app.request_log.flush()
        line = json.loads(log_path.read_text())
        assert line["status"] == 499 and line["error"]["type"] == "client_closed_request"
        assert line["cost_usd"] > 0
    finally:
        await gw.aclose()


async def test_a_stream_whose_client_left_is_logged_as_499(
    mock: MockServer, tmp_path: Path
) -> None:
    log_path = tmp_path / "requests.jsonl"
    gw, app, token = _logged(mock.url, log_path)
    stuck = asyncio.Event()  # never set: a client that reads nothing of the stream
    request = [body_of({**BODIES["/v1/chat/completions"], "stream": True})]

    async def receive() -> dict[str, Any]:
        if request:
            return await request.pop()()
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}  # then it leaves

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await stuck.wait()

    try:
        await app(post_scope("/v1/chat/completions", token), receive, send)
        # A stream that ends is a 200 (its client stays until the end).
        stays = [body_of({**BODIES["/v1/chat/completions"], "stream": True})]

        async def receive_then_stay() -> dict[str, Any]:
            if stays:
                return await stays.pop()()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        await app(post_scope("/v1/chat/completions", token), receive_then_stay, _sink)
        assert app.request_log is not None
        app.request_log.flush()
        assert _statuses(log_path) == [499, 200]
    finally:
        await gw.aclose()


async def _sink(message: dict[str, Any]) -> None:
    """A client that takes everything."""
