"""One proxy process's life after startup: requests in flight, graceful drain, config reload.

Every request is counted on the gateway it started with (the proxy pins it for the request:
``ProxyApp.gateway``), so a reload can swap the gateway at once while requests and streams
in flight finish on the old one, which :func:`routeguard.reload.retire` closes when its last
request ends.

Drain (SIGTERM, SIGINT, or :meth:`Lifecycle.drain`): readiness answers 503 and new requests
get a 503 ``draining`` error with ``Connection: close`` (clients retry elsewhere); idle
keep-alive connections are closed; with ``--workers N`` this worker also stops accepting
connections, so its siblings take them. In-flight requests and streams run on for up to
``server.drain_seconds``. Then streams still running end with an in-band ``draining`` error
(``cut``; their holds settle for what they sent) and requests still waiting on upstream are
cancelled and answered 503 (their holds released, as when a client goes away); once they have
settled, the process exits with status 0. A second SIGINT exits at once; repeated SIGTERMs
(a process group signalled, then each worker by its parent) do not shorten the drain.

Reload (SIGHUP, ``POST /admin/reload``, or :meth:`Lifecycle.reload`): see
:mod:`routeguard.reload`. A worker under ``serve --workers N`` answers ``POST /admin/reload``
by checking the file and then asking its parent for a rolling restart (SIGHUP): new workers
start on the new config, old ones drain; the parent handles a SIGHUP the same way.

Signals are taken over from uvicorn only when the app runs under a ``uvicorn.Server`` on the
main thread (``routeguard serve``); an app mounted elsewhere gets the same behaviour by
calling :meth:`drain` and :meth:`reload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from routeguard import config as config_mod
from routeguard import scrub
from routeguard.errors import ConfigError, RouteguardError
from routeguard.reload import Reloaded, compare, retire, successor

if TYPE_CHECKING:
    from types import FrameType

    from routeguard.gateway import Gateway
    from routeguard.server.app import ProxyApp

log = scrub.guard(logging.getLogger("routeguard.server"))

_STREAM_CUT_WAIT_S = 2.0  # at the drain deadline: how long cut streams get to end and settle
_CANCEL_WAIT_S = 10.0  # then: how long cancelled requests get to release their holds
WORKERS_ENV = "ROUTEGUARD_WORKERS"
"""Set by ``serve --workers N`` (N > 1) for its workers."""


class Draining(RouteguardError):
    """The proxy is shutting down and takes no new requests (retry on another instance)."""

    status_code = 503
    error_type = "api_error"
    code = "draining"
    retry_after = 1.0
    close_connection = True


class Progress:
    """How far a request's response has gone out (what a cut request still owes)."""

    __slots__ = ("done", "lost", "started")

    def __init__(self) -> None:
        self.started = False
        self.done = False
        self.lost = False  # the host's send raised OSError: the client is gone


class Cut(asyncio.Event):
    """The drain deadline's signal to the streams still running: an ``asyncio.Event`` that
    also calls the callbacks registered with :meth:`when_set` (a stream registers one
    instead of keeping a task waiting on the event)."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: set[Callable[[], object]] = set()

    def when_set(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` once this is set (at the event loop's next turn if it is: never
        from inside the caller); returns the call that forgets it."""
        if self.is_set():
            asyncio.get_running_loop().call_soon(callback)
            return _forgotten
        self._callbacks.add(callback)
        return functools.partial(self._callbacks.discard, callback)

    def set(self) -> None:
        """Set the event, then call every registered callback once."""
        super().set()
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()


def _forgotten() -> None:
    """What :meth:`Cut.when_set` returns for a callback already called."""


class Lifecycle:
    """Drain and reload for one :class:`~routeguard.server.app.ProxyApp` (see the module
    docstring)."""

    def __init__(self, app: ProxyApp) -> None:
        self._app = app
        self.draining = False
        self.cut = Cut()
        """Set at the drain deadline: streams still running end with an in-band error."""
        self._cutting = False
        self._tasks: dict[object, Gateway] = {}  # each running request's task -> its gateway
        self._idle = asyncio.Event()  # set when the last request ends, while _waiting
        self._waiting = False
        self._reload_lock = asyncio.Lock()
        self._retiring: list[Gateway] = []
        self._server: Any = None  # the uvicorn.Server whose signals this took over
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.workers = int(os.environ.get(WORKERS_ENV, "1") or 1)
        self.reloads = 0
        """Reloads applied in this process."""

    # ------------------------------------------------------------------ requests

    def enter(self, gateway: Gateway) -> object:
        """Count the running request (its task) on ``gateway``; returns the token
        :meth:`leave` takes. Two dict operations: this runs on every request."""
        token: object = asyncio.current_task() or object()
        self._tasks[token] = gateway
        return token

    def leave(self, token: object) -> None:
        """The request of ``token`` (from :meth:`enter`) has ended."""
        gateway = self._tasks.pop(token, None)
        if self._retiring and gateway in self._retiring and gateway not in self._tasks.values():
            self._retire_soon(gateway)
        if not self._tasks and self._waiting:
            self._idle.set()

    @property
    def in_flight(self) -> int:
        """Requests being served now (on any gateway)."""
        return len(self._tasks)

    async def _until_idle(self, seconds: float) -> None:
        """Wait until no request runs, for at most ``seconds``."""
        self._waiting = True
        self._idle.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._tasks:
                    await self._idle.wait()
                    self._idle.clear()

    def approval_queues(self) -> list[Any]:
        """Pending-approval queues of the current gateway and of those still finishing."""
        queues = {id(q): q for q in self._app.current_gateway.approval_queues()}
        for gw in self._retiring:
            queues.update((id(q), q) for q in gw.approval_queues())
        return list(queues.values())

    # ------------------------------------------------------------------ signals

    def install(self) -> None:
        """Take SIGTERM, SIGINT and SIGHUP over from the uvicorn server running this app, if
        one runs it on the main thread (else a no-op)."""
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return  # signals belong to the main thread (a ServerThread in tests and benches)
        handler = signal.getsignal(signal.SIGTERM)
        server = getattr(handler, "__self__", None)
        if server is None or not hasattr(server, "should_exit"):
            return
        self._server = server
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if self.draining and sig == signal.SIGINT:
            log.warning("second interrupt: exiting without waiting for requests")
            if self._server is not None:
                self._server.should_exit = True
                self._server.force_exit = True
            return
        if loop is not None and not loop.is_closed() and not self.draining:
            loop.call_soon_threadsafe(self._start_drain)

    def _on_hup(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._spawn, self._reload_logged())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.drain()
        finally:
            if self._server is not None:
                self._server.should_exit = True

    # ------------------------------------------------------------------ drain

    async def drain(self, seconds: float | None = None) -> int:
        """Stop taking requests, let those in flight finish for up to ``seconds`` (default
        ``server.drain_seconds``), cancel the rest; returns how many were cancelled."""
        self.draining = True
        limit = (
            self._app.current_gateway.config.server.drain_seconds if seconds is None else seconds
        )
        log.warning(
            "draining: %d request(s) in flight, up to %gs to finish; new requests get 503",
            self.in_flight,
            limit,
        )
        self._stop_listening()
        await self._until_idle(limit)
        running = len(self._tasks)
        if not running:
            log.warning("drained: every request finished")
            return 0
        log.warning("drain deadline: cutting %d request(s) still running", running)
        self.cut.set()  # streams end with an in-band error, their holds settle
        await self._until_idle(_STREAM_CUT_WAIT_S)
        left = [t for t in self._tasks if isinstance(t, asyncio.Task) and not t.done()]
        if left:  # requests still waiting on upstream: cancelled, their holds released
            self._cutting = True
            for t in left:
                t.cancel()
            await self._until_idle(_CANCEL_WAIT_S)
        return running

    async def close(self) -> None:
        """Finish retiring the pipelines a reload replaced (at shutdown)."""
        for gateway in list(self._retiring):
            self._retire_soon(gateway)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def cut_by_drain(self) -> bool:
        """Whether a request's cancellation came from the drain deadline (see ``drain``)."""
        return self._cutting

    async def answer_cut(
        self, send: Any, progress: Progress, anthropic: bool, send_error: Any
    ) -> None:
        """End a request the drain deadline cancelled: an error if nothing was sent yet, else
        the end of its body; the task carries on as not cancelled."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        exc = Draining("the proxy is shutting down: the request was cut after server.drain_seconds")
        if not progress.started:
            await send_error(send, exc, anthropic)
        elif not progress.done:
            await send({"type": "http.response.body", "body": b""})

    def _stop_listening(self) -> None:
        """Close idle keep-alive connections (and with sibling workers, the listener)."""
        server = self._server
        if server is None:
            return
        if self.workers > 1:  # the siblings take new connections from the shared socket
            for s in getattr(server, "servers", ()):
                s.close()
        state = getattr(server, "server_state", None)
        for conn in list(getattr(state, "connections", ())):
            with contextlib.suppress(Exception):
                conn.shutdown()  # idle: closed now; busy: closed after its response

    # ------------------------------------------------------------------ reload

    async def reload(self, source: str | None = None) -> Reloaded:
        """Re-read the config and swap the new gateway in (ConfigError: nothing changed)."""
        async with self._reload_lock:
            current = self._app.current_gateway
            out = await successor(current, source)
            self._app.use_gateway(out.gateway)
            self.reloads += 1
            self._retiring.append(current)
            if current not in self._tasks.values():
                self._retire_soon(current)
            for w in out.gateway.config.warnings:
                log.warning("config: %s", w)
            if out.restart_required:
                log.warning(
                    "config reloaded from %s; these changes wait for a restart: %s",
                    out.source,
                    ", ".join(out.restart_required),
                )
            else:
                log.warning("config reloaded from %s", out.source)
            return out

    def _retire_soon(self, gateway: Gateway) -> None:
        if gateway in self._retiring:
            self._retiring.remove(gateway)
            self._spawn(retire(gateway, self._app.current_gateway))

    async def _reload_logged(self) -> None:
        """A SIGHUP's reload: problems go to the log, the old config stays."""
        try:
            await self.reload()
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc.message)
        except Exception as exc:
            log.error("reload failed, the running config stays: %s", type(exc).__name__)

    async def reload_request(self) -> tuple[int, dict[str, Any]]:
        """``POST /admin/reload``: (status, body); 400 with every problem when refused."""
        try:
            if self.workers > 1:
                return await self._rolling_restart()
            out = await self.reload()
        except ConfigError as exc:
            return 400, config_error_body(exc)
        return 200, {
            "object": "reload",
            "status": "reloaded",
            "source": out.source,
            "models": out.gateway.models(),
            "restart_required": out.restart_required,
            "warnings": list(out.gateway.config.warnings),
        }

    async def _rolling_restart(self) -> tuple[int, dict[str, Any]]:
        """Under ``--workers N``: check the file, then have the parent restart every worker."""
        current = self._app.current_gateway
        source = current.config.source
        if source == "<dict>":
            raise ConfigError(
                [config_mod.ConfigProblem("", "started without --config: nothing to re-read")]
            )
        config = await asyncio.to_thread(config_mod.load, source)
        problems, restart = compare(current.config, config)
        if problems:
            raise ConfigError(problems, source=source)
        os.kill(os.getppid(), signal.SIGHUP)
        return 202, {
            "object": "reload",
            "status": "restarting workers",
            "source": source,
            "workers": self.workers,
            "restart_required": restart,
            "warnings": list(config.warnings),
        }


def config_error_body(exc: ConfigError) -> dict[str, Any]:
    """A refused config as an OpenAI-style 400 body listing every problem."""
    return {
        "error": {
            "message": exc.message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_config",
            "problems": [{"path": p.path, "message": p.message} for p in exc.problems],
        }
    }
