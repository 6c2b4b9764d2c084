"""The OpenAI-compatible proxy: a raw ASGI app over one Gateway.

Raw ASGI rather than a framework: the proxy's whole job is to add as little as possible
to each request, and the routes are few. It mounts under Starlette/FastAPI like any ASGI
app. Flow per request: route by path -> read the body up to the size limit -> authenticate
-> decode and validate -> ``Gateway.chat_result`` -> JSON or SSE out, with headers naming
the served model, the attempts and the gateway's own overhead. The Responses, legacy
completions and Anthropic Messages endpoints translate to and from chat around that call
(``responses``, ``completions``, ``messages`` beside this module). Every error leaves as an
OpenAI-style JSON body (Anthropic-style on ``/v1/messages*``) with a 4xx/5xx status; an
unexpected exception is logged here and answered with a generic 500, never a traceback.
Once a chat request's response has left, its Trace goes to the request log and the
metrics (``/metrics``); ``/health/liveness`` and ``/health/readiness`` need no key. ``/ui`` is
the live dashboard (``server/dashboard.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import msgspec

from routeguard import scrub
from routeguard.budget.accounts import micros_to_usd
from routeguard.errors import (
    BudgetExceeded,
    ClientClosed,
    CoreInputError,
    CoreNotFound,
    InvalidRequest,
    ModelNotFound,
    RequestTooLarge,
    RouteguardError,
)
from routeguard.gateway import Gateway, new_request_id
from routeguard.observe.feedback import JsonlFeedback, SqliteFeedback, feedback_path, parse_feedback
from routeguard.observe.requestlog import RequestLog, Trace
from routeguard.observe.spend import SPEND_DB_ENV, UNSAVED_MAX_ROWS, SpendRecords
from routeguard.providers import client_headers
from routeguard.providers.base import NativeRequest
from routeguard.result import ChatResult
from routeguard.schema import decode_json
from routeguard.server import admin, cache_admin, dashboard, litellm_entities, litellm_keys
from routeguard.server import responses as responses_api
from routeguard.server.admin import is_admin_path
from routeguard.server.approvals import SharedApprovals, approvals_api
from routeguard.server.auth import BODY_READY, Gate, PermissionDenied, Principal, keys_required
from routeguard.server.connections import ConnectionGuard
from routeguard.server.dashboard import Dashboard, is_ui_path
from routeguard.server.health import readiness
from routeguard.server.lifecycle import Cut, Draining, Lifecycle, Progress
from routeguard.server.metrics import CONTENT_TYPE, Metrics, multiprocess
from routeguard.server.responses_stream import ResponsesStreamEncoder, relay_failed

if TYPE_CHECKING:
    from routeguard.server.tracing import ServerSpan, Tracing

log = scrub.guard(logging.getLogger("routeguard.server"))  # tracebacks may quote secrets

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_enc = msgspec.json.Encoder()
_DRAIN_LIMIT = 8  # read at most this many times the body limit before giving up on a body
_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamEncoder(Protocol):
    """Chat chunks in, a translated endpoint's SSE frames out (may also have ``start()``
    and ``fail(err)``)."""

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The frames for one chat chunk (b"" when it adds none)."""
        ...

    def finish(self) -> bytes:
        """The closing frames."""
        ...


class _NotFound(RouteguardError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class _MethodNotAllowed(RouteguardError):
    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(InvalidRequest):
    """The client took longer than server.body_timeout to send its request body."""

    status_code = 408
    code = "request_timeout"


# Paths whose bodies share another endpoint's limit (server.max_body_bytes_per_endpoint):
# the translated chat endpoints take the chat limit, count_tokens the messages one.
_ENDPOINT_ALIASES = {
    "/chat/completions": "/v1/chat/completions",
    "/embeddings": "/v1/embeddings",
    "/v1/responses": "/v1/chat/completions",
    "/responses": "/v1/chat/completions",
    "/v1/completions": "/v1/chat/completions",
    "/completions": "/v1/chat/completions",
    "/v1/messages/count_tokens": "/v1/messages",
    "/feedback": "/v1/feedback",
}
# The chat-like endpoints whose requests the metrics count.
_CHAT_PATHS = frozenset(
    {
        "/v1/chat/completions", "/chat/completions", "/v1/messages", "/v1/responses",
        "/responses", "/v1/completions", "/completions",
    }
)  # fmt: skip
# Answered without a key: probes and load balancers (and /metrics when metrics_public).
_OPEN_PATHS = frozenset({"/health", "/health/liveness", "/health/readiness"})


def _content_length(scope: Scope) -> int | None:
    """The declared body size, when the client sent a valid Content-Length."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class ProxyApp:
    """ASGI application serving the OpenAI (and Anthropic Messages) API over a Gateway."""

    def __init__(self, gateway: Gateway, *, request_log: str | None = None) -> None:
        self._gateway = gateway
        # The gateway a request started on, kept for its whole life across a reload.
        self._pinned: contextvars.ContextVar[Gateway | None] = contextvars.ContextVar(
            "routeguard_gateway", default=None
        )
        self.lifecycle = Lifecycle(self)
        obs = gateway.config.observability
        saved = gateway.config.server.database
        spend_db = saved or os.environ.get(SPEND_DB_ENV) or ":memory:"
        self.spend = SpendRecords(spend_db, max_rows=None if saved else UNSAVED_MAX_ROWS)
        gateway.spend_sink = self.spend.record  # its judge calls' rows
        path = request_log or obs.request_log
        self.request_log = (
            RequestLog(
                path,
                log_content=obs.log_content,
                max_bytes=obs.request_log_max_bytes,
                backups=obs.request_log_backups,
            )
            if path
            else None
        )
        if path:  # feedback is stored next to the log this proxy writes
            gateway.feedback_store = JsonlFeedback(
                feedback_path(path),
                max_bytes=obs.request_log_max_bytes,
                backups=obs.request_log_backups,
            )
        self.metrics: Metrics | None = None
        if obs.metrics:
            self.metrics = Metrics(gateway)
        self._metrics_public = obs.metrics_public
        # Pending approvals listed and decided through any worker: in the shared file.
        queues = gateway.approval_queues()
        self.approvals = (
            SharedApprovals(spend_db, queues) if queues and spend_db != ":memory:" else None
        )
        self.dashboard = Dashboard(
            gateway, self.spend, self.metrics, approvals=self.approvals,
            shared_spend=spend_db != ":memory:", metrics_shared=multiprocess(),
        )  # fmt: skip
        # serve sets it: freeze the start-up heap (not done for an app mounted in another
        # application, whose objects it would keep from the collector)
        self.freeze_gc = False
        self.tracing: Tracing | None = None
        if gateway.config.tracing is not None:  # the extra's presence was checked at load
            from routeguard.server.tracing import Tracing

            self.tracing = Tracing(
                gateway.config.tracing, log_content=obs.log_content, aliases=gateway.models()
            )
            self.tracing.install()
        master = gateway.config.server.master_key
        self._master = master.get().encode() if master is not None else None
        server = gateway.config.server
        self._max_body = server.max_body_bytes
        self._body_limits = dict(server.max_body_bytes_per_endpoint)
        self._body_timeout = server.body_timeout
        # Read by the server protocol routeguard runs (server/protocol.py).
        self.connection_guard = ConnectionGuard(
            header_timeout=server.header_timeout,
            body_timeout=server.body_timeout,
            write_timeout=server.write_timeout,
            max_unauthenticated=server.max_unauthenticated_connections,
        )
        self._gate = Gate(self._master, gateway.keys, required=keys_required(server))
        if not self._gate.required:
            log.warning(
                "no master key, key database or key store configured: the proxy accepts any caller"
            )
        self._routes: dict[str, tuple[str, Callable[[Scope, Receive, Send], Awaitable[None]]]] = {
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
            "/v1/messages": ("POST", self._messages),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/responses": ("POST", self._responses),
            "/responses": ("POST", self._responses),
            "/v1/completions": ("POST", self._completions),
            "/completions": ("POST", self._completions),
            "/v1/embeddings": ("POST", self._embeddings),
            "/v1/feedback": ("POST", self._feedback),
            "/feedback": ("POST", self._feedback),
            "/embeddings": ("POST", self._embeddings),
            "/v1/models": ("GET", self._models),
            "/models": ("GET", self._models),
            "/health": ("GET", self._health),
            "/health/liveness": ("GET", self._health),
            "/health/readiness": ("GET", self._readiness),
        }
        if self.metrics is not None:
            self._routes["/metrics"] = ("GET", self._metrics)
        self._route_limits = {path: self._limit_of(path) for path in self._routes}

    @property
    def gateway(self) -> Gateway:
        """The gateway serving the current request (the one it started on, even after a
        reload swapped in another); outside a request, the current one."""
        return self._pinned.get() or self._gateway

    @property
    def current_gateway(self) -> Gateway:
        """The gateway new requests start on."""
        return self._gateway

    def use_gateway(self, gateway: Gateway) -> None:
        """Serve new requests with ``gateway`` (a reload; see ``server.lifecycle``)."""
        self._gateway = gateway
        gateway.spend_sink = self.spend.record
        if self.metrics is not None:
            self.metrics.follow(gateway)
        self.dashboard.follow(gateway)
        if self.approvals is not None:  # the new gateway's queues, and those still finishing
            self.approvals.queues = self.lifecycle.approval_queues()
        if self.tracing is not None:
            self.tracing.aliases = frozenset(gateway.models())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await self.gateway.start_cache()
                await self.gateway.warm_up()  # ready means loaded: no first-request stall
                if self.freeze_gc:  # a process of its own (serve): what start-up made
                    gc.collect()  # lives as long as it does; out of the collector's way,
                    gc.freeze()  # a full collection scans only what requests made since
                self.lifecycle.install()  # SIGTERM drains, SIGHUP reloads (under serve)
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.lifecycle.close()  # pipelines a reload replaced
                await self.gateway.aclose()
                if self.metrics is not None:
                    self.metrics.close()
                if self.request_log is not None:
                    await asyncio.to_thread(self.request_log.close)
                if self.tracing is not None:  # exports what is queued
                    await asyncio.to_thread(self.tracing.shutdown)
                await asyncio.to_thread(self.spend.close)
                if self.approvals is not None:
                    await asyncio.to_thread(self.approvals.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        anthropic = path.startswith("/v1/messages")
        request_id = new_request_id()
        trace = scope["routeguard.trace"] = Trace(request_id, time.time(), time.perf_counter())
        id_header = (b"x-routeguard-request-id", request_id.encode())
        downstream = send
        span = None
        if self.tracing is not None and path not in _OPEN_PATHS and path != "/metrics":
            known = (path.rstrip("/") or "/") in self._routes
            shown = litellm_keys.shown_path(path)  # no key of /key/{key}/regenerate in traces
            span = self.tracing.begin(scope["method"], shown, scope["headers"], known)

        progress = Progress()

        async def send_with_id(message: Message) -> None:
            starts = message["type"] == "http.response.start"
            if starts:
                message["headers"] = [*message.get("headers", ()), id_header]
                progress.started = True
                if span is not None:
                    span.status = message["status"]
            elif message["type"] == "http.response.body":
                if trace.first_byte is None:
                    trace.first_byte = time.perf_counter()
                progress.done = not message.get("more_body", False)
            try:
                await downstream(message)
            except OSError:  # the ASGI spec's closed connection: no answer can follow
                progress.lost = True
                raise
            except Exception:
                if starts:  # a head the host refused (an invalid header) wrote nothing:
                    progress.started = False  # the error answer can still go out
                raise

        send = send_with_id
        gateway = self._gateway
        pin = self._pinned.set(gateway)
        scope["routeguard.cut"] = self.lifecycle.cut
        token = self.lifecycle.enter(gateway)
        try:
            await self._dispatch(path, scope, receive, send, trace, anthropic, span, progress)
        except asyncio.CancelledError:
            if not self.lifecycle.cut_by_drain():
                raise
            # Cancelled by our own drain deadline: end the request in its caller's protocol.
            await self.lifecycle.answer_cut(send, progress, anthropic, _send_error)
        finally:
            self.lifecycle.leave(token)
            self._pinned.reset(pin)

    async def _dispatch(
        self,
        path: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        trace: Trace,
        anthropic: bool,
        span: ServerSpan | None,
        progress: Progress,
    ) -> None:
        try:
            if self.lifecycle.draining and path.rstrip("/") not in _OPEN_PATHS:
                raise Draining("the proxy is shutting down: retry on another instance")
            key = path.rstrip("/") or "/"
            route = self._routes.get(key)  # no route is an admin or dashboard path
            if route is None:
                if is_admin_path(path):
                    await self._admin(scope, receive, send)
                    return
                if is_ui_path(path):
                    await self._ui(scope, receive, send)
                    return
                if path.startswith("/v1/models/"):
                    if scope["method"] != "GET":
                        raise _MethodNotAllowed(f"{path} accepts GET, not {scope['method']}")
                    scope["routeguard.principal"] = self._gate.authenticate(scope)
                    await self._model(scope, path[len("/v1/models/") :], send)
                    return
                raise _NotFound(f"no route for {scope['method']} {path}")
            method, handler = route
            if scope["method"] != method:
                raise _MethodNotAllowed(f"{path} accepts {method}, not {scope['method']}")
            if key not in _OPEN_PATHS and key != "/metrics":  # /metrics: its own check
                scope["routeguard.principal"] = self._gate.authenticate(scope)
            await handler(scope, receive, send)
        except (CoreInputError, CoreNotFound):  # a kernel refused: our bug, not the caller's
            log.exception("native core error serving %s", path)
            await _fail(send, RouteguardError("internal error"), anthropic, trace, progress, path)
        except RouteguardError as exc:
            if isinstance(exc, BudgetExceeded):  # the status and code the config asks for
                settings = self.gateway.budget.settings
                exc.status_code = settings.exceeded_status_code
                exc.code = settings.exceeded_error_code
            await _fail(send, exc, anthropic, trace, progress, path)
        except OSError as exc:
            if not progress.lost:
                log.exception("unexpected error serving %s", path)
                await _fail(
                    send, RouteguardError("internal error"), anthropic, trace, progress, path
                )
            else:  # as our own server's send does once the client is gone: nothing to answer
                log.info("client of %s gone while its answer was written (%s)", path, exc)
                _client_closed(trace)
        except Exception:
            log.exception("unexpected error serving %s", path)
            await _fail(send, RouteguardError("internal error"), anthropic, trace, progress, path)
        finally:
            if trace.request is not None:
                self.spend.record_trace(trace)  # its row built off the event loop
                if self.request_log is not None:
                    self.request_log.record_trace(trace, path)  # built off the event loop
            if trace.result is not None and trace.result.shadow is not None:
                self.gateway.start_shadow(trace.result)  # the answer is out: check it now
            if self.metrics is not None and (
                path.rstrip("/") in _CHAT_PATHS or trace.operation == "embeddings"
            ):
                self.metrics.record(trace, path=path)
            if span is not None and self.tracing is not None:
                self.tracing.end(span, trace, chat=trace.request is not None)

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = self._gate.authenticate(scope)
        if self._master is None:
            raise PermissionDenied("the admin API needs a master key (server.master_key)")
        # A team's or organization's admin may manage it (checked once the body is read).
        team_admin = principal.key is not None and litellm_entities.delegated_path(scope["path"])
        if not team_admin:
            principal.require_admin()
        method = scope["method"]
        if scope["path"].rstrip("/") == "/admin/reload" and method == "POST":
            await _send_json(send, *await self.lifecycle.reload_request(), [])
            return
        if scope["path"].rstrip("/") in cache_admin.PATHS:
            await self._cache_admin(scope, receive, send)
            return
        if scope["path"].rstrip("/") == "/admin/budgets" and method == "GET":
            await _send_json(send, 200, await _budgets(self.gateway), [])
            return
        if scope["path"].rstrip("/") == "/admin/spend" and method == "GET":
            await _send_json(send, 200, await _spend(self.spend, scope), [])
            return
        if scope["path"].rstrip("/") == "/admin/cache/stats" and method == "GET":
            cache = self.gateway.cache
            stats = cache.stats() if cache is not None else {"object": "cache.stats", "routes": {}}
            await _send_json(send, 200, stats, [])
            return
        body = None
        if method in ("POST", "PATCH") or (
            method == "DELETE" and scope["path"].rstrip("/") in litellm_entities.PATHS
        ):
            body = await self._read_json(scope, receive, allow_empty=True)
        query = scope.get("query_string", b"").decode("latin-1")
        if team_admin:
            assert principal.key is not None
            litellm_entities.require_delegated(
                self.gateway, principal.key, scope["path"], body, query
            )
        if scope["path"].rstrip("/") in litellm_entities.PATHS:  # LiteLLM teams, users...
            out = await litellm_entities.handle(
                self.gateway, method, scope["path"].rstrip("/"), body, query
            )
            await _send_json(send, *out, [])
            return
        if scope["path"].startswith("/admin/approvals"):  # held by any worker
            status, out = await asyncio.to_thread(
                approvals_api, self.approvals, self.lifecycle.approval_queues(), method,
                scope["path"], body,
            )  # fmt: skip
            await _send_json(send, status, out, [])
            return
        status, out = admin.handle(
            self.gateway.keys,
            method,
            scope["path"],
            body,
            self.lifecycle.approval_queues(),
            query=scope.get("query_string", b"").decode("latin-1"),
        )
        layer = self.gateway.budget
        if layer is not None and isinstance(out, dict) and isinstance(out.get("key_id"), str):
            # A key with limits gets its budget account now, and shows its spend.
            account = layer.key_account(self.gateway.keys.get(out["key_id"]))
            if account is not None:
                out["spend"] = float(micros_to_usd(await layer.backend.spent(account)))
                out["reserved"] = float(micros_to_usd(await layer.backend.reserved(account)))
        await _send_json(send, status, out, [])

    async def _cache_admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``DELETE /admin/cache`` and ``POST /admin/cache/correct`` (``cache_admin``)."""
        path, method = scope["path"].rstrip("/"), scope["method"]
        if method != cache_admin.allowed_method(path):
            raise _MethodNotAllowed(
                f"{path} accepts {cache_admin.allowed_method(path)}, not {method}"
            )
        body = await self._read_json(scope, receive, allow_empty=True)
        if path == "/admin/cache":
            out = await cache_admin.delete(self.gateway, scope.get("query_string", b""), body)
        else:
            out = await cache_admin.correct(self.gateway, body)
        await _send_json(send, 200, out, [])

    async def _ui(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The dashboard: its files (no key; they hold no data), then its JSON endpoints
        for the master key or an admin virtual key (server/dashboard.py)."""
        path, method = scope["path"], scope["method"]
        if not path.startswith(dashboard.API_PREFIX):
            found = dashboard.static_file(path)
            if found is None:
                raise _NotFound(f"no route for {method} {path}")
            if method != "GET":
                raise _MethodNotAllowed(f"{path} accepts GET, not {method}")
            headers = [(b"content-type", found[1].encode()), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200,
                        "headers": headers + dashboard.SECURITY_HEADERS})  # fmt: skip
            await send({"type": "http.response.body", "body": found[0]})
            return
        principal = self._gate.authenticate(scope)
        if principal.kind == "admin":
            who = "master key"
        elif principal.key is not None and principal.key.spec.admin:
            who = f"key:{principal.key.key_id}"
        else:
            raise PermissionDenied(
                "the dashboard needs the master key (server.master_key) or an admin virtual "
                "key (created with admin: true)"
            )
        rest = path[len(dashboard.API_PREFIX) :].rstrip("/")
        no_store = [(b"cache-control", b"no-store")]
        if rest == "summary" and method == "GET":
            query = parse_qs(scope.get("query_string", b"").decode())
            window = dashboard.parse_window(query.get("window", [None])[-1])
            await _send_json(send, 200, await self.dashboard.summary(window), no_store)
            return
        verb = rest.rsplit("/", 1)[-1]
        if rest.startswith("approvals/") and verb in ("approve", "deny") and method == "POST":
            body = await self._read_json(scope, receive, allow_empty=True)
            status, out = await asyncio.to_thread(
                approvals_api, self.approvals, self.lifecycle.approval_queues(), method,
                "/admin/" + rest, body, who,
            )  # fmt: skip
            await _send_json(send, status, out, no_store)
            return
        raise _NotFound(f"no route for {method} {path}")

    def _body_limit(self, path: str) -> tuple[int, str]:
        """The byte limit on ``path``'s request body, and the setting that sets it."""
        known = self._route_limits.get(path)
        return known if known is not None else self._limit_of(path)

    def _limit_of(self, path: str) -> tuple[int, str]:
        """:meth:`_body_limit`, worked out."""
        key = "/admin" if is_admin_path(path) else _ENDPOINT_ALIASES.get(path, path)
        limit = self._body_limits.get(key)
        if limit is None:
            return self._max_body, "server.max_body_bytes"
        return limit, f"server.max_body_bytes_per_endpoint['{key}']"

    async def _read_json(
        self, scope: Scope, receive: Receive, *, allow_empty: bool = False
    ) -> dict[str, Any]:
        limit, setting = self._body_limit(scope["path"].rstrip("/"))
        declared = _content_length(scope)
        if declared is not None and declared > _DRAIN_LIMIT * limit:
            raise RequestTooLarge(  # refused unread: the connection will be dropped
                f"request body is {declared} bytes, over the {limit}-byte limit ({setting})"
            )
        parts: list[bytes] = []
        ready = scope.get("extensions", {}).get(BODY_READY)
        if ready is not None and ready():  # all here: no read can wait, no deadline to arm
            size = await _read_body(receive, parts, limit)
        else:
            try:
                async with asyncio.timeout(self._body_timeout):
                    size = await _read_body(receive, parts, limit)
            except TimeoutError:
                raise RequestTimeout(
                    f"request body not received within {self._body_timeout:g} s "
                    "(server.body_timeout)"
                ) from None
        if size > limit:
            raise RequestTooLarge(
                f"request body is {size} bytes, over the {limit}-byte limit ({setting})"
            )
        raw = b"".join(parts)
        if allow_empty and not raw.strip():
            return {}
        return decode_json(raw)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await self._read_json(scope, receive)
        result = await self._serve_chat(scope, request)
        if result.stream is None:
            try:
                await _send_json(send, 200, result.response, _served(result))
            finally:
                self.gateway.finish(result)  # charged once the answer is out
            return
        stream = result.stream

        async def frames() -> AsyncIterator[bytes]:
            async for chunk in stream:
                yield b"data: " + _enc.encode(chunk) + b"\n\n"
            yield b"data: [DONE]\n\n"

        limit = self.gateway.config.router.max_stream_duration
        await _send_sse(scope, receive, send, result, frames(), anthropic=False, max_s=limit)

    async def _messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        from routeguard.server import messages as m

        body = await self._read_json(scope, receive)
        model = str(body.get("model", ""))
        await self._translated(
            scope, receive, send, m.anthropic_request_to_openai(body),
            lambda response: m.openai_response_to_anthropic(response, model),
            lambda: m.AnthropicStreamEncoder(model), anthropic=True,
        )  # fmt: skip

    async def _responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        call, native = responses_api.for_gateway(await self._read_json(scope, receive))
        await self._translated(
            scope, receive, send, call.chat,
            lambda response: responses_api.chat_to_response(response, call.echo),
            lambda: ResponsesStreamEncoder(call.echo), anthropic=False, native=native,
        )  # fmt: skip

    async def _completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        from routeguard.server import completions as c

        body = await self._read_json(scope, receive)
        chat = c.completion_request_to_chat(body)  # checks the body first (a 400 says why)
        model = str(chat.get("model", ""))
        await self._translated(
            scope, receive, send, chat,
            lambda response: c.chat_to_completion(response, model),
            lambda: c.CompletionStreamEncoder(model), anthropic=False,
        )  # fmt: skip

    async def _translated(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: dict[str, Any],
        to_body: Callable[[dict[str, Any]], Any],
        new_encoder: Callable[[], StreamEncoder],
        *,
        anthropic: bool,
        native: NativeRequest | None = None,
    ) -> None:
        """Serve an endpoint translated to chat: ``request`` (already chat-shaped) through
        the gateway, the answer out through ``to_body``, or a stream through an encoder
        (``start`` and ``fail`` when it has them: a broken stream ends in-band). With
        ``native``, an answer the upstream gave in that API (``result.wire``) goes out as is."""
        result = await self._serve_chat(scope, request, native)
        try:
            if result.wire != "chat":
                await self._passed_through(scope, receive, send, result)
                return
            if result.stream is None:
                assert result.response is not None
                await _send_json(send, 200, to_body(result.response), _served(result))
                return
        finally:
            self.gateway.finish(result)  # an answer is charged once it is out
        stream, encoder = result.stream, new_encoder()
        start, fail = getattr(encoder, "start", None), getattr(encoder, "fail", None)

        async def frames() -> AsyncIterator[bytes]:
            if start is not None:
                yield start()
            try:
                async for chunk in stream:
                    data = encoder.feed(chunk)
                    if data:
                        yield data
            except RouteguardError as exc:
                if fail is None:
                    raise
                yield fail(exc)
                return
            yield encoder.finish()

        limit = self.gateway.config.router.max_stream_duration
        await _send_sse(scope, receive, send, result, frames(), anthropic=anthropic, max_s=limit)

    async def _passed_through(
        self, scope: Scope, receive: Receive, send: Send, result: ChatResult
    ) -> None:
        """An answer passed through in its own API (Responses): the body, or the events
        relayed as they come (a break after the start ends in ``response.failed``)."""
        if result.stream is None:
            await _send_json(send, 200, result.response, _served(result))
            return
        stream = result.stream

        async def frames() -> AsyncIterator[bytes]:
            head: Any = None
            seq = 0
            try:
                async for event in stream:
                    if head is None and event.get("type") == "response.created":
                        head = event.get("response")
                    n = event.get("sequence_number")
                    seq = n + 1 if isinstance(n, int) else seq + 1
                    kind = str(event.get("type", "message")).encode()
                    yield b"event: " + kind + b"\ndata: " + _enc.encode(event) + b"\n\n"
            except RouteguardError as exc:
                yield relay_failed(head, exc, result.deployment.model, seq)

        limit = self.gateway.config.router.max_stream_duration
        await _send_sse(scope, receive, send, result, frames(), anthropic=False, max_s=limit)

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        from routeguard.server import token_count

        body = await self._read_json(scope, receive)
        principal: Principal = scope["routeguard.principal"]
        out, headers = await token_count.count(self.gateway, principal, scope["headers"], body)
        await _send_json(send, 200, out, headers)

    async def _serve_chat(
        self, scope: Scope, request: dict[str, Any], native: NativeRequest | None = None
    ) -> ChatResult:
        principal: Principal = scope["routeguard.principal"]
        trace: Trace = scope["routeguard.trace"]
        trace.request, trace.principal = request, principal
        sent = client_headers.from_headers(scope["headers"])
        if sent is not None:  # for the Claude adapters of this request (its task and children)
            client_headers.ANTHROPIC.set(sent)
        # The key's model scope is checked by the gateway, on what is served.
        result = await self.gateway.chat_result(
            request,
            tenant=principal.tenant,
            use_cache=_cache_allowed(scope),
            accounts=principal.accounts,
            metadata=CallerMetadata(scope, principal),
            key=principal.key,
            request_id=trace.request_id,
            defer_shadow=True,
            defer_settle=True,  # each caller charges it once the answer is sent (finish)
            native=native,
        )
        trace.result = result
        return result

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_json(scope, receive)
        principal: Principal = scope["routeguard.principal"]
        verdict = parse_feedback(body)
        await self.gateway.recall(verdict.request_id)  # a hit another instance served
        key = principal.key  # None for the master key (any request) and an open proxy
        if isinstance(self.gateway.feedback_store, SqliteFeedback):
            entry = await asyncio.to_thread(self.gateway.record_feedback, verdict, key)
        else:
            entry = self.gateway.record_feedback(verdict, key)
        out = {"object": "feedback", "recorded": True,
               **{k: v for k, v in entry.items() if k != "key_id"}}  # fmt: skip
        await _send_json(send, 200, out, [])

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await self._read_json(scope, receive)
        principal: Principal = scope["routeguard.principal"]
        trace: Trace = scope["routeguard.trace"]
        trace.request, trace.principal, trace.operation = request, principal, "embeddings"
        # Scoped, rate-limited, held and settled by the gateway, like chat.
        trace.result = result = await self.gateway.embeddings_result(
            request, accounts=principal.accounts, key=principal.key
        )
        await _send_json(send, 200, result.response, [])

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal: Principal = scope["routeguard.principal"]
        data = [_model_card(a) for a in self.gateway.models() if principal.key is None
                or principal.key.allows(a)]  # fmt: skip
        await _send_json(send, 200, {"object": "list", "data": data}, [])

    async def _model(self, scope: Scope, name: str, send: Send) -> None:
        principal: Principal = scope["routeguard.principal"]
        if not self.gateway.serves(name) or (
            principal.key is not None and not principal.key.allows(name)
        ):  # the same answer either way: a key cannot probe for model names
            raise ModelNotFound(f"model '{name}' is not configured", param="model")
        await _send_json(send, 200, _model_card(name), [])

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, {"status": "ok"}, [])

    async def _readiness(self, scope: Scope, receive: Receive, send: Send) -> None:
        checks = await readiness(self.gateway)
        if self.lifecycle.draining:
            checks["serving"] = "draining"
        failing = sorted(name for name, state in checks.items() if state != "ok")
        body: dict[str, Any] = {"status": "not ready" if failing else "ready", "checks": checks}
        if failing:
            body["not_ready"] = failing
        await _send_json(send, 503 if failing else 200, body, [])

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.metrics is not None
        if not self._metrics_public and self._gate.required:
            principal = self._gate.authenticate(scope)
            if principal.kind != "admin":
                raise PermissionDenied(
                    "/metrics needs the master key (or set observability.metrics_public: true)"
                )
        body = await self.metrics.scrape()
        headers = [(b"content-type", CONTENT_TYPE.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, parts: list[bytes], limit: int) -> int:
    """Read the request body into ``parts`` (up to ``limit`` bytes kept); returns its size."""
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise InvalidRequest("client disconnected before sending the body")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif size > _DRAIN_LIMIT * limit:
            return size  # not worth reading on: answer now, the connection will be dropped
        # Past the limit we keep reading (and discarding) so that the client, still
        # sending, gets the 413 instead of a connection reset.
        if not msg.get("more_body"):
            return size


def _client_closed(trace: Trace) -> None:
    """Mark ``trace`` as a request whose client left before its answer was complete (499),
    unless it already failed for another reason."""
    if trace.error is None:
        trace.error = ClientClosed("the client closed the connection before the answer ended")


def create_app(gateway: Gateway, *, request_log: str | None = None) -> ProxyApp:
    """The proxy as an ASGI app (mountable in Starlette/FastAPI); ``request_log`` (a path)
    overrides ``observability.request_log``."""
    return ProxyApp(gateway, request_log=request_log)


def _model_card(alias: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "routeguard"}


_SECRET_HEADERS = frozenset({b"authorization", b"x-api-key", b"cookie", b"proxy-authorization"})


class CallerMetadata(Mapping[str, Any]):
    """What routing rules and tool-call policies may match on (:func:`_route_metadata`),
    worked out on first read: most routes read none of it."""

    __slots__ = ("_principal", "_read", "_scope")

    def __init__(self, scope: Scope, principal: Principal) -> None:
        self._scope = scope
        self._principal = principal
        self._read: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        read = self._read
        if read is None:
            read = self._read = _route_metadata(self._scope, self._principal)
        return read

    def __getitem__(self, name: str) -> Any:
        return self._data()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


def _route_metadata(scope: Scope, principal: Principal) -> dict[str, Any]:
    """What routing rules may match on: the caller's identity and the (non-secret) headers."""
    headers = {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in scope["headers"]
        if k not in _SECRET_HEADERS
    }
    meta: dict[str, Any] = {"headers": headers}
    if principal.key is not None:
        s = principal.key.spec
        meta.update(key=principal.key.key_id, user=s.user, team=s.team, org=s.org)
        meta.update({k: v for k, v in s.metadata.items() if k not in meta})
    return meta


def _cache_allowed(scope: Scope) -> bool:
    """False when the client sent ``Cache-Control: no-cache`` or ``no-store``."""
    for name, value in scope["headers"]:
        if name == b"cache-control" and (b"no-cache" in value or b"no-store" in value):
            return False
    return True


def _served(result: ChatResult) -> list[tuple[bytes, bytes]]:
    extra = [(b"x-routeguard-route", result.route.encode())] if result.route else []
    if result.dropped:
        extra.append((b"x-routeguard-dropped-params", ",".join(result.dropped).encode()))
    return [
        *extra,
        (b"x-routeguard-cache", result.cache.encode()),
        (b"x-routeguard-model", result.alias.encode()),
        (b"x-routeguard-deployment", result.deployment.id.encode()),
        (b"x-routeguard-attempts", str(result.attempts).encode()),
        (b"x-routeguard-overhead-ms", f"{result.overhead_ms():.3f}".encode()),
    ]


async def _send_json(send: Send, status: int, body: Any, extra: list[tuple[bytes, bytes]]) -> None:
    data = _enc.encode(body)
    headers = [*_JSON, (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _fail(
    send: Send,
    exc: RouteguardError,
    anthropic: bool,
    trace: Trace,
    progress: Progress,
    path: str,
) -> None:
    """Answer ``exc``, unless a response already started: its head is out and another
    cannot follow (the host ends the connection, as it must)."""
    trace.error = exc
    if progress.started:
        log.warning("%s failed after its response started (%s): cut short", path, exc)
        return
    try:
        await _send_error(send, exc, anthropic)
    except OSError as lost:  # the client left before its answer: nothing more to do
        log.info("client of %s gone before its error answer (%s)", path, lost)


async def _send_error(send: Send, exc: RouteguardError, anthropic: bool) -> None:
    if anthropic:
        from routeguard.server.messages import error_to_anthropic

        body = error_to_anthropic(exc)
    else:
        body = exc.to_openai()
    extra = []
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float):
        extra.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    if getattr(exc, "close_connection", False):
        extra.append((b"connection", b"close"))
    await _send_json(send, exc.status_code, body, extra)


async def _spend(records: SpendRecords, scope: Scope) -> dict[str, Any]:
    """``GET /admin/spend?group_by=model&team=x&start=...&end=...``: summed request spend."""
    query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    group_by = query.pop("group_by", "model")
    limit = query.pop("limit", "1000")
    bounds: dict[str, float | None] = {}
    for name in ("start", "end"):
        raw = query.pop(name, None)
        bounds[name] = None if raw is None else _timestamp(raw, name)
    if not limit.isdigit() or not 0 < int(limit) <= 100_000:
        raise InvalidRequest("limit: expected an integer from 1 to 100000", param="limit")
    records.flush(1.0)  # include the requests just served
    try:
        rows = await asyncio.to_thread(
            records.sums, group_by=group_by, where=query, limit=int(limit), **bounds
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return {"object": "list", "group_by": group_by, "data": rows}


def _timestamp(raw: str, name: str) -> float:
    """Unix seconds, or an ISO 8601 date/time (UTC when it names no zone)."""
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            f"{name}: expected unix seconds or an ISO 8601 date/time, got {raw!r}", param=name
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


async def _budgets(gateway: Gateway) -> dict[str, Any]:
    """Spend, holds and limits of every budget account, in dollars."""
    layer = gateway.budget
    rows = []
    for acc in list(layer.backend.accounts):  # a request may add or drop one meanwhile
        spent, reserved = await layer.usage(acc.name)
        rows.append(
            {
                "name": acc.name,
                "parent": acc.parent,
                "period": acc.period.describe(),
                "spent": float(micros_to_usd(spent)),
                "reserved": float(micros_to_usd(reserved)),
                "limit": None if acc.limit is None else float(micros_to_usd(acc.limit)),
            }
        )
    return {"object": "list", "data": rows}


async def _send_sse(
    scope: Scope,
    receive: Receive,
    send: Send,
    result: ChatResult,
    frames: AsyncIterator[bytes],
    *,
    anthropic: bool,
    max_s: float | None = None,
) -> None:
    """Stream SSE frames; stop pulling from upstream as soon as the client goes away, or
    once the stream is ``max_s`` seconds old (plus a second to deliver the cut's error) even
    if the client stalls. The stream is closed on every path (its budget hold settles even
    if it was never read)."""
    try:
        await _pump_sse(scope, receive, send, result, frames, anthropic=anthropic, max_s=max_s)
    finally:
        for it in (frames, result.stream):
            close = getattr(it, "aclose", None)
            if close is not None:
                await close()


async def _pump_sse(
    scope: Scope,
    receive: Receive,
    send: Send,
    result: ChatResult,
    frames: AsyncIterator[bytes],
    *,
    anthropic: bool,
    max_s: float | None,
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _SSE + _served(result)})

    async def pump() -> None:
        try:
            async for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        except RouteguardError as exc:
            await send_error(exc)
        await send({"type": "http.response.body", "body": b""})

    async def send_error(exc: RouteguardError) -> None:
        trace = scope.get("routeguard.trace")
        if isinstance(trace, Trace):
            trace.error = exc
        # Headers are gone: the error travels in-band, as the providers do it.
        if anthropic:
            from routeguard.server.messages import error_to_anthropic

            frame = b"event: error\ndata: " + _enc.encode(error_to_anthropic(exc)) + b"\n\n"
        else:
            frame = b"data: " + _enc.encode(exc.to_openai()) + b"\n\n"
        await send({"type": "http.response.body", "body": frame, "more_body": True})

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    # The pump runs in this task. Whichever comes first cancels it, once, saying why: the
    # client leaving (a task reading for the disconnect), the drain deadline's cut, or the
    # stream's time running out (a timer). A cancel from elsewhere is passed on, and while
    # one unwinds the stream (its cleanup may wait: closing upstream, settling) no stop
    # cancels it again.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task(loop)
    assert task is not None
    cancelling = task.cancelling()
    why: str | None = None  # the stop that cancelled this task, once
    over = False  # the pump has returned: nothing cancels this task any more

    def stop(reason: str) -> None:
        nonlocal why
        if why is None and not over and task.cancelling() <= cancelling:
            why = reason
            task.cancel()

    def left(watcher: asyncio.Task[None]) -> None:
        if not watcher.cancelled():
            stop("client")

    watching = loop.create_task(watch())
    watching.add_done_callback(left)
    age = time.perf_counter() - result.started
    timer = None if max_s is None else loop.call_later(max(0.0, max_s + 1.0 - age), stop, "time")
    cut: Cut | None = scope.get("routeguard.cut")
    forget = cut.when_set(functools.partial(stop, "cut")) if cut is not None else None
    try:
        await pump()
    except asyncio.CancelledError:
        if why is None or task.uncancel() > cancelling:
            raise
    except Exception as exc:  # after the head: nothing to answer with but the log
        log.error("stream failed after it started: %s", type(exc).__name__)
    finally:
        over = True
        watching.remove_done_callback(left)
        watching.cancel()
        if timer is not None:
            timer.cancel()
        if forget is not None:
            forget()
    if why == "client":  # the client left mid-stream
        trace = scope.get("routeguard.trace")
        if isinstance(trace, Trace):
            _client_closed(trace)
    elif why == "cut":
        await send_error(Draining("the proxy is shutting down: the stream was cut after "
                                  "server.drain_seconds"))  # fmt: skip
        await send({"type": "http.response.body", "body": b""})
