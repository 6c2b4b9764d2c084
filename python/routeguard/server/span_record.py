"""The proxy's spans, recorded by routeguard and handed finished to the SDK's processors.

An SDK span checks and copies every attribute under a lock, asks the sampler, builds its
context objects and, at its end, copies itself into a ``ReadableSpan``: pure Python, most of
what tracing used to cost a request. The proxy sets only attributes whose types it knows, so
its spans (:class:`RecordedSpan`) keep a plain dict and become one ``ReadableSpan`` when they
end, which goes to the provider's span processors (the batch processors: an in-memory queue,
exported by the SDK's thread). The sampler of the provider (``sample_ratio``,
``OTEL_TRACES_SAMPLER``) decides once per request, at its SERVER span; the spans under it
follow that decision, as a parent-based sampler would. A request that is not sampled still
gets span ids (its ``traceparent`` goes upstream, flagged not sampled), but nothing is stored
or exported. A span may leave attributes to be built later (:meth:`RecordedSpan.defer`):
the request's span does, so that turning a finished request into ~25 attributes happens in
the export thread, in batches, rather than on the event loop. The W3C ``traceparent`` /
``tracestate`` are written directly when the
propagators are the default ones; others (``OTEL_PROPAGATORS``, incoming ``baggage``) go
through :mod:`opentelemetry.propagate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue

log = logging.getLogger("routeguard.server.tracing")

_UNSET = Status(StatusCode.UNSET)
_FLAG_CACHE: dict[int, TraceFlags] = {}


def _flags(value: int) -> TraceFlags:
    flags = _FLAG_CACHE.get(value)
    if flags is None:
        flags = _FLAG_CACHE[value] = TraceFlags(value)
    return flags


class RecordedSpan(otel_trace.Span):
    """A span of the proxy's: ids, name, kind, start, a dict of attributes (None when the
    request is not sampled) and a status, until :meth:`end` hands it on."""

    __slots__ = (
        *("_attrs", "_context", "_deferred", "_ended", "_events", "_flags", "_kind", "_name"),
        *("_parent", "_sink", "_span_id", "_start", "_state", "_status", "_trace_id"),
    )

    def __init__(
        self,
        sink: SpanRecorder | None,
        name: str,
        kind: SpanKind,
        trace_id: int,
        span_id: int,
        flags: int,
        state: Any,
        parent: SpanContext | None,
        attributes: dict[str, Any] | None,
        start_ns: int,
    ) -> None:
        self._sink = sink  # None: not recorded (not sampled, or the SDK disabled)
        self._name = name
        self._kind = kind
        self._trace_id = trace_id
        self._span_id = span_id
        self._flags = flags
        self._state = state  # the W3C tracestate (a TraceState), or None
        self._parent = parent
        self._attrs = attributes
        self._start = start_ns
        self._status = _UNSET
        self._events: list[Event] | None = None
        self._context: SpanContext | None = None
        self._deferred: Callable[[], Mapping[str, Any]] | None = None
        self._ended = False

    @property
    def trace_id(self) -> int:
        """The trace's id (0: no trace, the SDK being disabled)."""
        return self._trace_id

    def traceparent(self) -> str:
        """This span's W3C ``traceparent`` header value (ids in hex through ``bytes.hex``: a
        quarter of what formatting a 128-bit int costs)."""
        return (
            f"00-{self._trace_id.to_bytes(16, 'big').hex()}-"
            f"{self._span_id.to_bytes(8, 'big').hex()}-{self._flags:02x}"
        )

    def get_span_context(self) -> SpanContext:
        """The span's context (built when first asked for)."""
        ctx = self._context
        if ctx is None:
            if self._trace_id == 0:
                ctx = otel_trace.INVALID_SPAN_CONTEXT
            else:
                ctx = SpanContext(self._trace_id, self._span_id, False, _flags(self._flags),
                                  self._state)  # fmt: skip
            self._context = ctx
        return ctx

    def is_recording(self) -> bool:
        """Whether attributes set now are kept (sampled and not ended)."""
        return self._attrs is not None and not self._ended

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute (the proxy passes only valid OpenTelemetry values)."""
        if self._attrs is not None and not self._ended:
            self._attrs[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes in one call."""
        if self._attrs is not None and not self._ended:
            self._attrs.update(attributes)

    def defer(self, build: Callable[[], Mapping[str, Any]]) -> None:
        """Add the attributes ``build()`` returns when the span is exported (in the export
        thread; whatever ``build`` reads must not change after the span ends)."""
        if self._attrs is not None and not self._ended:
            self._deferred = build

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if not self._ended:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status as the SDK does (OK is final; UNSET is ignored)."""
        if self._ended or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        """Add an event (the proxy sets none; here for other code holding the span)."""
        if self._attrs is not None and not self._ended:
            if self._events is None:
                self._events = []
            self._events.append(Event(name, attributes, timestamp))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Links are not recorded on the proxy's spans."""

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record an exception as an event, as the SDK does (type and message, no stack)."""
        attrs: dict[str, AttributeValue] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.escaped": escaped,
        }
        attrs.update(attributes or {})
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """End the span: a recorded one goes to the span processors."""
        if self._ended:
            return
        self._ended = True
        if self._sink is not None:
            self._sink.finish(self, end_time if end_time is not None else time_ns())


class SpanRecorder:
    """Makes :class:`RecordedSpan` s with the ids, sampler, resource and processors of one
    TracerProvider."""

    def __init__(
        self,
        provider: TracerProvider,
        scope: InstrumentationScope,
        processors: Sequence[SpanProcessor],
    ) -> None:
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._random_ids = provider.id_generator.is_trace_id_random()
        self._resource = provider.resource
        self._scope = scope
        self._processors = tuple(processors)
        # OTEL_SDK_DISABLED: the provider hands out no-op tracers; spans are then invalid.
        self.enabled = isinstance(provider.get_tracer(scope.name, scope.version), Tracer)
        self._w3c_textmap: Any = None  # the propagator last found to be the W3C default

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        parent: Context | None = None,
        start_ns: int | None = None,
    ) -> RecordedSpan:
        """A request's first span (its SERVER span): a child of the caller's context in
        ``parent`` if that holds a valid span, sampled by the provider's sampler."""
        start = start_ns if start_ns is not None else time_ns()
        if not self.enabled:
            return RecordedSpan(None, name, kind, 0, 0, 0, None, None, None, start)
        remote = otel_trace.get_current_span(parent).get_span_context()
        if remote.is_valid:
            trace_id, random_id = remote.trace_id, bool(remote.trace_flags & 0x02)
            parent_ctx: SpanContext | None = remote
        else:
            trace_id, random_id, parent_ctx = self._ids.generate_trace_id(), self._random_ids, None
        result = self._sampler.should_sample(parent, trace_id, name, kind, attributes, ())
        sampled = result.decision is Decision.RECORD_AND_SAMPLE
        recording = result.decision is not Decision.DROP
        flags = (0x01 if sampled else 0) | (0x02 if random_id else 0)
        if result.attributes:
            attributes.update(result.attributes)
        return RecordedSpan(
            self if recording else None, name, kind, trace_id,
            self._ids.generate_span_id(), flags, result.trace_state or None, parent_ctx,
            attributes if recording else None, start,
        )  # fmt: skip

    def child(
        self,
        parent: RecordedSpan,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None = None,
        start_ns: int | None = None,
    ) -> RecordedSpan:
        """A span under ``parent``, sampled as it is."""
        start = start_ns if start_ns is not None else time_ns()
        recorded = parent._sink is not None
        return RecordedSpan(
            parent._sink, name, kind, parent._trace_id,
            self._ids.generate_span_id() if parent._trace_id else 0, parent._flags,
            parent._state, parent.get_span_context() if recorded else None,
            (dict(attributes) if attributes else {}) if recorded else None, start,
        )  # fmt: skip

    def finish(self, span: RecordedSpan, end_ns: int) -> None:
        """Hand an ended span to the processors as a ``ReadableSpan``."""
        kind = ReadableSpan if span._deferred is None else _DeferredSpan
        readable = kind(
            name=span._name,
            context=span.get_span_context(),
            parent=span._parent,
            resource=self._resource,
            attributes=span._attrs,
            events=span._events or (),
            links=(),
            kind=span._kind,
            status=span._status,
            start_time=span._start,
            end_time=end_ns,
            instrumentation_scope=self._scope,
        )
        if span._deferred is not None:
            # handed on, and dropped here: the builder refers to the request, which refers
            # to this span (a cycle only the garbage collector would free)
            readable._build, span._deferred = span._deferred, None  # type: ignore[attr-defined]
        for processor in self._processors:
            processor.on_end(readable)

    def inject(
        self, span: RecordedSpan, parent: Context | None, headers: MutableMapping[str, str]
    ) -> None:
        """Write ``span``'s context into outgoing ``headers`` (``parent``: the caller's
        context when it sent ``baggage``, which the SDK's propagators then write)."""
        if span._trace_id == 0:
            return
        textmap = propagate.get_global_textmap()
        if textmap is not self._w3c_textmap:
            if not _is_w3c(textmap):
                propagate.inject(headers, context=otel_trace.set_span_in_context(span, parent))
                return
            self._w3c_textmap = textmap
        if parent is not None:
            propagate.inject(headers, context=otel_trace.set_span_in_context(span, parent))
            return
        headers["traceparent"] = span.traceparent()
        if span._state:
            headers["tracestate"] = span._state.to_header()


class _DeferredSpan(ReadableSpan):
    """A finished span whose attributes are completed when first read (by the exporter)."""

    _build: Callable[[], Mapping[str, Any]] | None = None
    _base: Any = None

    @property
    def _attributes(self) -> Any:
        build = self._build
        if build is not None:
            self._build = None
            attrs = dict(self._base or {})
            try:
                attrs.update(build())
            except Exception:  # a span must still leave, with what it had
                log.exception("tracing: a span's attributes could not be built")
            self._base = attrs
        return self._base

    @_attributes.setter
    def _attributes(self, value: Any) -> None:
        self._base = value


def _is_w3c(textmap: Any) -> bool:
    """Whether ``textmap`` is W3C trace context alone or with W3C baggage (the default)."""
    if isinstance(textmap, TraceContextTextMapPropagator):
        return True
    parts = getattr(textmap, "_propagators", None)
    if not isinstance(textmap, CompositePropagator) or not isinstance(parts, list | tuple):
        return False
    kinds = [type(p) for p in parts]
    return kinds in ([TraceContextTextMapPropagator],
                     [TraceContextTextMapPropagator, W3CBaggagePropagator])  # fmt: skip
