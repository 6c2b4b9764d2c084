"""OpenTelemetry traces of the proxy's requests, exported over OTLP (the optional
``routeguard[otel]`` extra; the proxy imports this module only when ``observability.tracing``
is configured).

Per request the proxy opens a SERVER span (:meth:`Tracing.begin`), a child of the caller's
``traceparent`` when it sent one, and closes it once the response has left -- a stream's
when its last byte has (:meth:`Tracing.end`), with the request's GenAI and routeguard
attributes read from its :class:`~routeguard.observe.requestlog.Trace`. Under it, through the
hooks of :mod:`routeguard.observe.spans`: a CLIENT span per upstream attempt, current while
the attempt runs so the upstream request carries its ``traceparent`` (a successful stream
attempt's span stays open until the stream ends), and an INTERNAL ``execute_tool {name}``
span per enforcement decision. Spans are named ``{gen_ai.operation.name} {model}`` and
follow the GenAI semantic conventions. Prompts and answers go into spans only with
``observability.log_content``, scrubbed like the request log's. The spans are routeguard's own
light ones (:mod:`routeguard.server.span_record`), sampled once per request; they leave
through a batch processor per destination (a thread of the SDK's), never on the event loop.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from routeguard import scrub
from routeguard._version import __version__
from routeguard.config.settings import OtlpTarget, TracingConfig
from routeguard.deployment import Deployment
from routeguard.errors import RouteguardError
from routeguard.handoff import pause
from routeguard.observe import spans
from routeguard.observe.requestlog import Trace, request_summary, response_summary
from routeguard.server import otlp_wire
from routeguard.server.span_record import RecordedSpan, SpanRecorder

log = logging.getLogger("routeguard.server.tracing")

# gen_ai.provider.name well-known values, from our deployment types.
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
# OpenAI request fields -> GenAI request attributes (numbers and flags only, never text).
_REQUEST_ATTRS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
    "stream": "gen_ai.request.stream",
}
_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})
_MAX_MODEL = 128  # a client's model name is cut to this in attributes
_json = msgspec.json.Encoder()


@dataclass(slots=True)
class ServerSpan:
    """One request's SERVER span and what its children leave for it to close."""

    span: RecordedSpan
    token: Any  # the OpenTelemetry context token (the span made current)
    operation: str  # gen_ai.operation.name of its upstream calls
    baggage: Any = None  # the caller's context when it sent baggage (propagated upstream)
    status: int = 0  # the HTTP status sent (0: none yet)
    pending: Span | None = None  # a stream attempt's CLIENT span, ended with the stream
    response_id: str | None = None  # a stream's, from its chunks
    response_model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)


_current: ContextVar[ServerSpan | None] = ContextVar("routeguard_server_span", default=None)
# The upstream attempt running in this task (its traceparent goes on the upstream request).
_attempt: ContextVar[RecordedSpan | None] = ContextVar("routeguard_attempt_span", default=None)


@dataclass(slots=True)
class _Attempt:
    span: RecordedSpan
    token: Any  # of _attempt
    started: float  # perf_counter


class Tracing:
    """The proxy's tracer: a TracerProvider of its own (the process's global one is left
    alone), one batch processor per OTLP destination, and the hooks' implementation."""

    def __init__(
        self,
        config: TracingConfig,
        *,
        log_content: bool = False,
        aliases: Iterable[str] = (),
        exporters: Sequence[SpanExporter] | None = None,
    ) -> None:
        # Span names stay low in cardinality: a model name a client made up is left out.
        self.aliases = frozenset(aliases)
        name = config.service_name or os.environ.get("OTEL_SERVICE_NAME") or "routeguard"
        # Each process (each worker of serve --workers N) is its own instance; a
        # service.instance.id from OTEL_RESOURCE_ATTRIBUTES wins over ours.
        instance = Resource({"service.instance.id": uuid.uuid4().hex, "process.pid": os.getpid()})
        resource = instance.merge(
            Resource.create({"service.name": name, "service.version": __version__})
        )
        sampler = None
        if config.sample_ratio is not None:
            sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        processors = []
        for exporter in exporters if exporters is not None else map(_exporter, config.targets):
            processors.append(BatchSpanProcessor(exporter))
            self.provider.add_span_processor(processors[-1])  # flushed at its shutdown
        self._spans = SpanRecorder(
            self.provider, InstrumentationScope("routeguard", __version__), processors
        )
        self.log_content = log_content
        self._stages = config.stages
        self._attempts: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}

    def install(self) -> None:
        """Make this the recorder the request path reports to."""
        spans.install(self)

    def shutdown(self) -> None:
        """Stop reporting, export what is queued and stop the exporters (blocking)."""
        if spans.recorder is self:
            spans.install(None)
        self.provider.shutdown()

    # ------------------------------------------------------------------ the server span

    def begin(
        self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]], route: bool
    ) -> ServerSpan:
        """Open the SERVER span of a request and make it current (until :meth:`end`);
        ``route``: ``path`` is one of the proxy's routes (else the name is the method only)."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _PROPAGATED}
        parent = propagate.extract(carrier) if carrier else None
        operation = "embeddings" if path.rstrip("/").endswith("embeddings") else "chat"
        span = self._spans.start(
            f"{method} {path}" if route else method,
            SpanKind.SERVER,
            {"http.request.method": method, "url.path": path},
            parent,
        )
        # Current in OpenTelemetry's context too, for instrumentation of the embedding app.
        token = otel_context.attach(otel_trace.set_span_in_context(span, parent))
        state = ServerSpan(span, token, operation, parent if "baggage" in carrier else None)
        _current.set(state)
        return state

    def end(self, state: ServerSpan, trace: Trace, chat: bool) -> None:
        """Close the request's span (and a stream's open CLIENT span) with what it served;
        ``chat``: the request went through the chat pipeline."""
        span = state.span
        try:
            if span.is_recording():
                # The attributes are built by the export thread, from the finished request.
                span.defer(lambda: self._end_attributes(state, trace, chat))
                err = trace.error
                if err is not None and err.status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR, scrub.for_caller(err.message)))
                if chat and trace.request is not None:
                    alias = trace.request.get("model")
                    known = isinstance(alias, str) and alias in self.aliases
                    span.update_name(f"{state.operation} {alias}" if known else state.operation)
            pending = state.pending
            if pending is not None:
                state.pending = None
                self._end_stream_attempt(pending, state, trace)
            span.end()
        finally:
            otel_context.detach(state.token)
            _current.set(None)

    @property
    def stages(self) -> bool:
        """Whether the gateway's stages get INTERNAL spans (``tracing.stages``)."""
        return self._stages

    def stage_begin(self, name: str) -> Span:
        """An INTERNAL span for one stage of the current request, child of its span."""
        return self._child(name, SpanKind.INTERNAL)

    def _child(
        self,
        name: str,
        kind: SpanKind,
        attrs: Mapping[str, Any] | None = None,
        start_ns: int | None = None,
    ) -> RecordedSpan:
        """A span under the current request's (a trace of its own outside a request)."""
        state = _current.get()
        if state is None:
            return self._spans.start(name, kind, dict(attrs or {}), None, start_ns)
        return self._spans.child(state.span, name, kind, attrs, start_ns)

    def stage_end(
        self, handle: Any, attributes: Mapping[str, Any], error: BaseException | None
    ) -> None:
        """Close a stage's span with what it decided, or the error it raised."""
        span: Span = handle
        if span.is_recording():
            span.set_attributes(attributes)
            if error is not None:
                span.set_attribute(
                    "error.type", getattr(error, "code", None) or type(error).__name__
                )
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _end_attributes(self, state: ServerSpan, trace: Trace, chat: bool) -> dict[str, Any]:
        """The attributes a request's span gets once it is over."""
        attrs = self._server_attributes(state, trace) if chat else {}
        if state.status:
            attrs["http.response.status_code"] = state.status
        if trace.error is not None:
            attrs["error.type"] = _error_type(trace.error)
        return attrs

    def _server_attributes(self, state: ServerSpan, trace: Trace) -> dict[str, Any]:
        request = trace.request or {}
        attrs: dict[str, Any] = {"gen_ai.operation.name": state.operation,
                                 "routeguard.request.id": trace.request_id}  # fmt: skip
        alias = request.get("model")
        if isinstance(alias, str):
            attrs["gen_ai.request.model"] = alias[:_MAX_MODEL]
        _request_attributes(request, attrs)
        key = getattr(trace.principal, "key", None)
        if key is not None:
            attrs["routeguard.key.id"] = key.key_id
            for name in ("team", "org"):
                value = getattr(key.spec, name, None)
                if isinstance(value, str):
                    attrs[f"routeguard.{name}"] = value
        accounts = [a for a in getattr(trace.principal, "accounts", ()) or () if a is not None]
        if accounts:
            attrs["routeguard.budget.account"] = accounts
        r = trace.result
        if r is not None:
            dep = r.deployment
            attrs["routeguard.alias"] = r.alias
            if r.cache != "hit":  # a hit's deployment only stands for the route
                attrs["gen_ai.provider.name"] = PROVIDER_NAMES.get(dep.provider, dep.provider)
                attrs["routeguard.deployment"] = dep.id
            attrs["routeguard.attempts"] = r.attempts
            attrs["routeguard.cache.status"] = r.cache
            if r.cache_score is not None:
                attrs["routeguard.cache.score"] = float(r.cache_score)
            if r.cache_tier is not None:
                attrs["routeguard.cache.tier"] = r.cache_tier
            if r.route is not None:
                attrs["routeguard.route.reason"] = r.route
            attrs["routeguard.cost_usd"] = float(r.cost)
            attrs["routeguard.overhead_ms"] = round(r.overhead_ms(), 3)
            # Tokens go on the CLIENT spans as gen_ai.usage.*: backends that sum usage over
            # a trace's GenAI spans (Langfuse, Datadog LLM Observability) would count them
            # twice if this span carried them too; here they are routeguard's.
            usage = r.usage
            for ours, theirs in (("input", "prompt_tokens"), ("output", "completion_tokens")):
                if isinstance(usage.get(theirs), int):
                    attrs[f"routeguard.usage.{ours}_tokens"] = usage[theirs]
            _response_attributes(r.response, state, attrs)
            if self.log_content and r.response is not None:
                choices = response_summary(r.response, True).get("choices")
                if choices is not None:
                    attrs["gen_ai.output.messages"] = _json.encode(choices).decode()
        if request.get("stream") and trace.first_byte is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = trace.first_byte - trace.started
        if self.log_content and "messages" in request:
            messages = request_summary(request, True).get("messages")
            attrs["gen_ai.input.messages"] = _json.encode(messages).decode()
        return attrs

    def _end_stream_attempt(self, span: Span, state: ServerSpan, trace: Trace) -> None:
        """A stream's CLIENT span ends with the stream, with what its chunks said."""
        if span.is_recording():
            attrs: dict[str, Any] = {}
            r = trace.result
            if r is not None:
                _usage_attributes(r.usage, attrs)
            _response_attributes(None, state, attrs)
            err = trace.error
            if err is not None:
                attrs["error.type"] = _error_type(err)
                span.set_status(Status(StatusCode.ERROR, scrub.for_caller(err.message)))
            span.set_attributes(attrs)
        span.end()

    # ------------------------------------------------------------------ the hooks

    def attempt_begin(self, alias: str, dep: Deployment) -> _Attempt:
        """Open an attempt's CLIENT span and make it current (its traceparent goes upstream)."""
        state = _current.get()
        operation = state.operation if state is not None else "chat"
        key = (operation, alias, dep.id)
        made = self._attempts.get(key)
        if made is None:  # a deployment's span name and attributes, made once
            made = self._attempts[key] = _attempt_start(operation, alias, dep)
            if len(self._attempts) > 4096:
                self._attempts.clear()
        span = self._child(made[0], SpanKind.CLIENT, made[1])
        return _Attempt(span, _attempt.set(span), time.perf_counter())

    def attempt_end(
        self, handle: _Attempt, error: BaseException | None, stream: bool, value: Any
    ) -> None:
        """Close an attempt's span: failed (``error.type``), answered, or a stream's first
        chunk in (its span then stays open until the stream ends)."""
        _attempt.reset(handle.token)
        span = handle.span
        if error is not None:
            if span.is_recording():
                kind = _error_type(error) if isinstance(error, RouteguardError) else None
                span.set_attribute("error.type", kind or type(error).__name__)
                text = error.message if isinstance(error, RouteguardError) else ""
                span.set_status(Status(StatusCode.ERROR, scrub.for_caller(text)))
            span.end()
            return
        if stream:
            if span.is_recording():
                span.set_attribute("gen_ai.response.time_to_first_chunk",
                                   time.perf_counter() - handle.started)  # fmt: skip
            state = _current.get()
            if state is not None and state.pending is None:
                state.pending = span
                return
        elif span.is_recording() and isinstance(value, Mapping):
            attrs: dict[str, Any] = {}
            usage = value.get("usage")
            if isinstance(usage, Mapping):
                _usage_attributes(usage, attrs)
            _response_attributes(value, None, attrs)
            span.set_attributes(attrs)
        span.end()

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Write the current span's context into outgoing ``headers``."""
        state = _current.get()
        span = _attempt.get() or (state.span if state is not None else None)
        if span is not None:
            self._spans.inject(span, state.baggage if state is not None else None, headers)

    def tool_decision(self, function: Mapping[str, Any], verdict: Any, started_ns: int) -> None:
        """One ``execute_tool {name}`` span for an enforcement decision, under the request."""
        name = function.get("name")
        span = self._child(f"execute_tool {name}", SpanKind.INTERNAL, None, started_ns)
        if span.is_recording():
            decision = getattr(verdict, "decision", None)
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": str(name),
                "gen_ai.tool.type": "function",
                "routeguard.enforce.allowed": bool(getattr(verdict, "allowed", False)),
            }
            if decision is not None:
                attrs["routeguard.enforce.effect"] = str(decision.effect)
                attrs["routeguard.enforce.rule"] = str(decision.rule_id)
            stage = getattr(verdict, "stage", None)
            if isinstance(stage, str):
                attrs["routeguard.enforce.stage"] = stage
            if self.log_content and isinstance(function.get("arguments"), str):
                attrs["gen_ai.tool.call.arguments"] = scrub.scrub(function["arguments"])
            span.set_attributes(attrs)
            if not attrs["routeguard.enforce.allowed"]:
                span.set_status(Status(StatusCode.ERROR, "denied"))
        span.end()

    def stream_chunk(self, chunk: Mapping[str, Any]) -> None:
        """Note a served stream's id, model and finish reasons as its chunks pass."""
        state = _current.get()
        if state is None:
            return
        if state.response_id is None:
            cid, model = chunk.get("id"), chunk.get("model")
            state.response_id = cid if isinstance(cid, str) else None
            state.response_model = model if isinstance(model, str) else None
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping):
                reason = choice.get("finish_reason")
                if isinstance(reason, str):
                    state.finish_reasons.append(reason)


def current() -> ServerSpan | None:
    """The SERVER span of the request being served here, if tracing is on."""
    return _current.get()


def _attempt_start(operation: str, alias: str, dep: Deployment) -> tuple[str, dict[str, Any]]:
    """An attempt span's name and starting attributes for one deployment."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER_NAMES.get(dep.provider, dep.provider),
        "gen_ai.request.model": dep.model,
        "routeguard.alias": alias,
        "routeguard.deployment": dep.id,
    }
    host, port = _server(dep.api_base)
    if host:
        attrs["server.address"] = host
        if port:
            attrs["server.port"] = port
    return f"{operation} {dep.model}", attrs


class WireExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter (endpoint, headers, TLS, compression, retries and the
    OTEL_EXPORTER_OTLP_* variables as it reads them), with each batch encoded by
    :mod:`routeguard.server.otlp_wire` instead of through protobuf message objects."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send one batch (the SDK's own path for what the wire encoder does not write)."""
        client = getattr(self, "_client", None)  # the SDK's transport; absent: its path
        if client is None or getattr(self, "_shutdown", True) or not otlp_wire.encodable(spans):
            return super().export(spans)
        try:
            data = _encoded(spans)
        except Exception as exc:  # a value the encoder does not know: the SDK's encoder
            log.debug("otlp_wire could not encode a batch (%s)", type(exc).__name__)
            return super().export(spans)
        result = client.export(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE


EXPORT_CHUNK = 8
"""Spans the exporter encodes between two pauses (~0.1 ms of its thread in a running proxy:
a request's span builds its ~25 attributes as it is encoded)."""


def _encoded(spans: Sequence[ReadableSpan]) -> bytes:
    """The export request for ``spans``, encoded :data:`EXPORT_CHUNK` at a time with a pause
    between: the exporter's thread holds the GIL while it reads spans, and a batch of 512 in
    one go kept the event loop waiting for up to the 5 ms switch interval. Concatenated, the
    parts are one request (protobuf appends repeated ``resource_spans``)."""
    parts = []
    for i in range(0, len(spans), EXPORT_CHUNK):
        if i:
            pause()
        parts.append(otlp_wire.encode(spans[i : i + EXPORT_CHUNK]))
    return b"".join(parts)


def _exporter(target: OtlpTarget) -> SpanExporter:
    headers = None if target.headers is None else {k: v.get() for k, v in target.headers}
    if target.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        insecure = None
        if target.endpoint is not None:
            insecure = target.endpoint.startswith("http://")
        return GrpcExporter(endpoint=target.endpoint, headers=headers, insecure=insecure)
    return WireExporter(endpoint=target.endpoint, headers=headers)


def _request_attributes(request: Mapping[str, Any], attrs: dict[str, Any]) -> None:
    for k, name in _REQUEST_ATTRS.items():
        v = request.get(k)
        if isinstance(v, bool | int | float) and (k == "stream") == isinstance(v, bool):
            attrs[name] = v


def _usage_attributes(usage: Mapping[str, Any], attrs: dict[str, Any]) -> None:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int):
        attrs["gen_ai.usage.input_tokens"] = prompt
    if isinstance(completion, int):
        attrs["gen_ai.usage.output_tokens"] = completion


def _response_attributes(
    response: Mapping[str, Any] | None, state: ServerSpan | None, attrs: dict[str, Any]
) -> None:
    """id, model and finish reasons: from a whole response, else from a stream's chunks."""
    reasons: Sequence[Any]
    if response is not None:
        rid, model = response.get("id"), response.get("model")
        reasons = [
            c.get("finish_reason")
            for c in response.get("choices") or ()
            if isinstance(c, Mapping) and isinstance(c.get("finish_reason"), str)
        ]
    elif state is not None:
        rid, model, reasons = state.response_id, state.response_model, state.finish_reasons
    else:
        return
    if isinstance(rid, str):
        attrs["gen_ai.response.id"] = rid
    if isinstance(model, str):
        attrs["gen_ai.response.model"] = model
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = list(reasons)


def _error_type(err: RouteguardError) -> str:
    """``error.type``: the error's code, else its class (a small fixed set, as in metrics)."""
    return err.code or type(err).__name__


def _server(api_base: str) -> tuple[str, int | None]:
    """``server.address`` and ``server.port`` of an upstream (no userinfo, path or query)."""
    parts = urlsplit(api_base)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or "", port
