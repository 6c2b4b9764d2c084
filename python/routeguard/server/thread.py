"""Run an ASGI app with uvicorn on a background thread: for tests, benches and the CLI's
in-process simulated upstream.

The socket is bound before the thread starts (port 0 picks a free one), so ``url`` is
known at once and there is no race on ports; ``__enter__`` returns once the server accepts
connections and ``__exit__`` shuts it down cleanly (forcibly if it hangs).
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any, Self

import uvicorn

_START_TIMEOUT = 10.0


def _http_protocol() -> str:
    """routeguard's HTTP/1.1 protocol, or uvicorn's choice where httptools is missing."""
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - httptools is a dependency on POSIX
        return "auto"
    from routeguard.server.protocol import PROTOCOL

    return PROTOCOL


# What every server of ours (``routeguard serve`` and :class:`ServerThread`) sets alike. No
# X-Forwarded-* rewriting of the scope's client and scheme: the proxy reads neither (the
# simulated Vertex token endpoint reads the scheme its own socket serves), and uvicorn's
# middleware for it costs every request a layer and a dict of its headers.
SERVED: dict[str, Any] = {
    "lifespan": "on", "log_level": "warning", "access_log": False, "proxy_headers": False,
}  # fmt: skip


def uvicorn_config(app: Any, host: str = "127.0.0.1", port: int = 0) -> uvicorn.Config:
    """The uvicorn settings every in-process server uses: C loop and parser, no access log."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # "auto" is uvloop whenever installed (a dependency everywhere but Windows); the
        # proxy's own protocol (server/protocol.py) applies its read deadlines.
        loop="auto",
        http=_http_protocol(),
        timeout_graceful_shutdown=2,
        **SERVED,
    )


class ServerThread:
    """A uvicorn server for one ASGI app, on its own thread and event loop."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The base URL, ``http://HOST:PORT`` (valid while running)."""
        if self._server is None:
            raise RuntimeError("the server is not running: use it in a `with` block")
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn_config(self._app, self.host, self.port))
        self._server = server
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"asgi-{self.port}", daemon=True
        )
        self._thread = thread
        thread.start()
        waited = 0.0
        while not server.started:
            if not thread.is_alive() or waited >= _START_TIMEOUT:
                self.stop()
                raise RuntimeError(f"the server on port {self.port} did not start")
            thread.join(0.005)
            waited += 0.005
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
