"""A client that stops reading its answer, over real sockets through routeguard's server
protocol: once the socket buffers are full it has ``write_timeout`` to make room, then the
connection is cut and the app sees the disconnect. Without the deadline the app's ``send``
waited for as long as TCP kept the connection (hours), holding the request's task, its
upstream stream and its buffered bytes."""

from __future__ import annotations

import socket
import threading
from typing import Any

from routeguard.server.connections import ConnectionGuard
from routeguard.server.thread import ServerThread


class Endless:
    """An ASGI app streaming until its client is gone; ``gone`` is set when it sees that."""

    def __init__(self) -> None:
        self.gone = threading.Event()
        self.connection_guard = ConnectionGuard(
            header_timeout=5.0, body_timeout=5.0, max_unauthenticated=8, write_timeout=0.5
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                kind = msg["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        for _ in range(16384):  # 1 GiB: far past any socket buffer
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if self.gone.is_set():
                break
        if (await receive())["type"] == "http.disconnect":
            self.gone.set()


def test_a_client_that_stops_reading_is_cut_off() -> None:
    app = Endless()
    with ServerThread(app) as server:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((server.host, server.port))
        try:
            client.sendall(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
            # Nothing is read: the app must be told its client is gone (a liveness bound,
            # generous for a slow machine; the deadline is half a second).
            assert app.gone.wait(30.0), "the app is still writing to a client that reads nothing"
            client.settimeout(30.0)
            received = 0
            try:
                while chunk := client.recv(1 << 20):  # what was buffered, then the end
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert received < 1 << 30  # cut off, not the whole answer
        finally:
            client.close()
