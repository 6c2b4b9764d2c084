"""routeguard's HTTP/1.1 server protocol (routeguard.server.protocol), driven byte by byte
against a transport that records every write: a sized response leaves in one write with its
body (uvicorn's protocol wrote head and body apart); HEAD, streamed heads, long bodies, apps
that fail, pipelined requests, ``Expect: 100-continue``, request bodies past the read
buffer, disconnects seen by ``receive``, HTTP/1.0, upgrades, malformed requests, graceful
shutdown and the idle keep-alive deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from routeguard.server import protocol
from routeguard.server.connections import ConnectionGuard
from routeguard.server.protocol import PROTOCOL, HttpProtocol

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Recording(asyncio.Transport):
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.late: list[bytes] = []  # written after close (uvloop raises on those)
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Keep ``data``."""
        (self.late if self.closed else self.writes).append(bytes(data))

    def close(self) -> None:
        """Mark closed."""
        self.closed = True

    def is_closing(self) -> bool:
        """Whether close was called."""
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Addresses as a TCP socket would give them."""
        return {"sockname": ("127.0.0.1", 4000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        """Note the pause."""
        self.paused = True

    def resume_reading(self) -> None:
        """Note the resume."""
        self.paused = False

    @property
    def data(self) -> bytes:
        """Everything written, in order."""
        return b"".join(self.writes)


class Conn:
    """One connection of the protocol serving ``app``, over a :class:`Recording`."""

    def __init__(self, app: App, **config: Any) -> None:
        cfg = uvicorn.Config(app, http=PROTOCOL, lifespan="off", log_level="critical", **config)
        cfg.load()
        self.state = ServerState()
        self.proto = HttpProtocol(config=cfg, server_state=self.state, app_state={})
        self.transport = Recording()
        self.proto.connection_made(self.transport)

    async def feed(self, data: bytes) -> None:
        """Bytes from the client, then let the app run."""
        self.proto.data_received(data)
        await self.settle()

    async def settle(self) -> None:
        """Run the loop until the app's tasks are done or waiting on something outside."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def lose(self) -> None:
        """The client goes away."""
        self.proto.connection_lost(None)
        await self.settle()


async def _serve(app: App, request: bytes, until: asyncio.Event | None = None) -> Recording:
    """Feed ``request`` to the protocol serving ``app``; return after the answer (or once
    ``until`` is set, and the loop's turn in which it was has ended)."""
    conn = Conn(app)
    conn.proto.data_received(request)
    for _ in range(200):
        await asyncio.sleep(0)
        if until is not None and until.is_set():
            await asyncio.sleep(0)  # what the turn queued for its end is written
            break
        if conn.transport.closed or conn.proto.current is None:
            break
    await conn.lose()
    return conn.transport


def _json_app(body: bytes) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


GET = b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n"


def test_a_sized_response_leaves_in_one_write() -> None:
    body = b'{"ok": true}'
    out = asyncio.run(_serve(_json_app(body), GET))
    assert len(out.writes) == 1
    head, _, rest = out.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 12" in head.lower()
    assert rest == body


def test_a_head_request_gets_its_head_and_no_body() -> None:
    out = asyncio.run(_serve(_json_app(b'{"ok": true}'), GET.replace(b"GET", b"HEAD")))
    data = b"".join(out.writes)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\n")  # the head only: nothing held back, nothing sent after


def test_a_long_body_is_written_apart_from_its_head_not_copied_behind_it() -> None:
    body = b"x" * 200_000
    out = asyncio.run(_serve(_json_app(body), GET))
    assert len(out.writes) == 2
    assert out.writes[0].endswith(b"\r\n\r\n")
    assert out.writes[1] == body


def test_a_streamed_head_goes_out_before_its_first_chunk() -> None:
    started = asyncio.Event()

    async def main() -> Recording:
        go = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            started.set()
            await go.wait()

        task = asyncio.ensure_future(_serve(app, GET, until=started))
        out = await task
        go.set()
        return out

    out = asyncio.run(main())
    assert len(out.writes) == 1
    assert out.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in out.writes[0].lower()


def _streaming_app(turns: list[list[bytes]], fail: bool = False) -> App:
    """An event stream whose parts come in ``turns``: the parts of one turn sent one after
    another, a turn of the event loop between turns (``fail``: raise after the first turn's
    parts, in its turn)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for turn in turns:
            for part in turn:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            if fail:  # with the turn's parts still queued
                raise RuntimeError("boom")
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})

    return app


def _chunk(part: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(part), part)


def test_the_parts_of_one_turn_of_a_stream_leave_in_one_write() -> None:
    turns = [[b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"], [b"data: 4\n\n"]]
    out = asyncio.run(_serve(_streaming_app(turns), GET))
    assert len(out.writes) == 3  # head and the first turn, the second turn, the end
    assert out.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.writes[0].endswith(b"".join(_chunk(p) for p in turns[0]))
    assert out.writes[1] == _chunk(turns[1][0])
    assert out.writes[2] == b"0\r\n\r\n"


def test_a_turn_past_the_coalescing_bound_is_written_at_once() -> None:
    big = b"x" * 40_000
    out = asyncio.run(_serve(_streaming_app([[big, big, b"tail"]]), GET))
    head_and_two = out.writes[0]
    assert head_and_two.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head_and_two.endswith(_chunk(big) + _chunk(big))  # written when the bound passed
    assert out.writes[1] == _chunk(b"tail")
    assert b"".join(out.writes).endswith(_chunk(b"tail") + b"0\r\n\r\n")


def test_an_app_failing_mid_stream_still_delivers_what_it_sent() -> None:
    out = asyncio.run(_serve(_streaming_app([[b"data: 1\n\n", b"data: 2\n\n"]], fail=True), GET))
    assert out.closed
    body = b"".join(out.writes)
    assert body.endswith(_chunk(b"data: 1\n\n") + _chunk(b"data: 2\n\n"))
    assert not out.late


def test_parts_queued_in_a_turn_are_written_before_the_protocol_closes() -> None:
    """One loop iteration in which the app's wake-up (an upstream read) and the client's
    next, malformed, pipelined bytes both run, the app first: the app sends a part (send
    returns: it is sent), then ``data_received`` gets a parse error and ``_refuse`` closes
    the transport. Before ae0b6d1 the part was in the transport and went out before the
    close; now it waits in ``_Cycle.pending`` for the end of the turn, when ``_flush`` sees
    ``is_closing()`` and drops it."""

    async def main() -> Any:
        go = asyncio.Event()
        sent = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await go.wait()
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            sent.set()
            await asyncio.sleep(3600)

        conn = Conn(app)
        await conn.feed(GET)
        loop = asyncio.get_running_loop()
        go.set()  # the app's step is now queued on the loop ...
        loop.call_soon(conn.proto.data_received, b"\x00garbage\r\n\r\n")  # ... then the read
        await conn.settle()
        assert sent.is_set()
        out = conn.transport
        assert out.closed
        await conn.lose()
        return out

    out = asyncio.run(main())
    assert out.data.endswith(b"9\r\ndata: 1\n\n\r\n"), out.data


def test_an_app_failing_after_a_sized_head_still_sends_the_head_then_closes() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("boom")

    out = asyncio.run(_serve(app, GET))
    assert out.closed
    assert b"".join(out.writes).startswith(b"HTTP/1.1 200 OK\r\n")  # as uvicorn alone sends


def _echo_app(seen: list[dict[str, Any]]) -> App:
    """Reads the whole body, keeps the messages, answers with the body's length."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        total = 0
        while True:
            message = await receive()
            seen.append(message)
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"%d %s" % (total, scope["path"].encode())
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n" % len(body)
        + extra + b"\r\n" + body
    )  # fmt: skip


def _responses(data: bytes) -> list[bytes]:
    """The bodies of the sized responses in ``data``, in order."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        out.append(rest[:length])
        data = rest[length:]
    return out


def test_pipelined_requests_are_answered_in_order() -> None:
    async def main() -> Conn:
        conn = Conn(_echo_app([]))
        await conn.feed(_post(b"/a", b"xyz") + _post(b"/b", b"") + _post(b"/c", b"12"))
        return conn

    conn = asyncio.run(main())
    assert _responses(conn.transport.data) == [b"3 /a", b"0 /b", b"2 /c"]
    assert not conn.transport.closed and not conn.transport.paused
    assert conn.state.total_requests == 3


def test_expect_100_continue_is_answered_when_the_app_reads_the_body() -> None:
    async def main() -> Conn:
        conn = Conn(_echo_app([]))
        head = _post(b"/up", b"hello", b"expect: 100-continue\r\n")
        await conn.feed(head[: -len(b"hello")])  # the client waits for 100 before the body
        assert conn.transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        await conn.feed(b"hello")
        return conn

    conn = asyncio.run(main())
    assert conn.transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert _responses(b"".join(conn.transport.writes[1:])) == [b"5 /up"]


def test_an_early_answer_to_expect_100_continue_closes_the_connection() -> None:
    """Answered before the body the client holds back: the client may never send it, so the
    connection closes after the answer rather than reading its next request as that body."""

    async def main() -> Conn:
        conn = Conn(_json_app(b'{"error": "no"}'))
        head = _post(b"/early", b"0123456789", b"expect: 100-continue\r\n")
        await conn.feed(head[: -len(b"0123456789")])
        return conn

    conn = asyncio.run(main())
    assert conn.transport.data.startswith(b"HTTP/1.1 200 OK\r\n")  # no 100 Continue first
    assert b"connection: close\r\n" in conn.transport.data
    assert conn.transport.closed


def test_a_body_past_the_read_buffer_pauses_reading_until_the_app_takes_it() -> None:
    seen: list[dict[str, Any]] = []
    release = asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()
        await _echo_app(seen)(scope, receive, send)

    async def main() -> Conn:
        conn = Conn(slow)
        body = b"b" * (3 * protocol.HIGH_WATER)
        request = _post(b"/big", body)
        await conn.feed(request[: len(request) - protocol.HIGH_WATER])
        assert conn.transport.paused  # more than HIGH_WATER buffered, nobody reading
        release.set()
        await conn.settle()
        assert not conn.transport.paused  # the app took it: reading resumed
        await conn.feed(request[len(request) - protocol.HIGH_WATER :])
        return conn

    conn = asyncio.run(main())
    assert _responses(conn.transport.data) == [b"%d /big" % (3 * protocol.HIGH_WATER)]
    assert sum(len(m["body"]) for m in seen) == 3 * protocol.HIGH_WATER
    assert [m["more_body"] for m in seen][-1] is False


def test_receive_after_the_body_waits_for_the_disconnect() -> None:
    seen: list[dict[str, Any]] = []

    async def watcher(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())  # as a streaming response watches for the client leaving

    async def main() -> None:
        conn = Conn(watcher)
        await conn.feed(_post(b"/w", b"{}"))
        assert [m["type"] for m in seen] == ["http.request"]  # still waiting
        await conn.lose()

    asyncio.run(main())
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


def test_an_app_failing_before_its_head_gets_a_500_and_the_connection_closes() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    out = asyncio.run(_serve(app, GET))
    assert out.data.startswith(b"HTTP/1.1 500 ")
    assert out.closed


def test_an_app_returning_without_an_answer_gets_a_500() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    out = asyncio.run(_serve(app, GET))
    assert out.data.startswith(b"HTTP/1.1 500 ")
    assert out.closed


def test_a_malformed_request_gets_400_and_the_connection_closes() -> None:
    out = asyncio.run(_serve(_json_app(b"{}"), b"GET / HTTP/1.1\r\nbad header line\r\n\r\n"))
    assert out.data.startswith(b"HTTP/1.1 400 Bad Request")
    assert out.closed


def test_http_1_0_gets_connection_close() -> None:
    out = asyncio.run(_serve(_json_app(b"{}"), b"GET / HTTP/1.0\r\n\r\n"))
    assert b"connection: close\r\n" in out.data.lower()
    assert out.closed


def test_an_upgrade_request_is_answered_as_plain_http_then_closed() -> None:
    request = b"GET / HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    out = asyncio.run(_serve(_json_app(b"{}"), request))
    assert out.data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.closed


def test_shutdown_closes_after_the_answer_in_progress() -> None:
    release = asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()
        await _json_app(b"{}")(scope, receive, send)

    async def main() -> Conn:
        conn = Conn(slow)
        await conn.feed(GET)
        conn.proto.shutdown()
        assert not conn.transport.closed  # an answer is in progress
        release.set()
        await conn.settle()
        return conn

    conn = asyncio.run(main())
    assert _responses(conn.transport.data) == [b"{}"]
    assert b"connection: close" in conn.transport.data
    assert conn.transport.closed


def test_an_idle_keep_alive_connection_closes_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "SWEEP_S", 0.01)

    async def main() -> Conn:
        conn = Conn(_json_app(b"{}"), timeout_keep_alive=0.05)
        await conn.feed(GET)
        assert not conn.transport.closed
        for _ in range(500):  # bounded wait: the sweep runs every 10 ms
            if conn.transport.closed:
                break
            await asyncio.sleep(0.01)
        return conn

    conn = asyncio.run(main())
    assert conn.transport.closed
    assert _responses(conn.transport.data) == [b"{}"]  # closed silently, nothing more sent


def test_a_held_head_is_dropped_when_the_client_left_before_the_app_failed() -> None:
    go = asyncio.Event()
    ended: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await go.wait()
        ended.append("raising")
        raise RuntimeError("boom")

    async def main() -> Conn:
        conn = Conn(app)
        await conn.feed(GET)
        await conn.lose()  # the client leaves while the sized head is held
        conn.transport.close()
        go.set()
        await conn.settle()
        return conn

    conn = asyncio.run(main())
    assert ended == ["raising"]
    assert conn.transport.writes == [] and conn.transport.late == []


def _guarded(app: App) -> App:
    """``app`` carrying a ConnectionGuard, so the protocol applies its read deadlines."""
    setattr(  # noqa: B010 - a function's attribute, as the proxy's app carries it
        app,
        "connection_guard",
        ConnectionGuard(header_timeout=1.0, body_timeout=1.0, max_unauthenticated=4),
    )
    return app


def _expire_if_due(conn: Conn) -> None:
    """What the sweep does once the connection's deadline has passed."""
    if conn.proto.deadline is not None:
        conn.proto.expired()


def test_a_queued_requests_body_deadline_waits_for_the_server_to_read_it() -> None:
    """A pipelined request's body is not read while the one before it is answered (the
    server paused reading): its deadline must not run then and cut the answer in progress."""
    release = asyncio.Event()
    seen: list[dict[str, Any]] = []
    echo = _echo_app(seen)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        await echo(scope, receive, send)

    async def main() -> Conn:
        conn = Conn(_guarded(app))
        await conn.feed(_post(b"/slow", b"") + _post(b"/b", b"x" * 10)[:-5])  # half of b's body
        assert conn.transport.paused  # the server holds b until /slow is answered
        _expire_if_due(conn)  # /slow takes longer than the body deadline
        release.set()
        await conn.settle()
        await conn.feed(b"x" * 5)
        return conn

    conn = asyncio.run(main())
    assert _responses(conn.transport.data) == [b"0 /slow", b"10 /b"]
    assert not conn.transport.closed


def test_a_queued_request_gets_its_body_deadline_once_it_starts() -> None:
    """Once the request before it is answered, a pipelined body still has a deadline."""
    release = asyncio.Event()
    echo = _echo_app([])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        await echo(scope, receive, send)

    async def main() -> Conn:
        conn = Conn(_guarded(app))
        await conn.feed(_post(b"/slow", b"") + _post(b"/b", b"x" * 10)[:-5])
        release.set()
        await conn.settle()
        deadlines.append(conn.proto.deadline)
        await conn.lose()
        return conn

    deadlines: list[float | None] = []
    conn = asyncio.run(main())
    assert deadlines[0] is not None  # /b's body: the client's turn again
    assert _responses(conn.transport.data) == [b"0 /slow"]


def test_a_line_break_on_an_idle_connection_starts_the_header_deadline() -> None:
    """The parser skips blank lines between requests without starting a message: such a
    first byte of a later request must still start its header deadline, not cancel the
    idle one for good."""

    async def main() -> Conn:
        conn = Conn(_guarded(_json_app(b"{}")))
        await conn.feed(GET)
        assert conn.proto.deadline is not None  # idle: the keep-alive deadline
        await conn.feed(b"\r\n")
        assert conn.proto.deadline is not None
        _expire_if_due(conn)
        return conn

    conn = asyncio.run(main())
    assert conn.transport.closed
    assert conn.transport.data.endswith(b"headers not received in time")


def test_a_line_break_on_an_idle_connection_keeps_the_idle_deadline_without_a_guard() -> None:
    async def main() -> Conn:
        conn = Conn(_json_app(b"{}"))
        await conn.feed(GET)
        await conn.feed(b"\r\n")
        assert conn.proto.deadline is not None
        _expire_if_due(conn)
        return conn

    conn = asyncio.run(main())
    assert conn.transport.closed
    assert _responses(conn.transport.data) == [b"{}"]  # closed silently


@pytest.mark.parametrize(
    ("status", "method", "declared"),
    [(204, b"GET", None), (304, b"GET", b"5"), (204, b"GET", b"5"), (200, b"HEAD", None)],
)
def test_a_body_on_a_bodiless_response_is_never_written(
    status: int, method: bytes, declared: bytes | None
) -> None:
    """Bytes an app sends after a 204 or 304 head (or a HEAD answer) would be read by the
    client as the start of the next response (response splitting); they are dropped."""
    smuggled = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nevil!"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/next":
            await _json_app(b"{}")(scope, receive, send)
            return
        headers = [] if declared is None else [(b"content-length", declared)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": smuggled[: int(declared or 99)]})

    async def main() -> Conn:
        conn = Conn(app)
        await conn.feed(
            method + b" /x HTTP/1.1\r\nhost: t\r\n\r\nGET /next HTTP/1.1\r\nhost: t\r\n\r\n"
        )
        return conn

    conn = asyncio.run(main())
    first, _, rest = conn.transport.data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 %d" % status)
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")  # the next answer follows the head at once
    assert _responses(rest) == [b"{}"]


def test_a_request_pipelined_after_connection_close_does_not_lose_the_answer() -> None:
    """Bytes after a ``Connection: close`` request are a parse error to llhttp by default:
    the request before them is still answered, then the connection closes unread."""
    release = asyncio.Event()
    seen: list[str] = []
    echo = _echo_app([])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await release.wait()
        await echo(scope, receive, send)

    async def main() -> Conn:
        conn = Conn(app)
        await conn.feed(GET.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n") + GET)
        release.set()
        await conn.settle()
        return conn

    conn = asyncio.run(main())
    assert _responses(conn.transport.data) == [b"0 /x"]
    assert b"connection: close" in conn.transport.data
    assert seen == ["/x"] and conn.transport.closed


@pytest.mark.parametrize("start", [b"GET /", b"GET / HTTP/1.1\r\nx-big: "])
def test_a_request_head_past_the_limit_gets_431_and_the_connection_closes(start: bytes) -> None:
    """A request target or header without end is refused at MAX_HEAD bytes: kept growing,
    each piece copies all before it (the event loop stalls, memory grows without bound)."""

    async def main() -> Conn:
        conn = Conn(_json_app(b"{}"))
        conn.proto.data_received(start)
        for _ in range(2 * protocol.MAX_HEAD // 65536 + 1):
            if conn.transport.closed:
                break
            conn.proto.data_received(b"a" * 65536)
        await conn.settle()
        return conn

    conn = asyncio.run(main())
    assert conn.transport.closed
    assert conn.transport.data.startswith(b"HTTP/1.1 431 ")


def test_a_request_head_within_the_limit_is_served() -> None:
    async def main() -> Conn:
        conn = Conn(_json_app(b"{}"))
        conn.proto.data_received(GET[:-2])  # all but the blank line that ends the head
        big = b"x-big: " + b"a" * (protocol.MAX_HEAD - 1024) + b"\r\n"
        for i in range(0, len(big), 4096):  # trickled: every piece counts
            conn.proto.data_received(big[i : i + 4096])
        await conn.feed(b"\r\n")
        return conn

    conn = asyncio.run(main())
    assert _responses(conn.transport.data) == [b"{}"]


@pytest.mark.parametrize(
    "start",
    [
        {"status": 103},  # interim: the client would wait on for the final answer
        {"status": 1000},
        {"status": 200, "headers": [(b"x-a", b"1\r\nset-cookie: evil")]},
        {"status": 200, "headers": [(b"x a", b"1")]},
        {"status": 200, "headers": [(b"content-length", b"1_0")]},
        {"status": 200, "headers": [(b"x-a", b"fine"), (b"x-b", b"\x7f"), (b"x-c", b"ok")]},
        {"status": 200, "headers": [(b"x-a", b"fine\t"), (b"x-b", b"\x00")]},
        {"status": 200, "headers": [(b"x-a", b"1"), (b"X-A\xff", b"1")]},
        # Framing a client or an intermediary could read otherwise than we write it.
        {"status": 200, "headers": [(b"content-length", b"10"), (b"content-length", b"12")]},
        {"status": 200, "headers": [(b"content-length", b"10"), (b"Content-Length", b"10")]},
        {
            "status": 200,
            "headers": [(b"content-length", b"10"), (b"transfer-encoding", b"chunked")],
        },
        {
            "status": 200,
            "headers": [(b"transfer-encoding", b"chunked"), (b"content-length", b"10")],
        },
        {"status": 200, "headers": [(b"transfer-encoding", b"gzip")]},
        {"status": 200, "headers": [(b"transfer-encoding", b"chunked, gzip")]},
        {"status": 200, "headers": [(b"transfer-encoding", b"chunked, chunked")]},
        {"status": 200, "headers": [(b"transfer-encoding", b"chunked")] * 2},
    ],
)
def test_an_invalid_response_head_gets_a_500_instead(start: dict[str, Any]) -> None:
    """Nothing of an invalid head is written; the client gets a 500 (not silence)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", **start})
        await send({"type": "http.response.body", "body": b"0123456789"})

    out = asyncio.run(_serve(app, GET))
    assert out.data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert out.data.endswith(b"Internal Server Error") and out.closed


def test_requests_pipelined_past_the_queue_limit_are_not_read() -> None:
    """A packet of tiny pipelined requests is parsed in one go, each into a scope held until
    its turn (about 60 times the bytes read): past MAX_QUEUED the rest is not read, those
    queued are answered and the connection closes."""
    limit = protocol.MAX_QUEUED
    first, last = asyncio.Event(), asyncio.Event()
    seen: list[str] = []
    echo = _echo_app([])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        if len(seen) == 1:
            await first.wait()
        elif len(seen) == limit + 1:
            await last.wait()
        await echo(scope, receive, send)

    async def main() -> Conn:
        conn = Conn(_guarded(app))
        conn.proto.data_received(GET * (limit + 50))
        assert len(conn.proto.queued) <= limit and conn.transport.paused
        first.set()
        await conn.settle()
        await conn.settle()
        _expire_if_due(conn)  # the last one queued takes its time: no deadline is the client's
        last.set()
        await conn.settle()
        return conn

    conn = asyncio.run(main())
    assert len(seen) == limit + 1  # the one answered first, then each queued one
    assert len(_responses(conn.transport.data)) == limit + 1
    assert conn.transport.data.count(b"connection: close") == 1 and conn.transport.closed
    assert conn.transport.paused  # nothing more was read


def test_the_scope_says_whether_the_whole_body_is_here() -> None:
    """``routeguard.body_ready`` is true while the whole body waits unread (the app then
    reads it without arming a deadline), false while part of it is still to come and once
    ``receive`` has handed it over."""
    from routeguard.server.auth import BODY_READY

    seen: list[tuple[str, bool]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        ready = scope["extensions"][BODY_READY]
        seen.append(("start", ready()))
        while True:
            msg = await receive()
            seen.append(("read", ready()))
            if not msg.get("more_body"):
                break
        await _json_app(b"{}")(scope, receive, send)

    async def main() -> None:
        whole = Conn(app)
        await whole.feed(_post(b"/a", b'{"x": 1}'))
        request = _post(b"/b", b'{"y": 2}')
        split = Conn(app)
        await split.feed(request[:-3])
        await split.feed(request[-3:])

    asyncio.run(main())
    assert seen[:2] == [("start", True), ("read", False)]
    assert seen[2] == ("start", False) and seen[-1] == ("read", False)


def _streaming(chunks: int, seen: list[str]) -> App:
    """A guarded app that streams ``chunks`` pieces, noting how its stream ended."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # the (empty) body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
        seen.append((await receive())["type"])

    guard = ConnectionGuard(
        header_timeout=1.0, body_timeout=1.0, max_unauthenticated=4, write_timeout=5.0
    )
    setattr(app, "connection_guard", guard)  # noqa: B010 - as the proxy's app carries it
    return app


class Abortable(Recording):
    """A transport that also notes an abort."""

    aborted = False

    def abort(self) -> None:
        """Mark aborted (and closed)."""
        self.aborted = self.closed = True


def test_a_client_that_leaves_its_answer_unread_is_cut_off_at_the_write_deadline() -> None:
    seen: list[str] = []

    async def main() -> Conn:
        conn = Conn(_streaming(3, seen))
        conn.transport = Abortable()
        conn.proto.connection_made(conn.transport)
        conn.proto.pause_writing()  # the socket's buffer is full: the next send waits
        await conn.feed(GET)
        wait = conn.proto.write_wait
        assert wait is not None and wait.deadline is not None and not seen
        wait.expired()  # the sweep, once write_timeout passed with nothing read
        assert conn.transport.aborted and conn.proto.write_wait is None
        await conn.lose()  # what the event loop reports after an abort
        return conn

    asyncio.run(main())
    assert seen == ["http.disconnect"]  # the app went on, and saw the client gone


def test_a_client_that_reads_again_in_time_keeps_its_connection() -> None:
    seen: list[str] = []

    async def main() -> Conn:
        conn = Conn(_streaming(3, seen))
        conn.proto.pause_writing()
        await conn.feed(GET)
        assert conn.proto.write_wait is not None
        conn.proto.resume_writing()  # room again before the deadline
        await conn.settle()
        assert conn.proto.write_wait is None and not conn.transport.closed
        await conn.lose()
        return conn

    conn = asyncio.run(main())
    assert seen == ["http.disconnect"] and conn.transport.data.count(b"x" * 100) == 3


def test_no_write_deadline_without_a_guard() -> None:
    async def main() -> Conn:
        conn = Conn(_json_app(b"{}"))
        conn.proto.pause_writing()
        assert conn.proto.write_wait is None
        conn.proto.resume_writing()
        await conn.lose()
        return conn

    asyncio.run(main())


def test_forwarded_headers_do_not_rewrite_the_client() -> None:
    """Our servers leave scope["client"] and ["scheme"] as the socket gave them: nothing
    reads them, so uvicorn's X-Forwarded-* middleware (which trusts 127.0.0.1) is left out."""
    import http.client

    from routeguard.server.thread import ServerThread

    seen: list[tuple[Any, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append((scope["client"], scope["scheme"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with ServerThread(app) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        conn.request("GET", "/", headers=forwarded)
        assert conn.getresponse().status == 204
        conn.close()
    assert len(seen) == 1
    client, scheme = seen[0]
    assert client[0] == "127.0.0.1" and scheme == "http"


def test_response_header_values_keep_their_tabs_and_names_are_lowered() -> None:
    """A tab inside a value is allowed (RFC 9110 field-vchar or HTAB) and written as sent;
    names go out in lower case, the same name in two cases as one."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"X-Tabbed", b"a\tb"), (b"x-tabbed", b"c"), (b"Content-Length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    out = asyncio.run(_serve(app, GET))
    head = out.data.split(b"\r\n\r\n", 1)[0]
    assert out.data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nx-tabbed: a\tb\r\nx-tabbed: c\r\n" in head
    assert b"\r\ncontent-length: 2" in head and out.data.endswith(b"\r\n\r\nok")


def test_an_apps_transfer_coding_ending_in_chunked_is_written_once() -> None:
    """``Transfer-Encoding: gzip, chunked`` from the app frames the body as chunks under
    that one header (no second ``transfer-encoding: chunked`` of ours)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"Transfer-Encoding", b"gzip, chunked")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    out = asyncio.run(_serve(app, GET))
    head, _, body = out.data.partition(b"\r\n\r\n")
    assert head.lower().count(b"transfer-encoding") == 1
    assert b"\r\ntransfer-encoding: gzip, chunked" in head
    assert body == b"3\r\nabc\r\n0\r\n\r\n"


def test_the_500_for_a_refused_head_answering_head_has_no_body() -> None:
    """A HEAD request whose answer's head is refused gets the 500's head alone (no content
    in an answer to HEAD: a client pipelining behind it would read it as the next one)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        bad = [(b"content-length", b"3"), (b"content-length", b"3")]
        await send({"type": "http.response.start", "status": 200, "headers": bad})

    out = asyncio.run(_serve(app, GET.replace(b"GET", b"HEAD", 1)))
    assert out.data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert out.data.endswith(b"\r\n\r\n") and b"content-length: 21" in out.data
    assert out.closed


@pytest.mark.parametrize(
    "framing",
    [(b"content-length", b"0"), (b"content-length", b"5"), (b"Transfer-Encoding", b"chunked")],
)
def test_a_204_head_goes_out_without_framing_headers(framing: tuple[bytes, bytes]) -> None:
    """A 204 carries no Content-Length or Transfer-Encoding (RFC 9110 8.6): an app's are not
    written, so no client reads a body into the next answer on the connection."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/next":
            await _json_app(b"{}")(scope, receive, send)
            return
        headers = [(b"x-a", b"1"), framing]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> Conn:
        conn = Conn(app)
        await conn.feed(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\nGET /next HTTP/1.1\r\nhost: t\r\n\r\n")
        return conn

    conn = asyncio.run(main())
    first, _, rest = conn.transport.data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 204") and b"x-a: 1" in first
    assert b"content-length" not in first.lower() and b"transfer-encoding" not in first.lower()
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"{}")
