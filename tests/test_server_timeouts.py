"""Slow and idle clients over real sockets (slowloris): headers and bodies have read
deadlines, connections no request has authenticated are capped, and a real client still
gets through while an attacker holds every slot. Per-endpoint body limits answer 413 in
the caller's protocol. Timeouts here are short settings of the test config; the socket
timeouts only bound how long a test may hang."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from ports import free_port
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-slow"
CAP = 4
BOUND = 8.0  # seconds a socket may wait before the test fails (the deadlines are 1-2 s)
MSG: Any = [{"role": "user", "content": "hi"}]


def _cfg(url: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    server = {
        "master_key": MASTER,
        "header_timeout": 1.0,
        "body_timeout": 1.0,
        "max_unauthenticated_connections": CAP,
        "max_body_bytes_per_endpoint": {"/v1/embeddings": 1000, "/v1/messages": 2000},
    }
    return {"model_list": [{**dep, "model_name": "a", "model": "m-a"}], "server": server}


@pytest.fixture
def proxy(mock: MockServer) -> Iterator[ServerThread]:
    with ServerThread(create_app(Gateway.from_config(_cfg(mock.url)))) as srv:
        yield srv


def _connect(srv: ServerThread) -> socket.socket:
    sock = socket.create_connection((srv.host, srv.port), timeout=BOUND)
    sock.settimeout(BOUND)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (socket.timeout if it never does)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def _trickle_until_closed(sock: socket.socket) -> bytes:
    """Send a byte every 50 ms until the server closes; returns what it sent meanwhile."""
    out = b""
    for _ in range(int(BOUND / 0.05)):
        try:
            sock.sendall(b" ")
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return out
                out += chunk
        except (BrokenPipeError, ConnectionResetError):
            return out
    raise AssertionError(f"the server kept the connection open; it sent {out[:80]!r}")


def _request(path: str, body: bytes, key: str = MASTER, length: int | None = None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(body) if length is None else length}"
        "\r\n\r\n"
    )
    return head.encode() + body


def _chat_body() -> bytes:
    return json.dumps({"model": "a", "messages": MSG}).encode()


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_idle_connection_is_closed_with_408(proxy: ServerThread) -> None:
    with _connect(proxy) as sock:
        raw = _read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 408")


def test_trickled_headers_are_cut_off(proxy: ServerThread) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nx-slow: ")
        assert _trickle_until_closed(sock).startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize(
    ("path", "anthropic_shape"), [("/v1/chat/completions", False), ("/v1/messages", True)]
)
def test_trickled_body_gets_408_in_the_callers_protocol(
    proxy: ServerThread, path: str, anthropic_shape: bool
) -> None:
    body = _chat_body()
    with _connect(proxy) as sock:
        sock.sendall(_request(path, body[:5], length=len(body)))  # then nothing more
        raw = _read_until_closed(sock)
    assert _status(raw) == 408
    body = raw.split(b"\r\n\r\n", 1)[1]  # chunked: the JSON sits between size lines
    data = json.loads(body[body.index(b"{") : body.rindex(b"}") + 1])
    if anthropic_shape:
        assert data["type"] == "error" and "body_timeout" in data["error"]["message"]
    else:
        assert data["error"]["code"] == "request_timeout"


def test_unread_trickled_body_is_closed(proxy: ServerThread) -> None:
    """A body the app never reads (its request was refused first) still has a deadline."""
    with _connect(proxy) as sock:
        sock.sendall(_request("/v1/chat/completions", b"{", key="wrong", length=10_000))
        assert _trickle_until_closed(sock).startswith(b"HTTP/1.1 401")


def test_a_real_client_gets_through_while_the_cap_is_full(proxy: ServerThread) -> None:
    idle = [_connect(proxy) for _ in range(CAP * 2)]  # an attacker holds every slot (twice)
    try:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key=MASTER, max_retries=0) as c:
            assert c.chat.completions.create(model="a", messages=MSG).choices
        for sock in idle[:CAP]:  # the oldest were closed to make room
            assert _read_until_closed(sock).startswith(b"HTTP/1.1 408")
    finally:
        for sock in idle:
            sock.close()


def test_connections_refused_before_their_body_do_not_keep_a_real_client_out(
    proxy: ServerThread,
) -> None:
    """An attacker's requests are refused (401) before their bodies, which it then trickles:
    no app works for those connections any more, so they make room like idle ones."""
    held = [_connect(proxy) for _ in range(CAP)]
    try:
        for sock in held:
            sock.sendall(_request("/v1/chat/completions", b"{", key="wrong", length=10**6))
            assert sock.recv(65536).startswith(b"HTTP/1.1 401")
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key=MASTER, max_retries=0) as c:
            assert c.chat.completions.create(model="a", messages=MSG).choices
    finally:
        for sock in held:
            sock.close()


def test_authenticated_keep_alive_connections_do_not_count(proxy: ServerThread) -> None:
    app = proxy._app
    guard = app.connection_guard
    kept: list[socket.socket] = []
    try:
        for _ in range(CAP):  # each passes authentication once and stays open (keep-alive)
            sock = _connect(proxy)
            kept.append(sock)
            sock.sendall(_request("/v1/chat/completions", _chat_body()))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert guard.unauthenticated == 0
        idle = [_connect(proxy) for _ in range(CAP + 2)]
        try:
            for sock in kept:  # still open and served after the cap filled up
                sock.sendall(_request("/v1/chat/completions", _chat_body()))
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            assert guard.unauthenticated <= CAP
        finally:
            for sock in idle:
                sock.close()
    finally:
        for sock in kept:
            sock.close()


def test_per_endpoint_body_limits_are_413_in_the_callers_protocol(proxy: ServerThread) -> None:
    base = proxy.url
    with openai.OpenAI(base_url=base + "/v1", api_key=MASTER, max_retries=0) as c:
        with pytest.raises(openai.APIStatusError) as info:
            c.embeddings.create(model="a", input="x" * 2000)
        assert info.value.status_code == 413
        assert "max_body_bytes_per_endpoint" in str(info.value)
        # The same size is fine on the chat endpoint (the global 8 MiB limit).
        assert c.chat.completions.create(
            model="a", messages=[{"role": "user", "content": "x" * 2000}]
        ).choices
    with anthropic.Anthropic(base_url=base, api_key=MASTER, max_retries=0) as ant:
        with pytest.raises(anthropic.APIStatusError) as ainfo:
            ant.messages.create(
                model="a", max_tokens=5, messages=[{"role": "user", "content": "x" * 3000}]
            )
        assert ainfo.value.status_code == 413
        assert isinstance(ainfo.value.body, dict) and ainfo.value.body["type"] == "error"


def test_declared_oversize_body_is_refused_unread(proxy: ServerThread) -> None:
    with _connect(proxy) as sock:
        sock.sendall(_request("/v1/embeddings", b"", length=10**9))
        raw = _read_until_closed(sock)
    assert _status(raw) == 413 and b"request_too_large" in raw


def test_admin_api_has_its_own_small_default_limit(proxy: ServerThread) -> None:
    body = json.dumps({"metadata": {"blob": "x" * 300_000}}).encode()
    with _connect(proxy) as sock:
        sock.sendall(_request("/admin/keys", body))
        raw = sock.recv(65536)
    assert _status(raw) == 413 and b"/admin" in raw


def test_routeguard_serve_applies_the_header_deadline(mock: MockServer, tmp_path: Path) -> None:
    config = tmp_path / "rg.json"
    config.write_text(json.dumps(_cfg(mock.url)))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "routeguard.cli", "serve", "--config", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        with sock:
            sock.settimeout(BOUND)
            assert _read_until_closed(sock).startswith(b"HTTP/1.1 408")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_no_route_is_an_admin_or_dashboard_path() -> None:
    """The dispatcher looks a path up among the routes before the admin API and the
    dashboard, so no route may be one of theirs; a route's body limit is worked out once."""
    from routeguard.server.admin import is_admin_path
    from routeguard.server.dashboard import is_ui_path

    app = create_app(Gateway.from_config(_cfg("http://127.0.0.1:9/v1")))
    assert "/v1/chat/completions" in app._routes
    for path in app._routes:
        assert not is_admin_path(path) and not is_ui_path(path), path
        assert app._body_limit(path) == app._limit_of(path)
    assert app._body_limit("/v1/embeddings") == (
        1000,
        "server.max_body_bytes_per_endpoint['/v1/embeddings']",
    )
    assert app._body_limit("/admin/keys") == (
        256 * 1024,
        "server.max_body_bytes_per_endpoint['/admin']",
    )
