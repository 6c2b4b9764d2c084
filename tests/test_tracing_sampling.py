"""The proxy's own spans (``routeguard.server.span_record``) against the SDK's rules: sampling
decided once per request and followed by its children, unsampled requests still propagating
their trace (flagged not sampled) and exporting nothing, the caller's trace state and baggage
carried upstream, other propagators honoured, and ``OTEL_SDK_DISABLED``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import propagate
from opentelemetry.propagators.textmap import CarrierT, Setter, TextMapPropagator, default_setter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from routeguard.config.settings import OtlpTarget, TracingConfig
from routeguard.deployment import Deployment
from routeguard.observe.requestlog import Trace
from routeguard.result import ChatResult
from routeguard.server.span_record import RecordedSpan
from routeguard.server.tracing import Tracing

DEP = Deployment("d1", "bench", "openai", "sim-bench", "http://127.0.0.1:4001/v1", None)
RESPONSE = {"id": "chatcmpl-1", "model": "sim-bench",
            "usage": {"prompt_tokens": 9, "completion_tokens": 12},
            "choices": [{"finish_reason": "stop", "message": {"content": "x"}}]}  # fmt: skip
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    """An exporter keeping spans in memory."""
    yield InMemorySpanExporter()


def _tracing(exporter: InMemorySpanExporter, ratio: float | None) -> Tracing:
    config = TracingConfig((OtlpTarget("http://127.0.0.1:9/v1/traces"),), sample_ratio=ratio)
    return Tracing(config, aliases=["bench"], exporters=[exporter])


def _request(t: Tracing, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """One request through the hooks; the headers its upstream attempt carried."""
    trace = Trace("req_1", time.time(), time.perf_counter())
    state = t.begin("POST", "/v1/chat/completions", headers, True)
    attempt = t.attempt_begin("bench", DEP)
    sent: dict[str, str] = {}
    t.inject(sent)
    t.attempt_end(attempt, None, False, RESPONSE)
    trace.request = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    trace.result = ChatResult("bench", DEP, 1, 0.0003, trace.started, response=RESPONSE,
                              usage=RESPONSE["usage"])  # fmt: skip
    state.status = 200
    t.end(state, trace, True)
    return sent


def _flush(t: Tracing, exporter: InMemorySpanExporter) -> list[Any]:
    t.provider.force_flush()
    return list(exporter.get_finished_spans())


def test_unsampled_requests_export_nothing_but_still_propagate(
    memory: InMemorySpanExporter,
) -> None:
    t = _tracing(memory, 0.0)
    try:
        sent = [_request(t, []) for _ in range(20)]
        assert _flush(t, memory) == []
        parts = [h["traceparent"].split("-") for h in sent]
        assert all(p[0] == "00" and int(p[3], 16) & 1 == 0 for p in parts)  # not sampled
        assert len({p[1] for p in parts}) == 20  # a trace per request
        assert all(int(p[2], 16) != 0 for p in parts)
    finally:
        t.shutdown()


def test_sampled_request_spans_nest_and_carry_attributes(memory: InMemorySpanExporter) -> None:
    t = _tracing(memory, 1.0)
    try:
        sent = _request(t, [(b"content-type", b"application/json")])
        spans = {s.kind: s for s in _flush(t, memory)}
        server, client = spans[SpanKind.SERVER], spans[SpanKind.CLIENT]
        assert server.parent is None
        assert client.parent is not None and client.parent.span_id == server.context.span_id
        assert client.context.trace_id == server.context.trace_id
        _, trace_id, span_id, flags = sent["traceparent"].split("-")
        assert (int(trace_id, 16), int(span_id, 16)) == (
            client.context.trace_id,
            client.context.span_id,
        )
        assert int(flags, 16) & 1 == 1
        assert server.name == "chat bench" and client.name == "chat sim-bench"
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["routeguard.request.id"] == "req_1"
        assert client.attributes["gen_ai.usage.output_tokens"] == 12
        assert list(client.attributes["gen_ai.response.finish_reasons"]) == ["stop"]
        assert server.status.status_code is StatusCode.UNSET
        assert server.resource.attributes["service.name"] == "routeguard"
        assert server.instrumentation_scope.name == "routeguard"
    finally:
        t.shutdown()


def test_a_sampled_caller_wins_over_the_ratio_and_its_state_goes_upstream(
    memory: InMemorySpanExporter,
) -> None:
    t = _tracing(memory, 0.0)
    try:
        headers = [
            (b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode()),
            (b"tracestate", b"vendor=abc"),
        ]
        sent = _request(t, headers)
        spans = {s.kind: s for s in _flush(t, memory)}
        server = spans[SpanKind.SERVER]
        assert f"{server.context.trace_id:032x}" == CALLER_TRACE
        assert server.parent is not None and server.parent.is_remote
        assert f"{server.parent.span_id:016x}" == CALLER_SPAN
        assert sent["traceparent"].split("-")[1] == CALLER_TRACE
        assert sent["tracestate"] == "vendor=abc"
        assert "baggage" not in sent
    finally:
        t.shutdown()


def test_callers_baggage_is_propagated_upstream(memory: InMemorySpanExporter) -> None:
    t = _tracing(memory, 1.0)
    try:
        headers = [
            (b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode()),
            (b"baggage", b"tenant=acme"),
        ]
        sent = _request(t, headers)
        assert sent["baggage"] == "tenant=acme"
        assert sent["traceparent"].split("-")[1] == CALLER_TRACE
    finally:
        t.shutdown()


class _Custom(TextMapPropagator):
    """A propagator of another format (as OTEL_PROPAGATORS could install)."""

    def extract(self, carrier: CarrierT, context: Any = None, getter: Any = None) -> Any:
        return context

    def inject(
        self, carrier: CarrierT, context: Any = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        from opentelemetry import trace

        ctx = trace.get_current_span(context).get_span_context()
        setter.set(carrier, "x-custom-trace", f"{ctx.trace_id:032x}:{ctx.span_id:016x}")

    @property
    def fields(self) -> set[str]:
        return {"x-custom-trace"}


def test_another_propagator_is_used_when_configured(memory: InMemorySpanExporter) -> None:
    t = _tracing(memory, 1.0)
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(_Custom())
    try:
        sent = _request(t, [])
        client = next(s for s in _flush(t, memory) if s.kind is SpanKind.CLIENT)
        assert "traceparent" not in sent
        assert sent["x-custom-trace"] == f"{client.context.trace_id:032x}:" + (
            f"{client.context.span_id:016x}"
        )
    finally:
        propagate.set_global_textmap(before)
        t.shutdown()


def test_sdk_disabled_records_and_propagates_nothing(
    memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    t = _tracing(memory, 1.0)
    try:
        assert _request(t, []) == {}
        assert _flush(t, memory) == []
    finally:
        t.shutdown()


def test_deferred_attributes_are_built_at_export_and_a_failing_build_keeps_the_span(
    memory: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from routeguard.server.span_record import SpanRecorder

    provider = TracerProvider()
    recorder = SpanRecorder(provider, InstrumentationScope("t"), [SimpleSpanProcessor(memory)])
    built: list[str] = []

    def build() -> dict[str, Any]:
        built.append("yes")
        return {"late": 2}

    def broken() -> dict[str, Any]:
        raise RuntimeError("no")

    good = recorder.start("good", SpanKind.SERVER, {"early": 1})
    good.defer(build)
    good.end()
    bad = recorder.start("bad", SpanKind.SERVER, {"early": 1})
    bad.defer(broken)
    bad.end()
    assert built == []  # nothing built until the span is read
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert dict(spans["good"].attributes) == {"early": 1, "late": 2}
    assert dict(spans["good"].attributes) == {"early": 1, "late": 2} and built == ["yes"]
    assert dict(spans["bad"].attributes) == {"early": 1}
    assert "could not be built" in caplog.text


@pytest.mark.parametrize(
    ("trace_id", "span_id", "flags"),
    [(1, 2, 0), (2**128 - 1, 2**64 - 1, 1), (0xABC << 64, 0x10, 3), (2**127, 2**63, 0xFF)],
)
def test_traceparent_is_the_w3c_header(trace_id: int, span_id: int, flags: int) -> None:
    """Version 00, the ids in 32 and 16 lowercase hex digits (leading zeros kept), the
    flags in 2."""
    span = RecordedSpan(None, "s", SpanKind.SERVER, trace_id, span_id, flags, None, None,
                        None, 0)  # fmt: skip
    header = span.traceparent()
    assert header == f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert len(header) == 55
