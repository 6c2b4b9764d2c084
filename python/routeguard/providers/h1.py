"""A lean HTTP/1.1 client for the upstream calls: keep-alive connection pools per event
loop on asyncio protocols, responses parsed by httptools (llhttp), bodies read whole or as
they arrive, gzip/deflate decoded.

It is the transport under :mod:`routeguard.providers.http`, which maps its exceptions onto
ProviderErrors: this module knows sockets and bytes, not providers. It does only what the
providers need (POST a body, read a response), so each request costs a header block, one
write and the parser's callbacks. A connection is reused only after a complete response
that allows it; one the peer closes while it sits idle is noticed and forgotten. A request
is never sent twice: one that meets a connection closing under it fails like any other
connection error (the fallback layer decides whether to try again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import weakref
import zlib
from collections.abc import AsyncGenerator, Iterator, Mapping
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import httptools

from routeguard.http_tokens import is_token

KEEPALIVE_S = 60.0  # an idle connection is closed after this long
_PAUSE_AT = 1 << 20  # bytes a stream may buffer before the socket stops being read
_MAX_HEAD = 1 << 20  # bytes a response's status line and headers may take (1xx ones included)
_SAFE = "/%:@!$&'()*+,;=-._~?#[]"  # what a request target keeps as it is


class ConnectTimeout(TimeoutError):
    """No connection within the connect timeout."""


class BadResponse(Exception):
    """The upstream's bytes are not an HTTP/1.1 response (or its body does not decode)."""


class BadHeader(ValueError):
    """A request header name or value that would break the header block."""


class Closed(ConnectionResetError):
    """The connection closed before the response was complete."""


class Target(NamedTuple):
    """Where a URL's request goes: pool key parts, the ``Host`` header and request target."""

    tls: bool
    host: str
    port: int
    host_header: str
    path: str


@lru_cache(maxsize=4096)
def target(url: str) -> Target:
    """Split an absolute http(s) URL (without userinfo) into its request parts."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", a port out of range
        raise BadHeader(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise BadHeader(f"not an http(s) URL: scheme {parts.scheme!r}")
    tls = parts.scheme == "https"
    host = _ascii_host(parts.hostname)
    port = port or (443 if tls else 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == (443 if tls else 80) else f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # Escapes stay as they are (a signed path must go out byte for byte); only characters
    # a request line cannot carry (spaces, non-ASCII) are escaped.
    if not path.isascii() or any(c <= " " or c == "\x7f" for c in path):
        path = _quoted(path)
    return Target(tls, host, port, host_header, path)


def _quoted(path: str) -> str:
    """``path`` with what a request line cannot carry %-escaped."""
    try:
        return quote(path, safe=_SAFE)
    except UnicodeEncodeError:  # a lone surrogate; the error's text would hold a query's key
        pass
    raise BadHeader("the URL's path holds a character that cannot be encoded")


def _ascii_host(host: str | None) -> str:
    """A URL's host as the Host header and TLS name carry it (IDNA for a non-ASCII name)."""
    if not host:
        raise BadHeader("the URL names no host")
    try:
        # What getaddrinfo would do at connect time, where it raises a bare UnicodeError.
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:  # an empty label ("a..b"), one longer than 63 characters
        ascii_host = ""
    if not ascii_host or any(c <= " " or c == "\x7f" for c in ascii_host):
        raise BadHeader("the URL's host is not a valid host name")
    return ascii_host


class Headers(dict[str, str]):
    """Response headers by lower-case name; lookups ignore case. A repeated header's
    values are joined with ", "."""

    __slots__ = ()

    def __getitem__(self, name: str) -> str:
        """The value of ``name`` in any case."""
        return dict.__getitem__(self, name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The value of ``name`` in any case, or ``default``."""
        return dict.get(self, name.lower(), default)

    def __contains__(self, name: object) -> bool:
        """Whether the header was sent (any case)."""
        return isinstance(name, str) and dict.__contains__(self, name.lower())


# The lengths of the names on_headers_complete looks for.
_FRAMING_LENGTHS = frozenset(len(n) for n in (b"content-length", b"content-encoding",
                                              b"transfer-encoding"))  # fmt: skip


class RawHeaders(Mapping[str, str]):
    """A response's headers as they arrived, decoded into :class:`Headers` on the first
    look (an answer that succeeds is usually never asked for one)."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw  # the connection starts a new list for its next response
        self._decoded: Headers | None = None

    def _all(self) -> Headers:
        headers = self._decoded
        if headers is None:
            headers = self._decoded = Headers()
            for name, value in self._raw:
                n = name.decode("latin-1").lower()
                v = value.decode("latin-1")
                headers[n] = f"{dict.__getitem__(headers, n)}, {v}" if n in headers else v
        return headers

    def __getitem__(self, name: str) -> str:
        """The value of ``name`` in any case."""
        return self._all()[name]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The value of ``name`` in any case, or ``default``."""
        return self._all().get(name, default)

    def __contains__(self, name: object) -> bool:
        """Whether the header was sent (any case)."""
        return name in self._all()

    def __iter__(self) -> Iterator[str]:
        """The lower-case names."""
        return iter(self._all())

    def __len__(self) -> int:
        """How many distinct names."""
        return len(self._all())

    def __repr__(self) -> str:
        """The decoded headers, as a dict shows them."""
        return f"RawHeaders({self._all()!r})"


_DEFLATE = 32 + zlib.MAX_WBITS  # a zlib or gzip header (raw deflate is told at the first byte)


def _wbits(coding: str) -> int | None:
    """zlib's ``wbits`` for a Content-Encoding (None for identity; BadResponse otherwise)."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return 16 + zlib.MAX_WBITS
    if coding == "deflate":
        return _DEFLATE
    raise BadResponse(f"unsupported content-encoding {coding!r}")


class _Conn(asyncio.Protocol):
    """One connection: at most one request at a time, its response parsed as it arrives."""

    def __init__(self, pool: Pool, key: tuple[bool, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.alive = True
        self.busy = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.head_size = 0
        self.complete = False
        self.interim = False
        self.until_close = False  # the body ends when the connection does
        self.keep_alive = False
        self.got_bytes = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.streaming = False
        self.paused = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.wbits: int | None = None  # the body's compression, when it has one
        self.inflate: zlib._Decompress | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a malformed response fails the request and drops the connection."""
        if not self.busy:  # bytes nobody asked for: the connection cannot be trusted
            self._drop()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the upstream switched protocols"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, BadResponse) else BadResponse(str(exc)))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"malformed HTTP response: {exc}"))
        # Counted here, not per header: the parser holds a header line until it ends.
        if not self.head_done and self.error is None:
            self.head_size += len(data)
            if self.head_size > _MAX_HEAD:
                self._fail(BadResponse("the upstream's response head is too large"))

    def eof_received(self) -> bool | None:
        """The peer finished sending: close our side too."""
        self._ended(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """End whatever was under way."""
        self._ended(exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        """A new response (or interim 1xx) starts; nothing may follow a complete one."""
        if self.complete:
            raise BadResponse("the upstream sent bytes after its response")
        self.raw_headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one header (not a chunked body's trailers: httptools reports those
        too, after the body, and the response was made with its head's alone)."""
        if not self.head_done:
            self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Status and headers known: wake the reader (skip interim 1xx responses)."""
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.interim = True
            return
        self.status = status
        framed = False
        for name, value in self.raw_headers:
            if len(name) not in _FRAMING_LENGTHS:  # most headers: not worth lowering
                continue
            n = name.lower()
            if n == b"content-length":
                framed = True
            elif n == b"transfer-encoding":
                # Framed only when chunked comes last; else the body runs to the close.
                framed = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            elif n == b"content-encoding":
                self.wbits = _wbits(value.decode("latin-1"))
        self.until_close = not framed and status not in (204, 304)
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        """Buffer a piece of the body (decoded); pause reading when a stream lags."""
        if self.wbits is not None:
            body = self._inflate(body)
            if not body:
                return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.streaming and self.buffered > _PAUSE_AT and not self.paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def on_message_complete(self) -> None:
        """The response is complete (an interim one only ends its own headers)."""
        if self.interim:
            self.interim = False
            return
        self._finish()

    # internals
    def _inflate(self, data: bytes) -> bytes:
        """Decode a piece of a compressed body; after a member's end the next one starts
        (gzip members may be concatenated)."""
        out = []
        try:
            while data:
                d = self.inflate
                if d is None or d.eof:
                    wbits = self.wbits
                    assert wbits is not None
                    # "deflate" is zlib-wrapped as the RFC says, or raw as some servers send:
                    # a zlib header's first byte names method 8, a gzip header's is 0x1f.
                    first = data[0]
                    if d is None and wbits == _DEFLATE and first & 0x0F != 8 and first != 0x1F:
                        wbits = self.wbits = -zlib.MAX_WBITS
                    d = self.inflate = zlib.decompressobj(wbits)
                out.append(d.decompress(data))
                data = d.unused_data
        except zlib.error as exc:
            raise BadResponse(f"the body does not decode: {exc}") from None
        return b"".join(out)

    def _finish(self) -> None:
        if self.inflate is not None:
            try:
                tail = self.inflate.flush()
            except zlib.error as exc:
                self._fail(BadResponse(f"the body does not decode: {exc}"))
                return
            if tail:
                self.chunks.append(tail)
                self.buffered += len(tail)
        self.complete = True
        self._wake()

    def _ended(self, exc: BaseException | None) -> None:
        was_alive, self.alive = self.alive, False
        if not self.busy:
            if was_alive:
                self.pool.forget(self)
            return
        if self.complete or self.error is not None:
            return
        if self.head_done and self.until_close and exc is None:
            self._finish()
            return
        reason = "the upstream closed the connection" + (
            " before its response was complete" if self.got_bytes else ""
        )
        err = Closed(reason)
        if exc is not None:
            err.__cause__ = exc
        self.error = exc if isinstance(exc, OSError) and not self.got_bytes else err
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = exc
        self._drop()
        self._wake()

    def _drop(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self, deadline: float | None) -> None:
        """Until the parser reports progress, or TimeoutError at ``deadline``."""
        loop = self.pool.loop
        fut = loop.create_future()
        self.waiter = fut
        if deadline is None:
            await fut
            return
        timer = loop.call_at(deadline, _expire, fut)
        try:
            await fut
        finally:
            timer.cancel()


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class Response:
    """A response whose status and headers have arrived; read its body once, whole
    (:meth:`read`) or piece by piece (:meth:`next_chunk`), then :meth:`close`."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Conn) -> None:
        self._conn: _Conn | None = conn
        self.status = conn.status
        self.headers = RawHeaders(conn.raw_headers)

    async def read(self, deadline: float | None = None) -> bytes:
        """The whole body (TimeoutError past ``deadline``); the connection goes back to
        its pool when it may be reused."""
        conn = self._conn
        if conn is None:
            return b""
        try:
            while not conn.complete:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(deadline)
                if self._conn is not conn:
                    raise Closed("the response was closed while it was read")
            if conn.error is not None:
                raise conn.error
        except BaseException:
            self._abort()
            raise
        body = b"".join(conn.chunks) if len(conn.chunks) != 1 else conn.chunks[0]
        conn.chunks = []
        self.close()
        return body

    async def next_chunk(self, timeout: float | None) -> bytes | None:
        """The next piece of the body, None at its end; TimeoutError when nothing arrives
        for ``timeout`` seconds."""
        conn = self._conn
        if conn is None:
            return None
        conn.streaming = True
        try:
            while not conn.chunks:
                if conn.error is not None:
                    raise conn.error
                if conn.complete:
                    self.close()
                    return None
                deadline = None if timeout is None else conn.pool.loop.time() + timeout
                await conn.wait(deadline)
                if self._conn is not conn:  # closed meanwhile (by another task): the end
                    return None
        except BaseException:
            self._abort()
            raise
        chunk = b"".join(conn.chunks) if len(conn.chunks) != 1 else conn.chunks[0]
        conn.chunks = []
        conn.buffered = 0
        if conn.paused and conn.alive:
            assert conn.transport is not None
            conn.transport.resume_reading()
            conn.paused = False
        return chunk

    def close(self) -> None:
        """Done with the response: a complete one frees its connection for reuse, one
        still arriving drops it."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if conn.complete and conn.error is None and conn.keep_alive and conn.alive:
            # A stream may end unread, its socket paused while it lagged: the bytes go, and
            # reading resumes, or the next request on it would never see its answer.
            conn.chunks = []
            if conn.paused:
                assert conn.transport is not None
                conn.transport.resume_reading()
                conn.paused = False
            conn.pool.release(conn)
        else:
            conn.busy = False
            conn._drop()
            conn._wake()  # a reader waiting in another task ends now, not at its timeout

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.busy = False
            conn._drop()


class Pool:
    """Idle keep-alive connections of one event loop, by (tls, host, port)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[tuple[bool, str, int], list[_Conn]] = {}
        self.closed = False
        self._sweep: asyncio.TimerHandle | None = None
        self.closer: AsyncGenerator[None, None] | None = None  # see pool()

    async def request(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes,
        *,
        connect_timeout: float,
        head_deadline: float | None,
    ) -> Response:
        """POST ``body`` to ``url`` and wait for the response's status and headers."""
        t = target(url)
        head = _head(t, headers, len(body))
        conn = await self._acquire(t, connect_timeout)
        conn.busy = True
        conn._reset()
        try:
            assert conn.transport is not None
            conn.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.transport.write(body)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(head_deadline)
        except BaseException:
            # Never sent again from here, even on a reused connection with no answer yet:
            # the upstream may have read it and be working (and billing), so whether to
            # try again is the fallback layer's call, as for any other connection error.
            conn.busy = False
            conn._drop()
            raise
        return Response(conn)

    async def _acquire(self, t: Target, connect_timeout: float) -> _Conn:
        if self.closed:
            raise Closed("the client is closed")
        key = (t.tls, t.host, t.port)
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.alive and conn.transport is not None and not conn.transport.is_closing():
                return conn
        conn = _Conn(self, key)
        try:
            async with asyncio.timeout(connect_timeout):
                await self.loop.create_connection(
                    lambda: conn,
                    t.host,
                    t.port,
                    ssl=_tls_context() if t.tls else None,
                    server_hostname=t.host if t.tls else None,
                )
        except TimeoutError:
            raise ConnectTimeout() from None
        return conn

    def release(self, conn: _Conn) -> None:
        """Put a connection whose response is complete back for reuse."""
        conn.busy = False
        if self.closed:
            conn._drop()
            return
        conn.idle_since = self.loop.time()
        self.idle.setdefault(conn.key, []).append(conn)
        if self._sweep is None:
            self._sweep = self.loop.call_later(KEEPALIVE_S, self._expire_idle)

    def forget(self, conn: _Conn) -> None:
        """Drop an idle connection the peer closed."""
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _expire_idle(self) -> None:
        self._sweep = None
        cutoff = self.loop.time() - KEEPALIVE_S
        left = False
        for idle in self.idle.values():
            for conn in [c for c in idle if c.idle_since <= cutoff]:
                idle.remove(conn)
                conn._drop()
            left = left or bool(idle)
        if left:
            self._sweep = self.loop.call_later(KEEPALIVE_S / 2, self._expire_idle)

    def close(self) -> None:
        """Close every idle connection; busy ones close when their response is done."""
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self.idle.values():
            for conn in idle:
                conn._drop()
        self.idle.clear()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = weakref.WeakKeyDictionary()


def pool(loop: asyncio.AbstractEventLoop | None = None) -> Pool:
    """The connection pool of the running event loop (``loop`` when the caller has it:
    Python 3.11 asks the OS for the process id on every look-up of the running loop);
    made on first use, closed with the loop's async generators when it shuts down, as
    ``asyncio.run`` and ``uvloop.run`` do."""
    if loop is None:
        loop = asyncio.get_running_loop()
    p = _pools.get(loop)
    if p is None or p.closed:
        p = _pools[loop] = Pool(loop)
        p.closer = _closer(loop, p)
        # Started here, so the loop knows it (its first-iteration hook) and closes it at
        # shutdown: without that, a loop ended without close_pool() stayed alive for good,
        # held by its pool (which holds the loop), with its idle sockets open.
        with contextlib.suppress(StopAsyncIteration, StopIteration):
            p.closer.asend(None).send(None)
    return p


async def _closer(loop: asyncio.AbstractEventLoop, p: Pool) -> AsyncGenerator[None, None]:
    """Closes ``p`` and forgets it when ``loop`` shuts its async generators down."""
    try:
        yield
    finally:
        p.close()
        if _pools.get(loop) is p:
            del _pools[loop]


def close_pool() -> None:
    """Close the running loop's pool (on shutdown)."""
    p = _pools.pop(asyncio.get_running_loop(), None)
    if p is not None:
        p.close()
        closer, p.closer = p.closer, None
        if closer is not None:  # finished here, not left for the loop to finalize later
            with contextlib.suppress(StopIteration, StopAsyncIteration):
                closer.aclose().send(None)


def _head(t: Target, headers: dict[str, str], length: int) -> bytes:
    """The request line and header block (names checked as tokens, values for breaks)."""
    lines = [f"POST {t.path} HTTP/1.1\r\nhost: {t.host_header}\r\n"]
    has_accept = has_encoding = False
    for name, value in headers.items():
        if not is_token(name):
            raise BadHeader(f"invalid header name {name!r}")
        value = str(value)
        if "\r" in value or "\n" in value or "\0" in value:
            raise BadHeader(f"header {name!r} holds a line break")
        low = name.lower()
        if low in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # framing is this client's business
        has_accept = has_accept or low == "accept"
        has_encoding = has_encoding or low == "accept-encoding"
        lines.append(f"{name}: {value}\r\n")
    if not has_accept:
        lines.append("accept: */*\r\n")
    if not has_encoding:
        lines.append("accept-encoding: gzip, deflate\r\n")
    lines.append(f"content-length: {length}\r\n\r\n")
    try:
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate; the error's text would hold every header
        pass
    bad = next((n for n, v in headers.items() if not _encodes(str(v))), "?")
    raise BadHeader(f"header {bad!r} holds a character that cannot be encoded")


def _encodes(text: str) -> bool:
    """Whether ``text`` has a UTF-8 form (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_tls: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def _tls_context() -> ssl.SSLContext:
    """The default verifying TLS context (one per SSL_CERT_FILE/SSL_CERT_DIR setting)."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    ctx = _tls.get(key)
    if ctx is None:
        ctx = _tls[key] = ssl.create_default_context()
    return ctx
