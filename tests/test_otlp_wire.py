"""routeguard.server.otlp_wire writes the OTLP export request the SDK's encoder builds: both
encodings of the same spans parse to equal ExportTraceServiceRequest messages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from routeguard.server import otlp_wire

_text = st.text(max_size=12)
_scalar = st.one_of(
    _text,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
_value = st.one_of(
    _scalar,
    st.lists(_text, max_size=3).map(tuple),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(st.floats(allow_nan=False), max_size=3).map(tuple),
)
_attrs = st.dictionaries(_text, _value, max_size=6)
_ids = st.integers(min_value=1, max_value=2**64 - 1)
_resources = [
    Resource({"service.name": "routeguard", "service.version": "0.1.0"}),
    Resource({"service.name": "other", "host.cpus": 2}, schema_url="https://x/s"),
]
_scopes = [
    InstrumentationScope("routeguard", "0.1.0"),
    InstrumentationScope("other", None, "https://x/scope", {"a": 1}),
    None,
]


@st.composite
def spans(draw: Any) -> ReadableSpan:
    trace_id = draw(st.integers(min_value=1, max_value=2**128 - 1))
    state = draw(st.sampled_from([None, TraceState([("vendor", "v1")])]))
    ctx = SpanContext(trace_id, draw(_ids), False, TraceFlags(draw(st.sampled_from([0, 1]))),
                      state)  # fmt: skip
    parent = None
    if draw(st.booleans()):
        parent = SpanContext(trace_id, draw(_ids), draw(st.booleans()))
    start = draw(st.integers(min_value=0, max_value=2**63))
    code = draw(st.sampled_from(list(StatusCode)))
    return ReadableSpan(
        name=draw(_text),
        context=ctx,
        parent=parent,
        resource=draw(st.sampled_from(_resources)),
        attributes=draw(_attrs),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(code, draw(_text) if code is StatusCode.ERROR else None),
        start_time=start,
        end_time=start + draw(st.integers(min_value=0, max_value=10**12)),
        instrumentation_scope=draw(st.sampled_from(_scopes)),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(spans(), min_size=1, max_size=6))
def test_the_wire_encoder_writes_what_the_sdk_encoder_builds(batch: list[ReadableSpan]) -> None:
    assert otlp_wire.encodable(batch)
    ours = ExportTraceServiceRequest.FromString(otlp_wire.encode(batch))
    assert ours == encode_spans(batch)


def test_long_values_and_every_value_kind_match_the_sdk_encoder() -> None:
    """Messages past one and two length bytes (127, 16,383), bytes and nested values."""
    ctx = SpanContext(2**128 - 1, 2**64 - 1, False, TraceFlags(1), TraceState([("v", "1")]))
    attrs = {"short": "x" * 127, "mid": "y" * 128, "long": "z" * 20_000, "b": b"\x00\xff",
             "neg": -(2**63), "big": 2**63 - 1, "f": -0.0, "t": True,
             "words": ("a" * 200, "b"), "empty": ()}  # fmt: skip
    span = ReadableSpan(name="n" * 300, context=ctx, parent=SpanContext(1, 3, True),
                        attributes=attrs, resource=_resources[1],
                        instrumentation_scope=_scopes[1])  # fmt: skip
    batch = [span, *([ReadableSpan(name="p", context=SpanContext(1, 2, False))] * 200)]
    ours = ExportTraceServiceRequest.FromString(otlp_wire.encode(batch))
    assert ours == encode_spans(batch)


@pytest.mark.parametrize(
    "attrs",
    [{"text": "lone \ud800 surrogate"}, {1: "key not a str"}, {"k": ("ok", "\udfff")}],
    ids=["surrogate", "int-key", "surrogate-in-array"],
)
def test_a_value_the_core_cannot_write_raises_for_the_sdks_path(attrs: Any) -> None:
    """The exporter falls back to the SDK's encoder on any exception from encode."""
    span = ReadableSpan(name="a", context=SpanContext(1, 2, False), attributes=attrs)
    with pytest.raises((TypeError, ValueError)):
        otlp_wire.encode([span])


def test_spans_with_events_are_left_to_the_sdk() -> None:
    ctx = SpanContext(1, 2, False)
    plain = ReadableSpan(name="a", context=ctx)
    with_event = ReadableSpan(name="b", context=ctx, events=[Event("e", {"k": 1})])
    assert otlp_wire.encodable([plain])
    assert not otlp_wire.encodable([plain, with_event])


def test_the_proxys_http_exporter_sends_wire_encoded_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from otlp_receiver import OtlpReceiver
    from routeguard.server.tracing import WireExporter

    encoded: list[int] = []
    real = otlp_wire.encode
    monkeypatch.setattr(otlp_wire, "encode", lambda b: encoded.append(len(b)) or real(b))
    ctx = SpanContext(0xABC, 0xDEF, False)
    plain = ReadableSpan(name="plain", context=ctx, attributes={"k": "v"},
                         resource=_resources[0])  # fmt: skip
    with_event = ReadableSpan(name="evented", context=ctx, events=[Event("e", {"k": 1})],
                              resource=_resources[0])  # fmt: skip
    with OtlpReceiver() as receiver:
        exporter = WireExporter(endpoint=receiver.url + "/v1/traces", headers={"x-a": "1"})
        assert exporter.export([plain]) is SpanExportResult.SUCCESS
        assert exporter.export([with_event]) is SpanExportResult.SUCCESS  # the SDK's path
        exporter.shutdown()
        got = receiver.wait_for(lambda s: len(s) == 2)
    assert encoded == [1]
    assert [s.name for s in got] == ["plain", "evented"]
    assert got[0].attributes == {"k": "v"} and got[0].trace_id == f"{0xABC:032x}"
    assert all(r["x-a"] == "1" for r in receiver.requests)


def test_a_large_batch_is_sent_in_parts_that_read_as_one_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exporter encodes a batch a few spans at a time with a pause between (its thread
    holds the GIL while it reads spans); the parts, concatenated, are one request holding
    every span with its resource and scope, as the SDK's encoder sends them."""
    from routeguard.server import tracing

    pauses: list[int] = []
    monkeypatch.setattr(tracing, "pause", lambda: pauses.append(1))
    batch = [
        ReadableSpan(
            name=f"s{i}",
            context=SpanContext(0xABC, 0x100 + i, False),
            attributes={"i": i},
            resource=_resources[i % 2],
            instrumentation_scope=_scopes[i % 3],
        )
        for i in range(40)
    ]
    data = tracing._encoded(batch)
    assert len(pauses) == -(-40 // tracing.EXPORT_CHUNK) - 1
    got = ExportTraceServiceRequest.FromString(data)
    want = encode_spans(batch)

    def flat(req: ExportTraceServiceRequest) -> list[tuple[Any, ...]]:
        return sorted(
            (
                sp.span_id,
                r.resource.SerializeToString(),
                s.scope.SerializeToString(),
                sp.SerializeToString(),
            )
            for r in req.resource_spans
            for s in r.scope_spans
            for sp in s.spans
        )

    assert len(flat(got)) == 40 and flat(got) == flat(want)


# ------------------------------------------------- values the core leaves to the SDK (review)


def _sdk_span(attrs: dict[str, Any], limits: SpanLimits | None = None,
              event: bool = False) -> ReadableSpan:  # fmt: skip
    """A span finished by the real SDK tracer (its attribute rules applied)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s", attributes=attrs) as span:
        if event:
            span.add_event("e")
    (done,) = exporter.get_finished_spans()
    return done


def _left_to_the_sdk(batch: list[ReadableSpan]) -> None:
    """The core refuses the batch: the exporter then sends the SDK's encoding of it."""
    with pytest.raises((TypeError, ValueError, OverflowError)):
        otlp_wire.encode(batch)


def _same_as_the_sdk(batch: list[ReadableSpan]) -> None:
    assert ExportTraceServiceRequest.FromString(otlp_wire.encode(batch)) == encode_spans(batch)


@pytest.mark.parametrize("value", [2**63, 2**64 - 1, 2**70, -(2**63) - 1, (1, 2**63)],
                         ids=["2**63", "2**64-1", "2**70", "-2**63-1", "in-array"])  # fmt: skip
def test_an_int_past_int64_is_left_to_the_sdk(value: Any) -> None:
    span = _sdk_span({"n": value})
    assert span.attributes["n"] == value  # kept by the SDK tracer's attribute rules
    _left_to_the_sdk([span])


def test_a_mapping_value_is_left_to_the_sdk() -> None:
    span = _sdk_span({"m": {"a": 1}})
    assert span.attributes["m"] == {"a": 1}  # kept by the SDK tracer's attribute rules
    _left_to_the_sdk([span])


def test_a_mapping_in_an_array_is_left_to_the_sdk() -> None:
    span = ReadableSpan(name="a", context=SpanContext(1, 2, False), attributes={"m": ({"a": 1},)})
    _left_to_the_sdk([span])


def test_a_value_of_another_type_is_left_to_the_sdk() -> None:
    span = ReadableSpan(name="a", context=SpanContext(1, 2, False),
                        attributes={"o": object(), "k": "v"})  # fmt: skip
    _left_to_the_sdk([span])


def test_dropped_events_count_of_an_sdk_span_is_written() -> None:
    span = _sdk_span({}, SpanLimits(max_events=0), event=True)  # OTEL_SPAN_EVENT_COUNT_LIMIT=0
    assert not span.events and span.dropped_events == 1
    assert otlp_wire.encodable([span])
    _same_as_the_sdk([span])


def test_dropped_events_and_links_counts_are_written() -> None:
    events: BoundedList = BoundedList(0)
    events.append(Event("e"))
    links: BoundedList = BoundedList(0)
    links.append(object())
    span = ReadableSpan(name="a", context=SpanContext(1, 2, False), events=events, links=links)
    assert span.dropped_events == 1 and span.dropped_links == 1
    assert otlp_wire.encodable([span])
    _same_as_the_sdk([span])


def test_equal_resources_and_scopes_are_grouped_as_the_sdk_groups_them() -> None:
    spans = [
        ReadableSpan(name=str(i), context=SpanContext(1, i + 2, False),
                     resource=Resource({"service.name": "r"}),
                     instrumentation_scope=InstrumentationScope("routeguard", "1"))
        for i in range(2)
    ]  # fmt: skip
    _same_as_the_sdk(spans)


def test_deeply_nested_value_does_not_crash_the_process() -> None:
    code = textwrap.dedent("""
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext
        from routeguard.server import otlp_wire
        v = []
        v.append(v)  # self-referential: the SDK's encoder hits RecursionError (attr dropped)
        span = ReadableSpan(name="a", context=SpanContext(1, 2, False), attributes={"v": v})
        try:
            otlp_wire.encode([span])
        except Exception as exc:
            print("raised", type(exc).__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])


def test_resources_equal_by_eq_but_not_by_hash_are_not_merged() -> None:
    """Resource.__eq__ says {"n": 1} == {"n": True} (and 1 == 1.0), but Resource.__hash__
    hashes their JSON ("1" vs "true"), so the SDK's dict keeps them in two ResourceSpans.
    The wire encoder's == search merges them, exporting the second span under n=1."""
    spans = [
        ReadableSpan(name="a", context=SpanContext(1, 2, False), resource=Resource({"n": 1})),
        ReadableSpan(name="b", context=SpanContext(1, 3, False), resource=Resource({"n": True})),
    ]
    sdk = encode_spans(spans)
    assert len(sdk.resource_spans) == 2
    ours = ExportTraceServiceRequest.FromString(otlp_wire.encode(spans))
    assert [len(r.scope_spans[0].spans) for r in ours.resource_spans] == [1, 1]
    assert ours == sdk
