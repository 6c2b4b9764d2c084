"""Faults of routeguard's upstream HTTP client (``providers.http``) found in review, each
pinned by the wire exchange that showed it.

A stream closed with its end already buffered past the read-pause mark leaves a connection
that still reads; URLs and headers the request line cannot carry (a host with an empty or
over-long label, a lone surrogate, a malformed URL) are ProviderErrors that name no secret,
never raw ValueErrors; a non-ASCII host goes out in its IDNA form; raw deflate and
concatenated gzip members decode (as they did under aiohttp); a response head that never ends
is cut at a cap instead of buffered until the deadline; a POST the upstream read is never
sent a second time by the transport, even when the reused connection then breaks without an
answer byte; closing a stream ends the iteration another task has waiting on it at once; a
Transfer-Encoding that does not end in chunked delimits the body by the connection's close.
Same raw server and fixtures as
``test_http_wire.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from routeguard.errors import ProviderError, UpstreamConnectionError
from routeguard.providers import h1, http
from wire_server import (
    Exchange,
    Serve,
    answer,
    framed_writes,
    json_response,
    raw_servers,
    response,
    silent,
)

T = 2.0  # the attempt timeout


@pytest.fixture(autouse=True)
async def serve() -> AsyncIterator[Serve]:
    """Raw servers for the test (``await serve(handler, tls=None)``), all stopped after it,
    then the client's pooled connections closed (every test, servers or not)."""
    async with raw_servers() as start:
        yield start
    await http.close_session()


# --------------------------------------------------------------------------- flow control


async def test_stream_closed_with_its_end_buffered_past_the_pause_mark_keeps_reading(
    serve: Serve,
) -> None:
    # The client stops reading a stream's socket once more than 1 MiB waits unread. When the
    # bytes that cross that mark also end the body, the response is complete but its socket
    # paused; closing the stream there must not pool a connection that never reads again.
    first = b"data: first\n\n"
    rest = b": " + b"p" * (1 << 20) + b"\n\n"  # one comment, just past 1 MiB
    sent = asyncio.Event()

    async def stream_then_json(x: Exchange) -> None:
        if x.request.target == "/s":
            head = response(200, headers=[("Content-Length", str(len(first + rest)))], length=False)
            await x.send(head + first)
            await asyncio.sleep(0.05)  # the client has read the first event by now
            await x.send(rest)
            sent.set()
        else:
            await x.send(json_response({"conn": x.request.conn}))

    server = await serve(stream_then_json)
    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    # As providers.wire does: the events stay referenced (its decoder's last chunks are
    # still being yielded) while the body goes on arriving, then close().
    events = stream.events()
    async for event in events:
        assert event == ("", b"first")
        break
    await asyncio.wait_for(sent.wait(), T)
    await asyncio.sleep(0.2)  # the rest is read (up to the pause) while the caller lags
    stream.close()
    await events.aclose()
    resp = await http.post_json(server.url + "/next", {}, {}, T)
    assert resp.json() == {"conn": 0}  # the finished stream's connection, reading again
    assert server.connections == 1


# --------------------------------------------------------------------------- unsendable


SECRET = "sk-review-0123456789abcdef"


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("http://a..b/x", {}),  # an empty label: getaddrinfo's UnicodeError
        ("http://" + "a" * 64 + ".example/x", {}),  # a label over 63 characters
        ("https://a..b/x", {}),
        ("http://[::1/x", {}),  # urlsplit's "Invalid IPv6 URL"
        ("http://127.0.0.1:1/x\udc80?key=" + SECRET, {}),  # a lone surrogate in the path
        ("http://127.0.0.1:1/x", {"x-meta": "\udc80"}),  # ... in a header value
    ],
    ids=[
        "empty-label",
        "long-label",
        "empty-label-tls",
        "bad-ipv6",
        "surrogate-path",
        "surrogate-header",
    ],
)
@pytest.mark.parametrize("call", ["post_json", "open_sse"])
async def test_unsendable_url_or_header_is_a_provider_error_naming_no_secret(
    call: str, url: str, headers: dict[str, str]
) -> None:
    sent = {"authorization": f"Bearer {SECRET}", **headers}
    # pytest.raises lets anything else through: a raw ValueError fails the test.
    with pytest.raises(ProviderError) as info:
        await getattr(http, call)(url, sent, {}, T)
    assert info.value.health is False  # the deployment's URL or headers, not the upstream
    for text in (str(info.value), info.value.detail or "", repr(info.value.args)):
        assert SECRET not in text


def test_a_non_ascii_host_goes_out_in_its_idna_form() -> None:
    t = h1.target("https://b\u00fccher.example:8443/v1/x")
    assert t.host == "xn--bcher-kva.example"  # what the TLS name check and DNS see
    assert t.host_header == "xn--bcher-kva.example:8443"


# --------------------------------------------------------------------------- content coding

PAYLOAD = b'{"text": "' + b"compressible " * 400 + b'"}'


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _gzip_members(data: bytes) -> bytes:
    return gzip.compress(data[:1000]) + gzip.compress(data[1000:3000]) + gzip.compress(data[3000:])


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        ("deflate", _raw_deflate(PAYLOAD)),  # no zlib header, as some servers send it
        ("gzip", _gzip_members(PAYLOAD)),  # concatenated members (RFC 1952 2.2)
        ("deflate", gzip.compress(PAYLOAD)),  # gzip bytes labelled deflate
    ],
    ids=["raw-deflate", "gzip-members", "gzip-as-deflate"],
)
async def test_compressed_body_variants_decode(
    serve: Serve, framing: str, coding: str, packed: bytes
) -> None:
    # Pieces cut at a member's end and inside the next member's header.
    cut = len(gzip.compress(PAYLOAD[:1000])) if coding == "gzip" else len(packed) // 2
    pieces = [packed[:cut], packed[cut : cut + 3], packed[cut + 3 :]]
    writes = framed_writes(pieces, framing, ("Content-Encoding", coding))

    async def piecewise(x: Exchange) -> None:
        await x.send(*writes, pause=0.005)

    server = await serve(piecewise)
    resp = await http.post_json(server.url + "/z", {}, {}, T)
    assert resp.body == PAYLOAD
    stream = await http.open_sse(server.url + "/z", {}, {}, T)
    assert b"".join([c async for c in stream.chunks()]) == PAYLOAD


async def test_garbage_after_a_gzip_member_is_a_connection_error(serve: Serve) -> None:
    packed = gzip.compress(PAYLOAD) + b"not gzip at all"
    server = await serve(answer(response(200, packed, [("Content-Encoding", "gzip")])))
    with pytest.raises(ProviderError) as info:
        await http.post_json(server.url + "/z", {}, {}, T)
    assert info.value.retryable


# --------------------------------------------------------------------------- hostile heads


@pytest.mark.parametrize("shape", ["many-headers", "one-endless-line"])
async def test_an_endless_response_head_is_a_connection_error_not_a_memory_sink(
    serve: Serve, shape: str
) -> None:
    # aiohttp capped a head at 128 fields of 8 KiB; without a cap the client would buffer
    # what a broken or hostile upstream sends until the attempt's deadline, however long.
    if shape == "many-headers":
        flood = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(3000))
    else:
        flood = b"X-Pad: " + b"v" * (3 << 20)

    async def endless_head(x: Exchange) -> None:
        await x.send(b"HTTP/1.1 200 OK\r\n", flood)
        await silent(x)

    server = await serve(endless_head)
    with pytest.raises(UpstreamConnectionError) as info:
        await http.post_json(server.url + "/x", {}, {}, T)
    assert info.value.retryable


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_a_request_the_upstream_read_is_never_sent_twice(serve: Serve, reset: bool) -> None:
    # The second call goes on the pooled connection; the upstream reads it, works a while
    # and drops the connection without answering (a crash, a balancer's idle timeout). It
    # may have done and billed the work: resending is the fallback layer's decision, so the
    # transport reports the failure and the upstream has seen the request once.
    async def first_answered_then_dropped(x: Exchange) -> None:
        if x.request.target == "/a":
            await x.send(json_response({"conn": x.request.conn}))
            return
        await asyncio.sleep(0.05)
        await x.hang_up(reset=reset)

    server = await serve(first_answered_then_dropped)
    first = await http.post_json(server.url + "/a", {}, {}, T)
    assert first.json() == {"conn": 0}
    with pytest.raises(UpstreamConnectionError):
        await http.post_json(server.url + "/b", {}, {"n": 2}, T)
    await asyncio.sleep(0.1)  # a resend, if any, would have reached the server by now
    assert [r.target for r in server.requests] == ["/a", "/b"]
    assert server.connections == 1


async def test_closing_a_stream_ends_a_read_waiting_in_another_task(serve: Serve) -> None:
    # A consumer task waits for the next event; another task (a client gone, a drain)
    # closes the stream: the consumer's iteration ends, not with a stall error at the
    # stream's gap timeout.
    async def one_event_then_quiet(x: Exchange) -> None:
        sse = [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")]
        await x.send(response(200, b"", sse, length=False))
        await x.send(b"a\r\ndata:1\r\n\r\n\r\n")  # one event (10 bytes), then nothing
        await x.until_client_hangs_up()

    server = await serve(one_event_then_quiet)
    stream = await http.open_sse(server.url + "/s", {}, {}, T)
    got: list[tuple[str, bytes]] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for event in stream.events():
            got.append(event)
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    await asyncio.sleep(0)  # the consumer is waiting for more
    stream.close()
    await task  # raised UpstreamTimeout ("stalled") after T before the fix
    assert got == [("", b"1")]


async def test_a_transfer_encoding_not_ending_in_chunked_runs_to_the_close(serve: Serve) -> None:
    # RFC 9112 6.3: a response whose Transfer-Encoding does not end in chunked is delimited
    # by the close; the parser reads it so, and the client must take the close as its end.
    async def identity_then_close(x: Exchange) -> None:
        await x.send(response(200, b'{"ok": true}', [("Transfer-Encoding", "identity")],
                              length=False))  # fmt: skip
        await x.hang_up()

    server = await serve(identity_then_close)
    resp = await http.post_json(server.url + "/a", {}, {}, T)
    assert resp.status == 200
    assert resp.json() == {"ok": True}
