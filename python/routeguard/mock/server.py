"""Running the simulated upstream: in a background thread for tests and benches, or served.

:class:`MockServer` binds a free loopback port itself (so there is no race for it), runs
uvicorn (uvloop + httptools, no access log) on that socket in a daemon thread, returns once
the server accepts connections, and stops it on exit. :func:`serve_mock` serves until its
task is cancelled, for ``routeguard mock-upstream``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import uvicorn

from routeguard.mock.app import create_mock_app
from routeguard.mock.journal import RecordedRequest
from routeguard.mock.meanings import Meanings
from routeguard.server.thread import ServerThread, uvicorn_config


class MockServer:
    """The simulated upstream on ``http://127.0.0.1:<free port>`` for the ``with`` block.

    ``url`` is the base URL (OpenAI SDKs take ``url + "/v1"``), ``requests`` the requests
    received so far (see :class:`RecordedRequest`), ``reset()`` forgets them and the flaky
    counters.
    """

    def __init__(
        self,
        *,
        ttft: float = 0.0,
        tokens_per_s: float | None = None,
        host: str = "127.0.0.1",
        meanings: Meanings | None = None,
    ) -> None:
        self.app = create_mock_app(ttft=ttft, tokens_per_s=tokens_per_s, meanings=meanings)
        self._thread = ServerThread(self.app, host)

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (valid inside the ``with`` block)."""
        return self._thread.url

    @property
    def port(self) -> int:
        """The port served on."""
        return self._thread.port

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first (a snapshot; /health is not recorded)."""
        return self.app.journal.snapshot()

    @property
    def abandoned_streams(self) -> int:
        """How many streams lost their client before the end (since the last reset)."""
        return self.app.journal.abandoned

    @property
    def request_count(self) -> int:
        """How many requests were received (counts past the journal's bound too)."""
        return self.app.journal.total

    def reset(self) -> None:
        """Forget recorded requests and flaky counters."""
        self.app.reset()

    def __enter__(self) -> Self:
        self._thread.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._thread.stop()


async def serve_mock(
    host: str,
    port: int,
    *,
    ttft: float = 0.0,
    tokens_per_s: float | None = None,
    meanings: Meanings | None = None,
) -> None:
    """Serve the simulated upstream on ``host:port`` until cancelled."""
    app = create_mock_app(ttft=ttft, tokens_per_s=tokens_per_s, meanings=meanings)
    config = uvicorn_config(app, host, port)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # Shut down cleanly (close listeners, finish in-flight responses), then stay cancelled.
        server.should_exit = True
        await task
        raise
