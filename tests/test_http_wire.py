"""The wire-level contract of routeguard's upstream HTTP client (``providers.http``).

Every test talks to a raw asyncio server (``tests/wire_server.py``) that reads the request
bytes itself and answers with exact bytes: Content-Length, chunked (with extensions and
trailers) and close-delimited bodies, a body dribbled one byte at a time, keep-alive and
reconnects after the server hangs up, interim 1xx responses, gzip and deflate, a 5 MB body,
refused, silent, cut and garbage upstreams, SSE split at awkward places, userinfo turned into
Basic auth, and HTTPS verified against a throwaway CA named by ``SSL_CERT_FILE``.

Only the module's public API (``post_json``, ``open_sse`` and its ``SseStream``,
``retry_after``, ``close_session``) and ``routeguard.errors`` are used, so the same suite
holds whatever HTTP/1.1 client sits inside the module.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import os
import random
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ports import free_port
from routeguard.errors import ProviderError, UpstreamConnectionError, UpstreamTimeout
from routeguard.providers import http
from wire_server import (
    Exchange,
    Request,
    Serve,
    answer,
    chunked,
    framed_writes,
    issue_ca,
    issue_cert,
    json_response,
    raw_servers,
    response,
    server_context,
    silent,
)

T = 2.0  # the attempt timeout of tests that do not test timeouts
SHORT = 0.3  # the attempt timeout of tests that wait for one to fire


@pytest.fixture(autouse=True)
async def serve() -> AsyncIterator[Serve]:
    """Raw servers for the test (``await serve(handler, tls=None)``), all stopped after it,
    then the client's pooled connections closed (every test, servers or not)."""
    async with raw_servers() as start:
        yield start
    await http.close_session()


# --------------------------------------------------------------------------- the request


@pytest.mark.parametrize(
    "target",
    [
        # A Bedrock model id: the %3A is what a SigV4 signature covers, so never re-quoted.
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke?x=1&y=a%2Fb",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=k1",
    ],
)
async def test_post_json_sends_method_target_host_and_json_body(serve: Serve, target: str) -> None:
    server = await serve(answer(json_response({"ok": True})))
    body = {"model": "m", "messages": [{"role": "user", "content": "h\u00e9llo \u2713"}], "t": 0.5}
    headers = {"x-api-key": "k-123", "anthropic-version": "2023-06-01"}
    resp = await http.post_json(server.url + target, headers, body, T)
    assert resp.status == 200
    assert resp.json() == {"ok": True}
    [req] = server.requests
    assert req.line == f"POST {target} HTTP/1.1"
    assert req.header_all("host") == [f"127.0.0.1:{server.port}"]
    assert req.header_all("content-type") == ["application/json"]
    assert req.body == msgspec.json.encode(body)
    assert req.header_all("content-length") == [str(len(req.body))]
    assert req.header("x-api-key") == "k-123"
    assert req.header("anthropic-version") == "2023-06-01"


async def test_bytes_body_is_sent_as_is(serve: Serve) -> None:
    server = await serve(answer(json_response({})))
    raw = b'{ "already" :"encoded",\n  "n": 1.50 }'
    await http.post_json(server.url + "/x", {}, raw, T)
    [req] = server.requests
    assert req.body == raw
    assert req.header_all("content-length") == [str(len(raw))]


async def test_callers_content_type_is_replaced_not_sent_twice(serve: Serve) -> None:
    server = await serve(answer(json_response({})))
    await http.post_json(server.url + "/x", {"Content-Type": "text/plain"}, {"a": 1}, T)
    [req] = server.requests
    assert req.header_all("content-type") == ["application/json"]


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({}, ["text/event-stream"]),
        ({"accept": "application/vnd.amazon.eventstream"}, ["application/vnd.amazon.eventstream"]),
        ({"Accept": "application/vnd.amazon.eventstream"}, ["application/vnd.amazon.eventstream"]),
    ],
)
async def test_open_sse_sends_one_accept_header(
    serve: Serve, given: dict[str, str], sent: list[str]
) -> None:
    server = await serve(answer(response(200, b"data: x\n\n")))
    stream = await http.open_sse(server.url + "/s", given, {"stream": True}, T)
    assert [e async for e in stream.events()] == [("", b"x")]
    [req] = server.requests
    assert req.method == "POST"
    assert req.header_all("accept") == sent
    assert req.header_all("content-type") == ["application/json"]
    assert req.body == b'{"stream":true}'


async def test_a_5_mb_request_body_arrives_intact(serve: Serve) -> None:
    def digest(req: Request) -> bytes:
        return json_response({"sha256": hashlib.sha256(req.body).hexdigest()})

    server = await serve(answer(digest))
    raw = os.urandom(5 * 1024 * 1024)
    resp = await http.post_json(server.url + "/upload", {}, raw, T)
    assert resp.json() == {"sha256": hashlib.sha256(raw).hexdigest()}


# --------------------------------------------------------------------------- body framing


async def test_chunked_body_with_extensions_and_trailers(serve: Serve) -> None:
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    wire = (
        response(200, headers=[("Transfer-Encoding", "chunked")], length=False)
        + b'5;ext=1;name="v a"\r\nhello\r\n'
        + b"1A\r\n"  # upper-case hex, 26 bytes
        + alphabet
        + b"\r\n"
        + b"1;last\r\n!\r\n"
        + b"0;done=yes\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    server = await serve(answer(wire))
    first = await http.post_json(server.url + "/a", {}, {}, T)
    second = await http.post_json(server.url + "/b", {}, {}, T)
    assert first.status == second.status == 200
    assert first.body == second.body == b"hello" + alphabet + b"!"
    # The trailers were read to their end: the connection stayed usable for the next answer.
    assert server.connections == 1
    assert [r.target for r in server.requests] == ["/a", "/b"]


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_response_dribbled_one_byte_at_a_time(serve: Serve, framing: str) -> None:
    payload = b'{"id":"chatcmpl-1","choices":[{"index":0}]}'
    wire = b"".join(framed_writes([payload[:20], payload[20:]], framing, ("X-Id", "7")))

    async def dribble(x: Exchange) -> None:
        await x.send(*(wire[i : i + 1] for i in range(len(wire))), pause=0.001)

    server = await serve(dribble)
    resp = await http.post_json(server.url + "/slow", {}, {}, T)
    assert resp.status == 200
    assert resp.headers.get("x-id") == "7"
    assert resp.json() == {"id": "chatcmpl-1", "choices": [{"index": 0}]}


async def test_close_delimited_body(serve: Serve) -> None:
    payload = b'{"no":"length","at":"all"}'

    async def until_close(x: Exchange) -> None:
        await x.send(*framed_writes([payload[:9], payload[9:]], "close"), pause=0.01)
        await x.hang_up()

    server = await serve(until_close)
    first = await http.post_json(server.url + "/c", {}, {}, T)
    second = await http.post_json(server.url + "/c", {}, {}, T)
    assert first.body == second.body == payload
    assert server.connections == 2  # the body ended with the connection, so a new one


# --------------------------------------------------------------------------- keep-alive


async def test_sequential_calls_share_one_connection(serve: Serve) -> None:
    server = await serve(answer(lambda req: json_response({"path": req.target})))
    for i in range(3):
        resp = await http.post_json(f"{server.url}/n{i}", {}, {"i": i}, T)
        assert resp.json() == {"path": f"/n{i}"}
    assert server.connections == 1
    assert [r.conn for r in server.requests] == [0, 0, 0]


@pytest.mark.parametrize("hang_up", [True, False], ids=["server-hangs-up", "socket-left-open"])
async def test_connection_close_header_is_honoured(serve: Serve, hang_up: bool) -> None:
    async def once(x: Exchange) -> None:
        await x.send(json_response({"conn": x.request.conn}, ("Connection", "close")))
        if hang_up:
            await x.hang_up()

    server = await serve(once)
    first = await http.post_json(server.url + "/a", {}, {}, T)
    second = await http.post_json(server.url + "/b", {}, {}, T)
    assert first.json() == {"conn": 0}
    assert second.json() == {"conn": 1}  # never sent on the connection the server ended
    assert server.connections == 2


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_server_closing_an_idle_connection_costs_nothing(serve: Serve, reset: bool) -> None:
    async def answer_then_idle_close(x: Exchange) -> None:
        await x.send(json_response({"conn": x.request.conn}))
        await asyncio.sleep(0.05)  # the connection is idle in the client's pool by now
        await x.hang_up(reset=reset)

    server = await serve(answer_then_idle_close)
    first = await http.post_json(server.url + "/a", {}, {}, T)
    await asyncio.sleep(0.2)
    second = await http.post_json(server.url + "/b", {}, {}, T)
    assert first.json() == {"conn": 0}
    assert second.json() == {"conn": 1}
    assert server.connections == 2


async def test_concurrent_calls_each_get_their_own_answer(serve: Serve) -> None:
    async def echo(x: Exchange) -> None:
        rid = msgspec.json.decode(x.request.body)["id"]
        await asyncio.sleep(random.uniform(0, 0.02))  # answers finish out of order
        await x.send(json_response({"id": rid, "conn": x.request.conn}))

    server = await serve(echo)
    n = 40
    results = await asyncio.gather(
        *(http.post_json(f"{server.url}/r/{i}", {}, {"id": i}, T) for i in range(n))
    )
    assert [r.json()["id"] for r in results] == list(range(n))
    assert sorted(msgspec.json.decode(r.body)["id"] for r in server.requests) == list(range(n))
    for req in server.requests:  # each body went with its own request line
        assert req.target == f"/r/{msgspec.json.decode(req.body)['id']}"
    assert 1 <= server.connections <= n


# --------------------------------------------------------------------------- statuses, headers


async def test_204_has_no_body_and_keeps_the_connection(serve: Serve) -> None:
    async def no_content_then_json(x: Exchange) -> None:
        if x.request.target == "/empty":
            # No Content-Length: a 204 has no body, so the client must not wait for one.
            await x.send(b"HTTP/1.1 204 No Content\r\nX-Request-Id: r1\r\n\r\n")
        else:
            await x.send(json_response({"after": "204"}))

    server = await serve(no_content_then_json)
    empty = await http.post_json(server.url + "/empty", {}, {}, T)
    assert empty.status == 204
    assert empty.body == b""
    assert empty.json() is None
    assert empty.headers.get("x-request-id") == "r1"
    after = await http.post_json(server.url + "/next", {}, {}, T)
    assert after.json() == {"after": "204"}
    assert server.connections == 1


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    ],
    ids=["100", "103"],
)
async def test_interim_1xx_response_is_skipped(serve: Serve, interim: bytes) -> None:
    async def interim_then_final(x: Exchange) -> None:
        await x.send(interim, json_response({"final": True}), pause=0.01)

    server = await serve(interim_then_final)
    resp = await http.post_json(server.url + "/x", {}, {}, T)
    assert resp.status == 200
    assert resp.json() == {"final": True}


async def test_response_headers_are_case_insensitive(serve: Serve) -> None:
    wire = response(
        429,
        b'{"error":{"message":"slow down"}}',
        [("Retry-After", "7"), ("x-ratelimit-remaining-requests", "0"), ("CONTENT-type", "a/b")],
    )
    server = await serve(answer(wire))
    resp = await http.post_json(server.url + "/x", {}, {}, T)
    assert resp.status == 429
    for name in ("retry-after", "Retry-After", "RETRY-AFTER"):
        assert resp.headers.get(name) == "7"
    assert resp.headers.get("X-RateLimit-Remaining-Requests") == "0"
    assert resp.headers.get("content-type") == "a/b"
    assert resp.headers.get("x-absent") is None
    assert http.retry_after(resp.headers) == pytest.approx(7.0)

    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    assert stream.status == 429
    assert stream.headers.get("retry-after") == stream.headers.get("Retry-After") == "7"
    assert (await stream.body()).json() == {"error": {"message": "slow down"}}


async def test_response_headers_read_after_the_connection_served_another(serve: Serve) -> None:
    """A response's headers, first looked at after its connection went back to the pool
    and carried the next exchange, are still its own."""
    seen = iter(("first", "second"))

    def wire(req: Request) -> bytes:
        return response(200, b"{}", [("X-Which", next(seen)), ("x-which", "again")])

    server = await serve(answer(wire))
    one = await http.post_json(server.url + "/a", {}, {}, T)
    two = await http.post_json(server.url + "/b", {}, {}, T)
    assert server.connections == 1
    assert two.headers.get("X-WHICH") == "second, again"
    assert one.headers.get("x-which") == "first, again"
    assert "x-which" in one.headers and len(one.headers) >= 2


@pytest.mark.parametrize("pause", [0.05, 0.0], ids=["head-apart", "one-packet"])
async def test_a_chunked_bodys_trailers_are_not_headers(serve: Serve, pause: float) -> None:
    """Trailers after a chunked body (httptools reports them as headers) change neither the
    headers of a whole response nor those of a stream's error body, however they arrive."""

    async def handle(x: Exchange) -> None:
        head = response(
            429, headers=[("Retry-After", "7"), ("Transfer-Encoding", "chunked")], length=False
        )
        trailers = "Retry-After: 3600\r\nX-Amzn-ErrorType: ThrottlingException\r\n"
        body = chunked([b'{"error":{"message":"slow down"}}'], trailers=trailers)
        await x.send(head, b"".join(body), pause=pause)

    server = await serve(handle)
    resp = await http.post_json(server.url + "/x", {}, {}, T)
    assert resp.status == 429 and resp.json() == {"error": {"message": "slow down"}}
    assert resp.headers.get("retry-after") == "7" and http.retry_after(resp.headers) == 7.0
    assert "x-amzn-errortype" not in resp.headers
    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    whole = await stream.body()  # the headers first looked at once the body is in
    assert whole.headers.get("Retry-After") == "7" and "x-amzn-errortype" not in whole.headers


# --------------------------------------------------------------------------- content coding

PAYLOAD = msgspec.json.encode({"text": "compressible " * 400, "n": list(range(200))})


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize(
    ("coding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
    ids=["gzip", "deflate"],
)
async def test_compressed_body_is_decoded(
    serve: Serve, framing: str, coding: str, compress: Callable[[bytes], bytes]
) -> None:
    packed = compress(PAYLOAD)
    pieces = [packed[: len(packed) // 3], packed[len(packed) // 3 :]]
    writes = framed_writes(pieces, framing, ("Content-Encoding", coding))
    server = await serve(answer(b"".join(writes)))
    resp = await http.post_json(server.url + "/z", {}, {}, T)
    assert resp.body == PAYLOAD


# --------------------------------------------------------------------------- a large body


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_5_mb_response_body_arrives_intact(serve: Serve, framing: str) -> None:
    big = os.urandom(5 * 1024 * 1024)
    pieces = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    wire = b"".join(framed_writes(pieces, framing))
    server = await serve(answer(wire))
    resp = await http.post_json(server.url + "/big", {}, {}, T)
    assert len(resp.body) == len(big)
    assert hashlib.sha256(resp.body).digest() == hashlib.sha256(big).digest()


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("call", ["post_json", "open_sse"])
async def test_connection_refused_names_no_address(call: str) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(UpstreamConnectionError) as info:
        await getattr(http, call)(f"http://127.0.0.1:{port}/v1/x", {}, {}, T)
    assert info.value.retryable
    assert "127.0.0.1" not in str(info.value)
    assert str(port) not in str(info.value)
    assert "127.0.0.1" not in info.value.message


@pytest.mark.parametrize("after_head", [False, True], ids=["silent", "head-then-silence"])
async def test_post_json_without_a_complete_answer_times_out(
    serve: Serve, after_head: bool
) -> None:
    async def stall(x: Exchange) -> None:
        if after_head:
            await x.send(response(200, headers=[("Content-Length", "100")], length=False) + b"{")
        await silent(x)

    server = await serve(stall)
    with pytest.raises(UpstreamTimeout) as info:
        await http.post_json(server.url + "/x", {}, {}, SHORT)
    # Connected: a long answer is as likely the caller's doing, so not a health failure.
    assert info.value.health is False
    assert info.value.retryable
    assert str(server.port) not in str(info.value)


async def test_open_sse_without_a_first_byte_times_out_as_a_health_failure(serve: Serve) -> None:
    server = await serve(silent)
    with pytest.raises(UpstreamTimeout) as info:
        await http.open_sse(server.url + "/s", {}, {}, SHORT)
    assert info.value.health is True


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_body_cut_short_is_a_connection_error(
    serve: Serve, framing: str, reset: bool
) -> None:
    async def cut(x: Exchange) -> None:
        if framing == "length":
            await x.send(response(200, headers=[("Content-Length", "1000")], length=False))
        else:
            await x.send(response(200, headers=[("Transfer-Encoding", "chunked")], length=False))
            await x.send(b"3e8\r\n")  # a chunk of 1000 bytes announced
        await x.send(b'{"partial": ')
        await asyncio.sleep(0.01)
        await x.hang_up(reset=reset)

    server = await serve(cut)
    with pytest.raises(UpstreamConnectionError) as info:
        await http.post_json(server.url + "/x", {}, {}, T)
    assert info.value.retryable
    assert str(server.port) not in str(info.value)


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=[
        "not-http",
        "ssh-banner",
        "bad-status",
        "bad-length",
        "two-lengths",
        "bad-chunk-size",
        "header-without-colon",
    ],
)
async def test_garbage_answer_is_a_connection_error(serve: Serve, garbage: bytes) -> None:
    async def babble(x: Exchange) -> None:
        await x.send(garbage)  # and keep the connection open: the parser must give up
        await silent(x)

    server = await serve(babble)
    # pytest.raises lets anything else through: a raw parser exception fails the test.
    with pytest.raises(UpstreamConnectionError) as info:
        await http.post_json(server.url + "/x", {}, {}, T)
    assert isinstance(info.value, ProviderError)
    assert info.value.retryable
    assert str(server.port) not in str(info.value)


async def _read_into(stream: http.SseStream, read: str, got: list[Any]) -> None:
    """Iterate the stream's events or raw chunks into ``got`` (what came before a raise)."""
    if read == "events":
        async for event in stream.events():
            got.append(event)
    else:
        async for chunk in stream.chunks():
            got.append(chunk)


@pytest.mark.parametrize("read", ["events", "chunks"])
async def test_stream_stalling_after_its_head_times_out(serve: Serve, read: str) -> None:
    async def one_event_then_stall(x: Exchange) -> None:
        await x.send(*framed_writes([b"data: first\n\n"], "chunked")[:-1])  # no last chunk
        await silent(x)

    server = await serve(one_event_then_stall)
    stream = await http.open_sse(server.url + "/s", {}, {}, SHORT)
    assert stream.status == 200
    got: list[Any] = []
    with pytest.raises(UpstreamTimeout):
        await _read_into(stream, read, got)
    stream.close()
    if read == "events":
        assert got == [("", b"first")]
    else:
        assert b"".join(got) == b"data: first\n\n"


@pytest.mark.parametrize("read", ["events", "chunks"])
async def test_stream_cut_mid_chunk_is_a_connection_error(serve: Serve, read: str) -> None:
    async def cut(x: Exchange) -> None:
        await x.send(response(200, headers=[("Transfer-Encoding", "chunked")], length=False))
        await x.send(b"d\r\ndata: first\n\n\r\n", b"64\r\ndata: sec", pause=0.01)
        await asyncio.sleep(0.01)
        await x.hang_up()

    server = await serve(cut)
    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    got: list[Any] = []
    with pytest.raises(UpstreamConnectionError):
        await _read_into(stream, read, got)
    stream.close()
    if read == "events":
        assert got == [("", b"first")]
    else:
        assert b"".join(got).startswith(b"data: first\n\n")


# --------------------------------------------------------------------------- SSE

# Split where a naive reader breaks: mid-field, mid-line, between \r and \n, inside a blank
# line; CRLF and LF endings mixed; comments; id/retry fields; multi-line data.
SSE_PIECES = [
    b": keep-alive comment\r\nev",
    b'ent: message_start\r\ndata: {"type":"message_',
    b'start","x":"a:b"}\r',
    b"\n\r",
    b"\ndata: line one\ndata",
    b": line two\n",
    b"\n",
    b"id: 7\nretry: 1000\nevent: ping\ndata:no-space\n\n: another comment\n",
    b"event: message_stop\r\ndata: {}\r\n\r\n",
    b"data: [DONE]\n",  # the last event, with no blank line after it
]
SSE_EVENTS = [
    ("message_start", b'{"type":"message_start","x":"a:b"}'),
    ("", b"line one\nline two"),
    ("ping", b"no-space"),
    ("message_stop", b"{}"),
    ("", b"[DONE]"),
]


def _split_chunks(writes: list[bytes]) -> Iterator[bytes]:
    """Each chunk written in two, the cut inside its size line."""
    for w in writes:
        yield from (w[:1], w[1:])


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
async def test_sse_events_survive_awkward_tcp_splits(serve: Serve, framing: str) -> None:
    writes = framed_writes(SSE_PIECES, framing, ("Content-Type", "text/event-stream"))
    if framing == "chunked":
        writes = [writes[0], *_split_chunks(writes[1:])]

    async def stream_out(x: Exchange) -> None:
        await x.send(*writes, pause=0.005)
        if framing == "close":
            await x.hang_up()

    server = await serve(stream_out)
    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    assert stream.status == 200
    assert stream.headers.get("content-type") == "text/event-stream"
    assert [e async for e in stream.events()] == SSE_EVENTS
    stream.close()


@pytest.mark.parametrize("tail", [b"data: last\n", b"data: last"], ids=["lf", "no-lf"])
async def test_sse_final_event_without_blank_line(serve: Serve, tail: bytes) -> None:
    async def stream_out(x: Exchange) -> None:
        await x.send(*framed_writes([b"event: a\ndata: 1\n\n", tail], "close"), pause=0.005)
        await x.hang_up()

    server = await serve(stream_out)
    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    assert [e async for e in stream.events()] == [("a", b"1"), ("", b"last")]


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_chunks_yield_every_body_byte_in_order(serve: Serve, framing: str) -> None:
    body = [os.urandom(n) for n in (1, 700, 13, 40000, 5)]  # binary, AWS event-stream style

    async def stream_out(x: Exchange) -> None:
        await x.send(*framed_writes(body, framing), pause=0.005)

    server = await serve(stream_out)
    stream = await http.open_sse(server.url + "/s", {"accept": "application/octet-stream"}, {}, T)
    got = [c async for c in stream.chunks()]
    assert all(got)
    assert b"".join(got) == b"".join(body)


async def test_body_of_an_error_status_on_a_stream(serve: Serve) -> None:
    error = {"error": {"type": "rate_limit_error", "message": "slow down"}}
    wire = response(429, msgspec.json.encode(error), [("Retry-After", "3")])
    server = await serve(answer(wire))
    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    assert stream.status == 429
    resp = await stream.body()
    assert resp.status == 429
    assert resp.body == msgspec.json.encode(error)
    assert resp.json() == error
    assert http.retry_after(resp.headers) == pytest.approx(3.0)
    stream.close()
    again = await http.post_json(server.url + "/x", {}, {}, T)
    assert again.status == 429  # the connection (or a new one) still serves the next call


@pytest.mark.parametrize("when", ["after-first-event", "before-reading"])
async def test_closing_a_stream_early_drops_it_and_the_next_call_works(
    serve: Serve, when: str
) -> None:
    async def endless_then_json(x: Exchange) -> None:
        if x.request.target == "/s":
            head = response(200, headers=[("Transfer-Encoding", "chunked")], length=False)
            await x.send(head, *chunked([b"event: a\ndata: 1\n\n"])[:-1])
            await silent(x)  # more would follow; the client leaves first
        else:
            await x.send(json_response({"conn": x.request.conn}))

    server = await serve(endless_then_json)
    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    got = []
    if when == "after-first-event":
        async for event in stream.events():  # as providers.wire does: break, then close()
            got.append(event)
            break
    stream.close()
    assert got == ([("a", b"1")] if when == "after-first-event" else [])
    # The half-read connection is dropped, never handed to the next call.
    await asyncio.wait_for(server.conn_done[0].wait(), T)
    resp = await http.post_json(server.url + "/after", {}, {}, T)
    assert resp.json() == {"conn": 1}


# --------------------------------------------------------------------------- userinfo


@pytest.mark.parametrize("call", ["post_json", "open_sse"])
async def test_userinfo_becomes_basic_auth(serve: Serve, call: str) -> None:
    server = await serve(answer(response(200, b"data: ok\n\n")))
    url = f"http://user:p%40ss@127.0.0.1:{server.port}/x?q=1"
    got = await getattr(http, call)(url, {"x-other": "1"}, {}, T)
    if call == "open_sse":
        got.close()
    [req] = server.requests
    assert req.line == "POST /x?q=1 HTTP/1.1"
    assert req.header_all("host") == [f"127.0.0.1:{server.port}"]
    assert req.header_all("authorization") == ["Basic " + base64.b64encode(b"user:p@ss").decode()]
    assert req.header("x-other") == "1"


@pytest.mark.parametrize("name", ["authorization", "Authorization"])
async def test_an_explicit_authorization_header_wins_over_userinfo(serve: Serve, name: str) -> None:
    server = await serve(answer(json_response({})))
    url = f"http://user:secret@127.0.0.1:{server.port}/x"
    await http.post_json(url, {name: "Bearer sk-own"}, {}, T)
    [req] = server.requests
    assert req.header_all("authorization") == ["Bearer sk-own"]
    assert "secret" not in req.line
    assert "@" not in req.line


async def test_userinfo_never_reaches_an_error() -> None:
    port = free_port()
    with pytest.raises(UpstreamConnectionError) as info:
        await http.post_json(f"http://user:hunter2@127.0.0.1:{port}/x", {}, {}, T)
    for text in (str(info.value), info.value.detail):
        assert "hunter2" not in text
        assert "user:" not in text


# --------------------------------------------------------------------------- HTTPS


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA (its file is what SSL_CERT_FILE names) and server contexts it did and did not sign."""
    d = tmp_path_factory.mktemp("tls")
    ca, stranger = issue_ca(), issue_ca("someone else's CA")
    ca_file, _ = ca.write(d, "ca")
    return {
        "ca_file": ca_file,
        "good": server_context(issue_cert(ca, ["localhost", "127.0.0.1"]), d, "good"),
        "other_name": server_context(issue_cert(ca, ["example.com"]), d, "other-name"),
        "other_ca": server_context(issue_cert(stranger, ["127.0.0.1"]), d, "other-ca"),
    }


@pytest.fixture
def trust_ca(tls: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default verification at the throwaway CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls["ca_file"]))
    return Path(tls["ca_file"])


async def test_https_to_a_trusted_certificate(
    serve: Serve, tls: dict[str, Any], trust_ca: Path
) -> None:
    server = await serve(answer(json_response({"tls": True})), tls=tls["good"])
    assert server.url.startswith("https://")
    resp = await http.post_json(server.url + "/v1/x", {"x-api-key": "k"}, {"a": 1}, T)
    assert resp.json() == {"tls": True}
    [req] = server.requests
    assert req.header_all("host") == [f"127.0.0.1:{server.port}"]
    assert req.body == b'{"a":1}'


@pytest.mark.parametrize("which", ["other_name", "other_ca"])
async def test_https_certificate_not_matching_is_refused(
    serve: Serve, tls: dict[str, Any], trust_ca: Path, which: str
) -> None:
    server = await serve(answer(json_response({"served": True})), tls=tls[which])
    with pytest.raises(UpstreamConnectionError) as info:
        await http.post_json(server.url + "/v1/x", {"x-api-key": "k"}, {}, T)
    assert info.value.retryable
    assert str(server.port) not in str(info.value)
    assert server.requests == []  # nothing was sent to it
