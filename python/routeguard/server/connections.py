"""The proxy's HTTP edge against slow and idle clients (slowloris): read deadlines per
connection, and a cap on connections that no request has authenticated yet.

uvicorn reads requests; :class:`GuardedHttpToolsProtocol` is its httptools protocol with
three additions, active when the app it serves carries a :class:`ConnectionGuard` (the
proxy's ``connection_guard``; other apps are served exactly as before):

- headers must be complete within ``header_timeout`` of the connection opening (or of the
  first byte of a later request on it); else ``408`` and close,
- the body must be complete within ``body_timeout`` of the headers (the app answers 408 in
  the caller's protocol when it is the one waiting; this deadline, a little later, closes
  connections whose body nobody reads),
- at most ``max_unauthenticated`` open connections (per process) may be waiting for a
  request to pass authentication; past that, the longest-waiting one that is still sending
  headers or idle between requests is closed to make room (an attacker holding every slot
  cannot keep a real client out), or, when each has a request in the app, the new
  connection is refused with ``503``.

A request that passes authentication marks its connection through the callable the
protocol puts in the ASGI scope under ``CONNECTION_KEY``; from then on that connection
(a client's keep-alive pool) no longer counts against the cap.

With or without a guard, a response whose head declares a Content-Length leaves in one
write with the start of its body (:class:`_OneWrite`) rather than uvicorn's two: one
syscall and one segment fewer per answer. Streamed (chunked) heads still go out at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from routeguard.server.auth import CONNECTION_KEY

log = logging.getLogger("routeguard.server")

PROTOCOL = "routeguard.server.connections:GuardedHttpToolsProtocol"
"""The import string for uvicorn's ``http`` setting (workers import it by name)."""
_BODY_GRACE = 1.0  # the app's own body deadline answers 408 first; this one only closes
_JOIN_MAX = 1 << 16  # a longer body goes in its own write rather than being copied behind the head


class ConnectionGuard:
    """The limits, and the connections still waiting to authenticate (oldest first)."""

    def __init__(
        self, *, header_timeout: float, body_timeout: float, max_unauthenticated: int
    ) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_unauthenticated = max_unauthenticated
        self._waiting: dict[GuardedHttpToolsProtocol, None] = {}

    @property
    def unauthenticated(self) -> int:
        """How many open connections no request has authenticated yet."""
        return len(self._waiting)

    def admit(self, conn: GuardedHttpToolsProtocol) -> bool:
        """Count a new connection; False when it must be refused."""
        if len(self._waiting) >= self.max_unauthenticated:
            victim = next((c for c in self._waiting if c.evictable), None)
            if victim is None:
                return False
            log.debug("unauthenticated connection cap reached: closing the oldest one")
            victim.drop()
        self._waiting[conn] = None
        return True

    def authenticated(self, conn: GuardedHttpToolsProtocol) -> None:
        """A request on ``conn`` passed authentication: it no longer counts."""
        self._waiting.pop(conn, None)

    def closed(self, conn: GuardedHttpToolsProtocol) -> None:
        """``conn`` is gone."""
        self._waiting.pop(conn, None)


def find_guard(app: Any) -> ConnectionGuard | None:
    """The ConnectionGuard of ``app`` or of the app uvicorn's middleware wraps, if any."""
    for _ in range(8):
        guard = getattr(app, "connection_guard", None)
        if isinstance(guard, ConnectionGuard):
            return guard
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def _plain(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n"
        + message
    )  # fmt: skip


class _OneWrite:
    """The transport one request's cycle writes to: the head of a response with a
    Content-Length (not to HEAD) is held back and written with the body's first bytes;
    everything else passes straight through."""

    __slots__ = ("_cycle", "_head", "_past_head", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._past_head = False

    def write(self, data: bytes) -> None:
        """Write ``data``, holding the response head as described above."""
        cycle = self._cycle
        if not self._past_head and cycle.response_started:
            self._past_head = True  # uvicorn writes the whole head once, on response start
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self._head = data
                return
        head = self._head
        if head is not None:
            self._head = None
            if len(data) < _JOIN_MAX:
                data = head + data
            else:
                self._transport.write(head)
        self._transport.write(data)

    def close(self) -> None:
        """Close, after a head still held (an app that failed before its body)."""
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines and the unauthenticated cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = find_guard(self.app)
        self._deadline: asyncio.TimerHandle | None = None
        self.reading_headers = False

    @property
    def evictable(self) -> bool:
        """Still sending headers, or idle between requests (no app is working for it)."""
        return self.reading_headers or self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection against the cap and start the header deadline."""
        super().connection_made(transport)
        guard = self._guard
        if guard is None:
            return
        if not guard.admit(self):
            transport.write(_plain(b"503 Service Unavailable", b"too many connections waiting"))
            transport.close()
            return
        self._arm(guard.header_timeout, headers=True)

    def on_message_begin(self) -> None:
        """A request starts: give the connection's mark to the app, time the headers."""
        super().on_message_begin()
        guard = self._guard
        if guard is None:
            return
        mark: Callable[[], None] = self._authenticated
        self.scope[CONNECTION_KEY] = mark  # type: ignore[literal-required]
        if self._deadline is None:  # else: the deadline from connect still runs
            self._arm(guard.header_timeout, headers=True)

    def on_headers_complete(self) -> None:
        """Headers in time: now time the body."""
        super().on_headers_complete()
        self.cycle.transport = _OneWrite(self.transport, self.cycle)  # type: ignore[assignment]
        if self._guard is not None:
            self._arm(self._guard.body_timeout + _BODY_GRACE, headers=False)

    def on_message_complete(self) -> None:
        """The whole request arrived: no deadline until the next one starts."""
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._disarm()
        if self._guard is not None:
            self._guard.closed(self)
        super().connection_lost(exc)

    def drop(self) -> None:
        """Close this connection now (to make room under the cap)."""
        partial = self.reading_headers  # a request begun: it gets an answer; idle ones do not
        self._disarm()
        if self._guard is not None:
            self._guard.closed(self)
        if not self.transport.is_closing():
            if partial:
                what = b"connection closed: headers too slow"
                self.transport.write(_plain(b"408 Request Timeout", what))
            self.transport.close()

    def _authenticated(self) -> None:
        if self._guard is not None:
            self._guard.authenticated(self)

    def _arm(self, seconds: float, *, headers: bool) -> None:
        self._disarm()
        self.reading_headers = headers
        self._deadline = self.loop.call_later(seconds, self._expired, headers)

    def _disarm(self) -> None:
        self.reading_headers = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, headers: bool) -> None:
        self._deadline = None
        self.reading_headers = False
        if self.transport.is_closing():
            return
        idle = self.cycle is None or self.cycle.response_complete
        if headers and idle:  # nothing else is being written on this connection
            what = b"headers not received in time"
            self.transport.write(_plain(b"408 Request Timeout", what))
        self.transport.close()
