"""The proxy's HTTP protocol writes a response whose head declares a Content-Length in one
write with its body (uvicorn alone writes head and body apart), and changes nothing else:
HEAD answers, streamed heads, a long body and an app failing after its head, each checked
against a transport that records every write."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from routeguard.server.connections import PROTOCOL, GuardedHttpToolsProtocol

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Recording(asyncio.Transport):
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Keep ``data``."""
        self.writes.append(bytes(data))

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
        """Nothing to pause."""

    def resume_reading(self) -> None:
        """Nothing to resume."""


async def _serve(app: App, request: bytes, until: asyncio.Event | None = None) -> Recording:
    """Feed ``request`` to the protocol serving ``app``; return once the response is done
    (or ``until`` is set)."""
    config = uvicorn.Config(app, http=PROTOCOL, lifespan="off", log_level="critical")
    config.load()
    proto = GuardedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Recording()
    proto.connection_made(transport)
    proto.data_received(request)
    for _ in range(200):
        await asyncio.sleep(0)
        if (until is not None and until.is_set()) or (
            proto.cycle is not None and (proto.cycle.response_complete or transport.closed)
        ):
            break
    proto.connection_lost(None)
    return transport


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


def test_an_app_failing_after_a_sized_head_still_sends_the_head_then_closes() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("boom")

    out = asyncio.run(_serve(app, GET))
    assert out.closed
    assert b"".join(out.writes).startswith(b"HTTP/1.1 200 OK\r\n")  # as uvicorn alone sends
