"""The proxy's HTTP edge against slow and idle clients (slowloris): read deadlines per
connection, and a cap on connections that no request has authenticated yet.

The server protocol (:mod:`routeguard.server.protocol`) applies them when the app it serves
carries a :class:`ConnectionGuard` (the proxy's ``connection_guard``; other apps get no read
deadlines):

- headers must be complete within ``header_timeout`` of the connection opening (or of the
  first byte of a later request on it); else ``408`` and close,
- the body must be complete within ``body_timeout`` of the headers (the app answers 408 in
  the caller's protocol when it is the one waiting; this deadline, a little later, closes
  connections whose body nobody reads),
- a response's bytes must be taken by the client: once the socket's buffer is full, the
  client has ``write_timeout`` to read enough of it to make room, else the connection is
  cut (aborted: closing would wait for the unread bytes), and a request still running sees
  the disconnect (a stream stops its upstream call); a client that stops reading would
  otherwise hold the answer's task, its upstream connection and buffered bytes for as long
  as TCP keeps the connection,
- at most ``max_unauthenticated`` open connections (per process) may be waiting for a
  request to pass authentication; past that, the longest-waiting one that no app is
  working for (still sending headers, idle between requests, or sending the body of a
  request already refused) is closed to make room (an attacker holding every slot cannot
  keep a real client out), or, when each has a request in the app, the new connection is
  refused with ``503``.

A request that passes authentication marks its connection through the callable the
protocol puts in the ASGI scope under ``CONNECTION_KEY``; from then on that connection
(a client's keep-alive pool) no longer counts against the cap.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("routeguard.server")

BODY_GRACE = 1.0  # the app's own body deadline answers 408 first; this one only closes


class Guarded(Protocol):
    """What the guard needs of a connection."""

    @property
    def evictable(self) -> bool:
        """No app is working for it (headers still coming, idle, or already answered)."""
        ...

    def drop(self) -> None:
        """Close the connection now (to make room under the cap)."""
        ...


class ConnectionGuard:
    """The limits, and the connections still waiting to authenticate (oldest first)."""

    def __init__(
        self,
        *,
        header_timeout: float,
        body_timeout: float,
        max_unauthenticated: int,
        write_timeout: float = 60.0,
    ) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.write_timeout = write_timeout
        self.max_unauthenticated = max_unauthenticated
        self._waiting: dict[Guarded, None] = {}

    @property
    def unauthenticated(self) -> int:
        """How many open connections no request has authenticated yet."""
        return len(self._waiting)

    def admit(self, conn: Guarded) -> bool:
        """Count a new connection; False when it must be refused."""
        if len(self._waiting) >= self.max_unauthenticated:
            victim = next((c for c in self._waiting if c.evictable), None)
            if victim is None:
                return False
            log.debug("unauthenticated connection cap reached: closing the oldest one")
            victim.drop()
        self._waiting[conn] = None
        return True

    def authenticated(self, conn: Guarded) -> None:
        """A request on ``conn`` passed authentication: it no longer counts."""
        self._waiting.pop(conn, None)

    def closed(self, conn: Guarded) -> None:
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


def plain_response(status: bytes, message: bytes) -> bytes:
    """A complete plain-text response that closes the connection."""
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n"
        + message
    )  # fmt: skip
