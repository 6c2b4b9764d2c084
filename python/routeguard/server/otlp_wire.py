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
    the SDK's encoder groups them (in dicts keyed by them: equal and of equal hash);
    TypeError, ValueError or OverflowError for a value the core leaves to the SDK's."""
    groups: dict[Any, dict[Any, list[tuple[Any, ...]]]] = {}
    seen: dict[tuple[int, int], list[tuple[Any, ...]]] = {}  # by identity: hashed once
    for s in spans:
        resource, scope = s.resource, s.instrumentation_scope
        key = (id(resource), id(scope))
        group = seen.get(key)
        if group is None:
            group = seen[key] = groups.setdefault(resource, {}).setdefault(scope, [])
        group.append(_fields(s))
    listed = []
    for resource, scopes in groups.items():
        heads = []
        for scope, fields in scopes.items():
            head = None
            if scope is not None:
                head = (scope.name, scope.version, scope.attributes, scope.schema_url)
            heads.append((head, fields))
        listed.append((resource.attributes, resource.schema_url, heads))
    return core.otlp_trace_request(listed)
