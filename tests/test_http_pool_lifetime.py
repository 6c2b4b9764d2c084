"""The upstream client's connection pool ends with its event loop: a caller that runs
``asyncio.run`` (or ``uvloop.run``) several times without ``close_session`` leaves no loop
alive and no connection open behind it (before, each pool held its loop and its idle
sockets for the life of the process)."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from routeguard.providers import http
from waiting import eventually


class KeepAliveServer:
    """A threaded HTTP/1.1 server answering every request ``{}`` on kept-alive connections,
    counting those open."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.open = 0
        self.accepted = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.open += 1
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while data := conn.recv(65536):
                buf += data
                while b"\r\n\r\n" in buf:
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    if len(rest) < length:
                        break
                    buf = rest[length:]
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        finally:
            conn.close()
            with self._lock:
                self.open -= 1

    def close(self) -> None:
        """Stop accepting."""
        self.sock.close()


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    srv = KeepAliveServer()
    yield srv
    srv.close()


Runner = Callable[[Coroutine[Any, Any, int]], int]


@pytest.mark.timeout(60)  # before the fix the uvloop case hung in its second run
@pytest.mark.parametrize("closed", [False, True], ids=["left-open", "close_session"])
@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_runs_leave_no_loop_or_socket_with_or_without_close_session(
    server: KeepAliveServer, run: Runner, closed: bool
) -> None:
    """(Warnings are errors here: closing the session must leave nothing for the loop to
    finalize after it has closed.)"""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def call() -> int:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        first = await http.post_json(f"http://127.0.0.1:{server.port}/v1/x", {}, {"n": 1}, 5)
        again = await http.post_json(f"http://127.0.0.1:{server.port}/v1/x", {}, {"n": 2}, 5)
        if closed:
            await http.close_session()
        return first.status + again.status  # the second reuses the first's connection

    for _ in range(3):
        assert run(call()) == 400
    assert server.accepted == 3  # one kept-alive connection per run
    gc.collect()
    assert [r() for r in loops] == [None, None, None]

    def all_closed() -> None:
        assert server.open == 0, f"{server.open} connection(s) still open"

    eventually(all_closed)
