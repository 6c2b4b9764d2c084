"""Moving bytes over raw ASGI for the simulated upstream: bodies, streams, pacing, disconnects.

A wire format renders a stream as a :class:`StreamPlan` (opening frames, one frame per
content token, closing frames, and the frame a mid-stream failure sends instead of the
rest); :func:`send_stream` plays it with the request's latency: headers at once, ``ttft``
before the first frame, then one content frame every 1/tokens_per_s seconds. Without pacing
everything after the headers goes out in one write, which keeps benchmarks cheap. Every
wait also watches for the client going away, so abandoned requests stop early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from routeguard.mock.behaviour import Latency

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]

_MAX_BODY = 64 * 1024 * 1024

_encode = msgspec.json.Encoder().encode
_SENTINEL = "\x00piece\x00"
_SENTINEL_JSON = _encode(_SENTINEL)


def encode(obj: Any) -> bytes:
    """JSON bytes of ``obj`` (msgspec)."""
    return _encode(obj)


class FrameTemplate:
    """A JSON frame encoded once with one hole, filled per token by concatenation.

    Stream frames differ only in their text piece, so encoding the frame once with a
    sentinel and splicing the encoded piece in is several times cheaper than encoding a
    dict per token.
    """

    __slots__ = ("_prefix", "_suffix")

    def __init__(self, obj: Any, *, before: bytes = b"data: ", after: bytes = b"\n\n") -> None:
        encoded = _encode(obj)
        prefix, found, suffix = encoded.partition(_SENTINEL_JSON)
        if not found:
            raise ValueError("frame template has no PIECE hole")
        self._prefix = before + prefix
        self._suffix = suffix + after

    def fill(self, value: Any) -> bytes:
        """The frame with ``value`` (JSON-encoded) in the hole."""
        return self._prefix + _encode(value) + self._suffix


PIECE = _SENTINEL
"""The placeholder to put where a :class:`FrameTemplate` takes its value."""


class BodyTooLarge(Exception):
    """The request body is over the mock's 64 MiB limit."""


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def send_body(send: Send, status: int, headers: Headers, body: bytes) -> None:
    """A complete response in two ASGI messages."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Pacer:
    """Sleeps for one request, returning early (False) once the client has disconnected."""

    __slots__ = ("_receive", "_watch")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._watch: asyncio.Task[Message] | None = None

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False if the client went away meanwhile (stop sending then)."""
        if seconds <= 0:
            return not self.gone
        if self._watch is None:
            # The body is fully read, so the next message can only be http.disconnect.
            self._watch = asyncio.ensure_future(self._receive())
        done, _ = await asyncio.wait((self._watch,), timeout=seconds)
        return not done

    @property
    def gone(self) -> bool:
        """Whether the client is known to have disconnected."""
        return self._watch is not None and self._watch.done()

    def close(self) -> None:
        """Stop watching (the response is complete)."""
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()


@dataclass(slots=True)
class StreamPlan:
    """A streamed answer as frames: ``head``, one ``content`` frame per token, ``tail``.

    ``error`` replaces everything after the second content frame in ``midstream-error``
    mode; it includes whatever must close the body (Gemini's JSON array bracket).
    """

    head: list[bytes]
    content: list[bytes]
    tail: list[bytes]
    error: bytes
    headers: Headers = field(default_factory=lambda: SSE_HEADERS)


async def send_stream(
    send: Send,
    pacer: Pacer,
    plan: StreamPlan,
    latency: Latency,
    *,
    midstream_error: bool,
    extra_headers: Headers,
    truncate: bool = False,
) -> bool:
    """Play ``plan`` as a streamed 200 response with the request's latency; ``truncate``
    stops after two content frames and closes the body with no terminator and no error.
    False if the client went away before the end."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [*plan.headers, *extra_headers]}
    )
    if latency.ttft > 0 and not await pacer.sleep(latency.ttft):
        return False
    content = plan.content[:2] if midstream_error or truncate else plan.content
    rest = [plan.error] if midstream_error else [] if truncate else plan.tail
    rate = latency.tokens_per_s
    if rate is None or len(content) < 2:
        await send({"type": "http.response.body", "body": b"".join((*plan.head, *content, *rest))})
        return True
    loop = asyncio.get_running_loop()
    await send(
        {
            "type": "http.response.body",
            "body": b"".join((*plan.head, content[0])),
            "more_body": True,
        }
    )
    start = loop.time()
    for i, frame in enumerate(content[1:], start=1):
        # Sleep to an absolute schedule so timer slack does not accumulate over long answers.
        if not await pacer.sleep(start + i / rate - loop.time()):
            return False
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"".join(rest)})
    return True
