"""OTLP trace export requests written straight to protobuf wire bytes.

The OpenTelemetry exporters build an ``ExportTraceServiceRequest`` message object per
batch, one Python object per span, attribute and value, then serialize it; that is most of
what tracing costs a proxy's CPU. This reads each finished span's fields once, groups the
spans by resource and scope, and has the native core (``_core.otlp_trace_request``, the
``otlp`` kernel) write the same bytes directly (field numbers from opentelemetry-proto's
``trace.proto``, ``common.proto`` and ``resource.proto``). Spans with events or links, which
the proxy never makes, are left to the SDK's encoder (:func:`encodable`), as is a batch
holding a value the core cannot write (it raises). ``tests/test_otlp_wire.py`` checks that
both encoders' bytes parse to the same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from routeguard._native import core


def encodable(spans: Sequence[ReadableSpan]) -> bool:
    """Whether :func:`encode` writes these spans (none has events or links)."""
    return all(not s.events and not s.links for s in spans)


def _fields(span: ReadableSpan) -> tuple[Any, ...]:
    """What the core writes of one span (see ``_core.otlp_trace_request``)."""
    ctx = span.context
    assert ctx is not None
    parent = span.parent
    state = ctx.trace_state
    status = span.status
    return (
        ctx.trace_id,
        ctx.span_id,
        state.to_header() if state else None,
        None if parent is None else parent.span_id,
        parent is not None and parent.is_remote,
        span.name,
        span.kind.value,
        span.start_time or 0,
        span.end_time or 0,
        span.attributes,
        span.dropped_attributes,
        status.description,
        status.status_code.value,
        span.dropped_events,
        span.dropped_links,
    )


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """An ``ExportTraceServiceRequest`` holding ``spans``, grouped by resource and scope as
    the SDK's encoder groups them (equal ones together); TypeError, ValueError or
    OverflowError for a value the core leaves to the SDK's encoder."""
    resources: list[tuple[Any, list[tuple[Any, list[tuple[Any, ...]]]]]] = []
    by_resource: dict[int, list[tuple[Any, list[tuple[Any, ...]]]]] = {}
    by_scope: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
    for s in spans:
        resource, scope = s.resource, s.instrumentation_scope
        key = (id(resource), id(scope))
        group = by_scope.get(key)
        if group is None:
            scopes = by_resource.get(id(resource))
            if scopes is None:  # a distinct object: one of an equal resource's spans?
                scopes = next((g for r, g in resources if r == resource), None)
                if scopes is None:
                    scopes = []
                    resources.append((resource, scopes))
                by_resource[id(resource)] = scopes
            group = next((g for c, g in scopes if c == scope), None)
            if group is None:
                group = []
                scopes.append((scope, group))
            by_scope[key] = group
        group.append(_fields(s))
    listed = []
    for resource, scopes in resources:
        heads = []
        for scope, fields in scopes:
            head = None
            if scope is not None:
                head = (scope.name, scope.version, scope.attributes, scope.schema_url)
            heads.append((head, fields))
        listed.append((resource.attributes, resource.schema_url, heads))
    return core.otlp_trace_request(listed)
