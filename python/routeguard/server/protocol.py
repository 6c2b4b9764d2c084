"""The proxy's HTTP/1.1 server protocol: ASGI over an asyncio protocol and llhttp (httptools).

uvicorn still runs the server (listening sockets, workers, lifespan, signals, graceful
shutdown); this is the class its ``http`` setting names (:data:`PROTOCOL`), in place of
uvicorn's own httptools protocol, for less Python per request: one scope and one task per
request, the body handed over without an event per chunk, deadlines kept as timestamps that
one sweep per event loop checks (no timer armed and cancelled per request), a response
whose head declares a Content-Length written in one piece with its body, and the parts of a
streamed response sent in one turn of the event loop written together at its end.

Per connection: requests are read and answered in order (a pipelined request waits, with
reading paused, until the one before it is answered; past :data:`MAX_QUEUED` waiting,
nothing more is read and the connection closes after them); a request body is buffered up to
:data:`HIGH_WATER` before reading pauses until the app takes it. Deadlines, when the app
carries a :class:`~routeguard.server.connections.ConnectionGuard`: the headers of the first
request within ``header_timeout`` of the connection opening, those of a later one within
``header_timeout`` of its first byte (else ``408`` and close); the body within
``body_timeout`` (plus a grace: the app answers 408 itself first) of the headers; once
the socket's write buffer is full, the client must make room within ``write_timeout``, else
the connection is aborted (a request running sees the disconnect). No
deadline runs while reading is held for a pipelined request (the client is not the one
waiting then); the wait the client is in gets its deadline when reading resumes. Without a
guard there are no read deadlines. Either way an idle keep-alive connection closes after
uvicorn's ``timeout_keep_alive``. A request that cannot be parsed gets ``400``, one whose
head passes :data:`MAX_HEAD` bytes ``431``, and the connection closes. Upgrades (WebSocket,
h2c) are not served: the request is answered as a plain HTTP request. No access log (the
proxy keeps its own request log).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

import httptools

from routeguard.deadline import sweep_of
from routeguard.http_tokens import is_token
from routeguard.server.auth import BODY_READY, CONNECTION_KEY
from routeguard.server.connections import BODY_GRACE, ConnectionGuard, find_guard, plain_response

log = logging.getLogger("routeguard.server")

PROTOCOL = "routeguard.server.protocol:HttpProtocol"
"""The import string for uvicorn's ``http`` setting (workers import it by name)."""

HIGH_WATER = 1 << 16
"""Bytes of request body buffered before reading pauses until the app takes them."""

SWEEP_S = 0.25
"""How often the deadlines of an event loop's connections are checked."""

MAX_HEAD = 1 << 20
"""Bytes a request's head (request line and headers) may take before it gets ``431`` and
the connection closes: kept growing, every piece of a head is copied behind all before it."""

MAX_QUEUED = 64
"""Pipelined requests read ahead of the one being answered; past that nothing more is read:
those queued are answered and the connection closes (a read of tiny pipelined requests,
each held as a scope until its turn, would hold many times the bytes read)."""

_JOIN_MAX = 1 << 16  # a longer body goes in its own write rather than copied behind the head
# A streamed response's parts sent in one turn of the event loop (the events of one upstream
# read) leave in one write at the end of that turn, up to this many bytes (then at once).
_COALESCE_MAX = 1 << 16
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Response header names found valid, to their lower-case form (an app sends the same few).
_LOWERED: dict[bytes, bytes] = {}
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def _lowered(name: bytes) -> bytes:
    """``name`` in lower case, remembered (RuntimeError when it is not a token)."""
    if not is_token(name):
        raise RuntimeError("invalid HTTP header name")
    low = name.lower()
    if len(_LOWERED) < 4096:  # arbitrary names cannot grow it without bound
        _LOWERED[bytes(name)] = low
    return low


_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_NO_BODY = frozenset((204, 304))

# What a connection is waiting for: it decides the deadline and what its expiry does.
_NEW, _HEADERS, _BODY, _APP, _IDLE = range(5)


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


class HttpProtocol(asyncio.Protocol):
    """One client connection (see the module docstring); built by uvicorn per connection."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.root_path: str = config.root_path
        self.keep_alive_s: float = config.timeout_keep_alive
        self.guard: ConnectionGuard | None = find_guard(self.app)
        self.parser = httptools.HttpRequestParser(self)
        # Bytes after a `Connection: close` request are ignored, not a parse error that
        # would close the connection before that request's answer is written.
        lenient = getattr(self.parser, "set_dangerous_leniencies", None)  # httptools >= 0.6.3
        if lenient is not None:
            lenient(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.phase = _NEW
        self.deadline: float | None = None
        self.reading: _Cycle | None = None  # the request whose headers or body are arriving
        self.current: _Cycle | None = None  # the request the app is answering
        self.queued: deque[_Cycle] = deque()  # pipelined requests read in full, waiting
        self.read_paused = False
        self.write_paused = False
        self.drained: list[asyncio.Future[None]] = []
        self.write_wait: _WriteWait | None = None  # the deadline of a full write buffer
        self.closed = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect = False
        self._head_bytes = 0  # read while a request's head is awaited
        self._flooded = False  # MAX_QUEUED reached: nothing more is read

    # ------------------------------------------------------------ connection events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection; start the first request's header deadline."""
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.server_state.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        guard = self.guard
        if guard is not None:
            if not guard.admit(self):
                transport.write(
                    plain_response(b"503 Service Unavailable", b"too many connections waiting")
                )
                transport.close()
                return
            self.deadline = time.monotonic() + guard.header_timeout
        sweep_of(self.loop, SWEEP_S).watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; a request still running sees a disconnect."""
        self.closed = True
        self.deadline = None
        self.server_state.connections.discard(self)
        sweep_of(self.loop, SWEEP_S).drop(self)
        if self.guard is not None:
            self.guard.closed(self)
        for cycle in (self.current, self.reading, *self.queued):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self._end_write_wait()
        self._wake_drained()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a malformed request gets 400 and the connection closes."""
        if self.phase == _IDLE:
            # The first bytes of the next request start its header deadline here: the
            # parser skips blank lines before a request without starting a message.
            # (Without a guard the idle deadline runs on until a message begins.)
            self.phase = _NEW
            if self.guard is not None:
                self.deadline = time.monotonic() + self.guard.header_timeout
        if self.phase in (_NEW, _HEADERS):
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                log.warning("request head too large received")
                self._refuse(b"431 Request Header Fields Too Large", b"Request head too large.")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades are not served: the request is answered as plain HTTP, then the
            # connection closes (the parser reads nothing after an upgrade).
            for cycle in (self.current, self.reading, *self.queued):
                if cycle is not None:
                    cycle.keep_alive = False
        except httptools.HttpParserError:
            if self._flooded:  # (the parser stopped on it) answer those queued, then close
                self.queued[-1].keep_alive = False
                self._pause_reading()
                self.phase, self.deadline = _APP, None  # no request is being read any more
                return
            log.warning("invalid HTTP request received")
            self._refuse(b"400 Bad Request", b"Invalid HTTP request received.")

    def eof_received(self) -> bool | None:
        """The client's FIN closes the connection (as under uvicorn): an answer not yet
        written is not sent."""
        return None

    def pause_writing(self) -> None:
        """The transport's buffer is full: ``send`` waits, for ``write_timeout`` at most."""
        self.write_paused = True
        if self.guard is not None and self.write_wait is None:
            self.write_wait = _WriteWait(self, time.monotonic() + self.guard.write_timeout)
            sweep_of(self.loop, SWEEP_S).watch(self.write_wait)

    def resume_writing(self) -> None:
        """The transport's buffer drained."""
        self.write_paused = False
        self._end_write_wait()
        self._wake_drained()

    def _end_write_wait(self) -> None:
        wait, self.write_wait = self.write_wait, None
        if wait is not None:
            sweep_of(self.loop, SWEEP_S).drop(wait)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close when idle, else after the current answer."""
        if self.current is None:
            self.transport.close()
        else:
            self.current.keep_alive = False

    # ------------------------------------------------------------ the guard's view

    @property
    def evictable(self) -> bool:
        """No app is working for it: still sending headers, idle between requests, or
        sending the body of a request already answered (refused before its body)."""
        return self.current is None

    def drop(self) -> None:
        """Close this connection now (to make room under the guard's cap)."""
        waiting = self.phase in (_NEW, _HEADERS) and self.current is None
        if self.guard is not None:
            self.guard.closed(self)
        self.deadline = None
        if not self.transport.is_closing():
            if waiting:  # one awaiting a request's headers gets an answer; idle ones do not
                self.transport.write(
                    plain_response(b"408 Request Timeout", b"connection closed: headers too slow")
                )
            self._close()

    def expired(self) -> None:
        """The deadline of the current wait passed (called by the sweep)."""
        self.deadline = None
        if self.transport.is_closing():
            return
        if self.phase in (_NEW, _HEADERS) and self.current is None and self.guard is not None:
            self.transport.write(
                plain_response(b"408 Request Timeout", b"headers not received in time")
            )
        self._close()

    def _authenticated(self) -> None:
        if self.guard is not None:
            self.guard.authenticated(self)

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        """A request starts: its header deadline runs (from the connection's start for
        the first request)."""
        self._url = b""
        self._headers = []
        self._expect = False
        if self.guard is None:
            self.deadline = None  # no read deadlines (this ends the idle one)
        elif self.deadline is None and not self.queued:
            # (else the connect or first byte's deadline runs; or the server is holding
            # reading for queued requests, and the deadline starts when it reads again)
            self.deadline = time.monotonic() + self.guard.header_timeout
        self.phase = _HEADERS

    def on_url(self, url: bytes) -> None:
        """Part of the request target."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header line, name lowered."""
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Headers in: build the scope; start the app now or after the request before."""
        if len(self.queued) >= MAX_QUEUED:
            self._flooded = True
            raise RuntimeError("too many pipelined requests")  # stops the parser
        self._head_bytes = 0
        parser = self.parser
        version = parser.get_http_version()
        url = httptools.parse_url(self._url)
        raw_path: bytes = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"),
            "root_path": self.root_path,
            "path": self.root_path + path,
            "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": url.query or b"",
            "headers": self._headers,
            "state": self.app_state.copy(),
        }
        if self.guard is not None:
            mark: Callable[[], None] = self._authenticated
            scope[CONNECTION_KEY] = mark
        keep_alive = version != "1.0" and parser.should_keep_alive()
        cycle = _Cycle(self, scope, keep_alive, self._expect)
        scope["extensions"] = {BODY_READY: cycle.body_ready}
        self.reading = cycle
        self.phase = _BODY
        if self.current is None:
            self._start(cycle)
            self._client_turn()
        else:
            # Held, with reading paused, until the request before it is answered: the
            # client is not the one waiting then, so no deadline runs until it starts.
            self.queued.append(cycle)
            self.deadline = None
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        """A piece of the body: to the app; reading pauses past :data:`HIGH_WATER`."""
        cycle = self.reading
        if cycle is None or cycle.complete:
            return
        cycle.body.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > HIGH_WATER:
            self._pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        """The whole request arrived: no deadline until the next one starts."""
        cycle = self.reading
        self.reading = None
        self.phase = _APP
        self.deadline = None
        if cycle is not None:
            cycle.more_body = False
            cycle.wake()
            if cycle.complete and self.current is None and not self.queued:
                self._idle()  # answered before its body was read in full

    # ------------------------------------------------------------ requests

    def _start(self, cycle: _Cycle) -> None:
        self.current = cycle
        task = self.loop.create_task(cycle.run())
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def answered(self, cycle: _Cycle) -> None:
        """``cycle``'s response is complete: close, or serve the next request."""
        self.server_state.total_requests += 1
        if self.current is cycle:
            self.current = None
        if not cycle.keep_alive or self.closed:
            self.transport.close()
            return
        if self.queued:
            nxt = self.queued.popleft()
            self._start(nxt)
            if not self.queued:
                self._client_turn()
                if self.reading is None or self.reading.buffered <= HIGH_WATER:
                    self._resume_reading()
            return
        self._resume_reading()
        if self.phase == _APP:  # nothing of a next request yet: idle until it comes
            self._idle()

    def _client_turn(self) -> None:
        """Start the deadline of what the client is sending now (headers or body), if any."""
        guard = self.guard
        if guard is None:
            return
        if self.phase == _HEADERS:
            self.deadline = time.monotonic() + guard.header_timeout
        elif self.phase == _BODY and self.reading is not None:
            self.deadline = time.monotonic() + guard.body_timeout + BODY_GRACE

    def _idle(self) -> None:
        self.phase = _IDLE
        self.deadline = time.monotonic() + self.keep_alive_s

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.closed and not self._flooded:
            self.read_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Wait until the transport takes writes again (or the connection is gone)."""
        fut = self.loop.create_future()
        self.drained.append(fut)
        await fut

    def _wake_drained(self) -> None:
        drained, self.drained = self.drained, []
        for fut in drained:
            if not fut.done():
                fut.set_result(None)

    def _refuse(self, status: bytes, message: bytes) -> None:
        """Answer a request that never reached the app, and close."""
        if not self.transport.is_closing():
            if self.current is None:
                self.transport.write(plain_response(status, message))
            self._close()

    def _close(self) -> None:
        """Close, after what the response being sent queued for the end of the loop's turn
        (sent, as far as its app knows)."""
        if self.current is not None:
            self.current._flush()
        self.transport.close()


class _WriteWait:
    """A full write buffer's deadline, swept with the connections' own: a client that has
    not made room by then is cut off."""

    __slots__ = ("conn", "deadline")

    def __init__(self, conn: HttpProtocol, deadline: float) -> None:
        self.conn = conn
        self.deadline: float | None = deadline

    def expired(self) -> None:
        """Abort the connection (closing would wait to write what the client does not read)."""
        self.deadline = None
        conn = self.conn
        conn._end_write_wait()
        log.info("client %s left its answer unread for server.write_timeout: connection cut",
                 conn.client)  # fmt: skip
        conn.transport.abort()


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


class _Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of the app."""

    __slots__ = (
        "bodiless", "body", "buffered", "chunked", "complete", "conn", "disconnected",
        "expect", "final_sent", "head", "keep_alive", "more_body", "pending", "pending_bytes",
        "remaining", "scope", "started", "waiter",
    )  # fmt: skip

    def __init__(
        self, conn: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect = expect
        self.body: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.final_sent = False  # receive has handed over the end of the body
        self.disconnected = False
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.complete = False
        self.chunked = False
        self.remaining: int | None = None  # bytes still due under a Content-Length
        self.head: bytes | None = None  # a sized response's head, sent with its body
        self.bodiless = False  # HEAD, 204, 304: body bytes from the app are dropped
        # A streamed response's bytes not written yet (see _hold): written at the end of the
        # loop's turn, or with the response's last bytes, whichever comes first.
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def body_ready(self) -> bool:
        """Whether the whole body has arrived and ``receive`` has not handed it over yet
        (reading it then never waits)."""
        return not self.more_body and not self.final_sent and not self.disconnected

    def wake(self) -> None:
        """Wake a ``receive`` waiting for body or disconnect."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self) -> None:
        """Run the app on this request; answer 500 when it fails before responding."""
        conn = self.conn
        try:
            await conn.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("exception in the ASGI app", exc_info=exc)
            self._failed()
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.complete and not self.disconnected:
                log.error("the ASGI app returned without completing its response")
                self._failed()

    def _failed(self) -> None:
        transport = self.conn.transport
        if self.disconnected or transport.is_closing():
            return
        self._flush()
        if not self.started:
            failed = plain_response(b"500 Internal Server Error", b"Internal Server Error")
            if self.scope["method"] == "HEAD":  # its head alone (RFC 9110 9.3.2)
                failed = failed[: failed.index(b"\r\n\r\n") + 4]
            transport.write(failed)
        elif self.head is not None:
            transport.write(self.head)
            self.head = None
        transport.close()

    async def receive(self) -> dict[str, Any]:
        """The next piece of the body; ``http.disconnect`` once the client is gone or the
        response is complete (after the body's end, it waits for one of those)."""
        conn = self.conn
        if self.expect and not self.started and not conn.transport.is_closing():
            self.expect = False
            conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not (self.disconnected or self.complete) and (
            self.final_sent or (not self.body and self.more_body)
        ):
            if conn.reading is self:
                conn._resume_reading()
            self.waiter = conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self.buffered = 0
        if conn.reading is self and conn.current is self:
            conn._resume_reading()
        if not self.more_body:
            self.final_sent = True
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        """Write the response: its head (held for a sized body), then its body."""
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self._start(message)
        elif not self.complete:
            if kind != "http.response.body":
                raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"ASGI message {kind!r} sent after the response completed")

    def _start(self, message: dict[str, Any]) -> None:
        # Checked before anything is kept: an app that sends an invalid head gets a 500
        # written for it (nothing of its head has been written).
        status = int(message["status"])
        if not 200 <= status <= 599:  # (1xx are interim: the client would wait for more)
            raise RuntimeError(f"invalid final HTTP status {status}")
        head = [_status_line(status)]
        chunked, remaining, keep_alive, closing = False, None, self.keep_alive, False
        if self.expect and self.more_body:
            # Answered before the body an `Expect: 100-continue` client holds back: it may
            # never send it, and whatever it sends next on this connection would be read as
            # that body. Close after this answer (RFC 9110 10.1.1 allows either).
            keep_alive = False
        values = []
        codings: list[bytes] = []  # the transfer codings the app named, in order
        for name, value in (*self.conn.server_state.default_headers, *message.get("headers", ())):
            low = _LOWERED.get(name)
            if low is None:
                low = _lowered(name)
            values.append(value)
            if low in _FRAMING:
                if low == b"content-length":
                    # One, and a number: a second (or one beside a transfer coding) would
                    # let a client or an intermediary frame the body otherwise than we do.
                    if remaining is not None or not value.isdigit():
                        raise RuntimeError("invalid or repeated Content-Length")
                    remaining = int(value)
                elif low == b"transfer-encoding":
                    codings += [c.strip().lower() for c in value.split(b",")]
                elif b"close" in [t.strip().lower() for t in value.split(b",")]:
                    keep_alive = False
                    closing = True
                if status == 204 and low != b"connection":
                    continue  # a 204 carries neither (RFC 9110 8.6): not written
            head += (low, b": ", value, b"\r\n")
        # One search over every value (a tab, allowed in a value, keeps them apart).
        if _BAD_VALUE.search(b"\t".join(values)):
            raise RuntimeError("invalid HTTP header value")
        if codings and status != 204:
            # Chunked last and once (the body is written as chunks, once: RFC 9112 7), and
            # never beside a Content-Length (RFC 9112 6.1).
            if codings[-1] != b"chunked" or codings.count(b"chunked") > 1 or remaining is not None:
                raise RuntimeError("Transfer-Encoding: one chunked, last, and no Content-Length")
            chunked = True
        if not keep_alive and not closing:
            head.append(b"connection: close\r\n")
        bodiless = self.scope["method"] == "HEAD" or status in _NO_BODY
        if not bodiless and remaining is None and not chunked:
            chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        data = b"".join(head)
        self.started = True
        self.expect = False
        self.bodiless, self.chunked, self.remaining = bodiless, chunked, remaining
        self.keep_alive = keep_alive
        if remaining and not bodiless:
            self.head = data  # written with the body's first bytes
        elif chunked and not bodiless:
            self._hold(data)  # a stream's head goes with its first part
        else:
            self.conn.transport.write(data)

    def _hold(self, data: bytes) -> None:
        """Queue part of a response that more will follow: the parts of one turn of the
        event loop go out in one write (one system call, not one per streamed event)."""
        pending = self.pending
        pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes >= _COALESCE_MAX:
            self._flush()
        elif len(pending) == 1:
            self.conn.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write what :meth:`_hold` queued (nothing once the connection is gone)."""
        pending = self.pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self.pending_bytes = 0
        transport = self.conn.transport
        if not self.disconnected and not transport.is_closing():
            transport.write(data)

    def _body(self, body: bytes, more: bool) -> None:
        transport = self.conn.transport
        if self.bodiless:  # written, they would read as the start of the next response
            data = b""
        elif self.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            if self.remaining is not None:
                if len(body) > self.remaining:
                    raise RuntimeError("response content longer than its Content-Length")
                self.remaining -= len(body)
            data = body
        head = self.head
        if head is not None:
            self.head = None
            if len(data) < _JOIN_MAX:
                data = head + data
            else:
                transport.write(head)
        if more:
            if data:
                self._hold(data)
        else:
            if self.pending:
                data = b"".join((*self.pending, data))
                self.pending.clear()
                self.pending_bytes = 0
            if data:
                transport.write(data)
            if self.remaining and not self.bodiless:
                raise RuntimeError("response content shorter than its Content-Length")
            self.complete = True
            self.wake()
            self.conn.answered(self)
