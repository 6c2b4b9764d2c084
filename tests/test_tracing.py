"""OpenTelemetry traces (``observability.tracing``), end to end: ``routeguard serve`` with
the openai SDK as client, the simulated upstream recording the headers it receives, and a
real OTLP/HTTP receiver decoding what the proxy exports (tests/otlp_receiver.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from embedders import WordsEmbedder
from otlp_receiver import OtlpGrpcReceiver, OtlpReceiver, ReceivedSpan
from policies import PAYMENTS
from routeguard import config
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.observe import spans
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from serving import serve

SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP span kinds
PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
SECRET_PROMPT = "my card is 4111 1111 1111 1111, key sk-proj-abcdefghijklmnopqrstuvwx0123"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def _config(tmp_path: Path, upstream: str, tracing: Any, **observability: Any) -> str:
    (tmp_path / "policy.yaml").write_text(PAYMENTS)
    dep = {"type": "openai", "api_base": upstream + "/v1", "api_key": "sk-up",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    cfg = {
        "model_list": [
            {**dep, "model_name": "flaky", "model": "sim-error-503"},
            {
                **dep,
                "model_name": "backup",
                "model": "sim-backup",
                # the simulated upstream's first chunk comes 30 ms after its headers
                "headers": {"x-mock-ttft-ms": "30", "x-mock-tokens-per-s": "200"},
            },
        ],
        "fallbacks": {"flaky": ["backup"]},
        "router_settings": {"num_retries": 0},
        "routes": {"safe": {"mode": "pinned", "target": "backup"}},
        "enforce": {"policy": str(tmp_path / "policy.yaml")},
        "observability": {"tracing": tracing, **observability},
    }
    path = tmp_path / "routeguard.json"
    path.write_text(json.dumps(cfg))
    return str(path)


_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "50"}  # export every 50 ms, not every 5 s


def _tools(recipient: str) -> list[dict[str, Any]]:
    schema = {"type": "object", "properties": {"recipient": {"type": "string", "const": recipient}}}
    return [{"type": "function", "function": {"name": "send_money", "parameters": schema}}]


def _by_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_a_fallback_request_is_one_trace_under_the_callers_span(
    tmp_path: Path, mock: MockServer, receiver: OtlpReceiver
) -> None:
    tracing = {"endpoint": receiver.url, "service_name": "gw-test",
               "headers": {"Authorization": "Bearer otlp-token"}}  # fmt: skip
    path = _config(tmp_path, mock.url, tracing)
    before = len(mock.requests)
    with (
        serve("--config", path, env=_ENV) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-any", max_retries=0) as client,
    ):
        resp = client.chat.completions.create(
            model="flaky",
            messages=[{"role": "user", "content": SECRET_PROMPT}],
            max_tokens=40,
            temperature=0.2,
            top_p=0.9,
            extra_headers={"traceparent": TRACEPARENT},
        )
        spans = receiver.wait_for(lambda s: len(_by_trace(s, PARENT_TRACE)) >= 3)
    assert receiver.requests[0]["authorization"] == "Bearer otlp-token"
    assert receiver.requests[0]["content-type"] == "application/x-protobuf"
    ours = _by_trace(spans, PARENT_TRACE)
    server = _one(ours, "chat flaky")
    assert server.kind == SERVER and server.parent_span_id == PARENT_SPAN
    assert server.resource["service.name"] == "gw-test"
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "flaky"
    assert a["gen_ai.request.max_tokens"] == 40
    assert a["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert a["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.response.id"] == resp.id and a["gen_ai.response.model"] == resp.model
    assert a["gen_ai.response.finish_reasons"] == [resp.choices[0].finish_reason]
    assert resp.usage is not None
    assert a["routeguard.usage.input_tokens"] == resp.usage.prompt_tokens
    assert a["routeguard.usage.output_tokens"] == resp.usage.completion_tokens
    assert "gen_ai.usage.input_tokens" not in a  # on the CLIENT span only: never summed twice
    expected_cost = (resp.usage.prompt_tokens * 1.0 + resp.usage.completion_tokens * 2.0) / 1e6
    assert a["routeguard.cost_usd"] == pytest.approx(expected_cost)
    assert a["routeguard.alias"] == "backup" and a["routeguard.attempts"] == 2
    assert a["routeguard.cache.status"] == "off"
    assert a["http.response.status_code"] == 200

    failed = _one(ours, "chat sim-error-503")
    served = _one(ours, "chat sim-backup")
    for s in (failed, served):
        assert s.kind == CLIENT and s.parent_span_id == server.span_id
        assert s.attributes["server.address"] == "127.0.0.1"
    assert failed.attributes["error.type"] == "UpstreamServerError" and failed.status_code == 2
    assert "error.type" not in served.attributes
    assert served.attributes["gen_ai.response.id"] == resp.id
    assert served.attributes["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
    assert served.attributes["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert failed.end_ns <= served.start_ns  # one attempt after the other

    # Each attempt carried its own span's context upstream.
    upstream = mock.requests[before:]
    assert [r.model for r in upstream] == ["sim-error-503", "sim-backup"]
    sent = [r.headers["traceparent"].split("-") for r in upstream]
    assert [(t[1], t[2]) for t in sent] == [
        (PARENT_TRACE, failed.span_id),
        (PARENT_TRACE, served.span_id),
    ]
    # No content without log_content: the prompt's text is in no attribute.
    values = json.dumps([s.attributes for s in ours])
    assert "gen_ai.input.messages" not in values and "4111" not in values


def test_a_stream_span_ends_with_the_stream_and_tool_decisions_are_spans(
    tmp_path: Path, mock: MockServer, receiver: OtlpReceiver
) -> None:
    path = _config(tmp_path, mock.url, {"endpoint": receiver.url})
    with (
        serve("--config", path, env=_ENV) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-any", max_retries=0) as client,
    ):
        chunks = list(
            client.chat.completions.create(
                model="backup",
                messages=[{"role": "user", "content": "stream me something"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        denied = client.chat.completions.create(
            model="safe",
            messages=[{"role": "user", "content": "pay"}],
            tools=_tools("US123"),  # type: ignore[arg-type]
        )
        spans = receiver.wait_for(
            lambda s: (
                any(x.name.startswith("execute_tool") for x in s)
                and any(x.name == "chat backup" for x in s)
            )
        )
    assert not denied.choices[0].message.tool_calls
    usage = chunks[-1].usage
    assert usage is not None
    server = _one(spans, "chat backup")
    client_span = next(s for s in spans if s.parent_span_id == server.span_id)
    assert server.parent_span_id == "" and client_span.kind == CLIENT
    a = server.attributes
    assert a["gen_ai.request.stream"] is True
    ttfc = a["gen_ai.response.time_to_first_chunk"]  # after the simulated 30 ms, before the end
    assert 0.03 <= ttfc < (server.end_ns - server.start_ns) / 1e9
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.response.id"] == chunks[0].id
    assert a["routeguard.usage.output_tokens"] == usage.completion_tokens
    # The upstream attempt's span covers the whole stream, and knows its first chunk.
    c = client_span.attributes
    assert c["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert c["gen_ai.response.finish_reasons"] == ["stop"]
    first = c["gen_ai.response.time_to_first_chunk"]
    assert first >= 0.03
    assert client_span.end_ns > client_span.start_ns + first * 1e9  # ended after the first chunk
    assert client_span.end_ns <= server.end_ns

    safe = _one(spans, "chat safe")
    tool = _one(spans, "execute_tool send_money")
    assert tool.kind == INTERNAL and tool.parent_span_id == safe.span_id
    assert tool.trace_id == safe.trace_id
    t = tool.attributes
    assert t["gen_ai.operation.name"] == "execute_tool" and t["gen_ai.tool.name"] == "send_money"
    assert t["routeguard.enforce.effect"] == "deny"
    assert t["routeguard.enforce.rule"] == "no-us-transfers"
    assert t["routeguard.enforce.allowed"] is False and tool.status_code == 2
    assert "gen_ai.tool.call.arguments" not in t  # content stays out without log_content


def test_log_content_puts_scrubbed_messages_in_spans(
    tmp_path: Path, mock: MockServer, receiver: OtlpReceiver
) -> None:
    path = _config(tmp_path, mock.url, {"endpoint": receiver.url}, log_content=True)
    with (
        serve("--config", path, env=_ENV) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-any", max_retries=0) as client,
    ):
        resp = client.chat.completions.create(
            model="backup", messages=[{"role": "user", "content": SECRET_PROMPT}]
        )
        spans = receiver.wait_for(lambda s: any(x.name == "chat backup" for x in s))
    a = _one(spans, "chat backup").attributes
    messages = json.loads(a["gen_ai.input.messages"])
    assert messages[0]["role"] == "user" and "my card is" in messages[0]["content"]
    assert "sk-proj-abcdefghijklmnopqrstuvwx0123" not in a["gen_ai.input.messages"]
    output = json.loads(a["gen_ai.output.messages"])
    assert output[0]["message"]["content"] == resp.choices[0].message.content


def test_no_tracing_configured_sends_no_traceparent(tmp_path: Path, mock: MockServer) -> None:
    path = _config(tmp_path, mock.url, None)
    before = len(mock.requests)
    with (
        serve("--config", path) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-any", max_retries=0) as client,
    ):
        client.chat.completions.create(
            model="backup",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": TRACEPARENT},
        )
    (sent,) = mock.requests[before:]
    assert "traceparent" not in sent.headers


def test_otlp_over_grpc_with_headers(tmp_path: Path, mock: MockServer) -> None:
    with OtlpGrpcReceiver() as grpc_receiver:
        tracing = {"endpoint": grpc_receiver.url, "protocol": "grpc",
                   "headers": {"x-tenant": "os.environ/TRACE_TENANT"}}  # fmt: skip
        path = _config(tmp_path, mock.url, tracing)
        with (
            serve("--config", path, env={**_ENV, "TRACE_TENANT": "team-7"}) as srv,
            openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-any", max_retries=0) as client,
        ):
            client.chat.completions.create(
                model="backup", messages=[{"role": "user", "content": "hi"}]
            )
            spans = grpc_receiver.wait_for(lambda s: any(x.name == "chat backup" for x in s))
    server = _one(spans, "chat backup")
    assert _one(spans, "chat sim-backup").parent_span_id == server.span_id
    assert grpc_receiver.requests[0]["x-tenant"] == "team-7"


def test_cache_hits_and_refusals_in_process(mock: MockServer, receiver: OtlpReceiver) -> None:
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "sk-up"}
    cfg = {
        "model_list": [{**dep, "model_name": "cached", "model": "sim-cached"}],
        "routes": {"cached": {"cache": {"enabled": True, "threshold": 0.8}}},
        "budgets": [{"name": "acme", "limit": 5.0}],
        "server": {"master_key": "sk-master-tracing"},
        "observability": {"tracing": {"endpoint": receiver.url}},
    }
    gw = Gateway(config.load(cfg, env={}), embedder=WordsEmbedder())
    app = create_app(gw)
    assert app.tracing is not None and spans.recorder is app.tracing
    msgs: Any = [{"role": "user", "content": "what is the tallest mountain"}]
    with (
        ServerThread(app) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-master-tracing", max_retries=0) as c,
    ):
        miss = c.chat.completions.create(model="cached", messages=msgs)
        hit = c.chat.completions.create(model="cached", messages=msgs)
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="nope", messages=msgs)
        with (
            pytest.raises(openai.AuthenticationError),
            openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-wrong", max_retries=0) as wrong,
        ):
            wrong.models.list()
        app.tracing.provider.force_flush()
        got = receiver.wait_for(lambda s: len([x for x in s if x.kind == SERVER]) >= 4)
    assert spans.recorder is None  # shutdown uninstalled it
    assert not [s for s in got if s.kind == INTERNAL]  # stage spans are off by default
    assert hit.choices[0].message.content == miss.choices[0].message.content
    cached = [s for s in got if s.name == "chat cached"]
    assert [s.attributes["routeguard.cache.status"] for s in cached] == ["miss", "hit"]
    miss_span, hit_span = cached
    assert [s.parent_span_id for s in got if s.kind == CLIENT] == [miss_span.span_id]
    assert "gen_ai.provider.name" not in hit_span.attributes  # no upstream served it
    assert hit_span.attributes["routeguard.cost_usd"] == 0.0
    assert hit_span.attributes["routeguard.cache.score"] == pytest.approx(1.0)
    refused = _one(got, "chat")  # a model no config names stays out of span names
    assert refused.attributes["gen_ai.request.model"] == "nope"
    assert refused.attributes["error.type"] == "model_not_found"
    assert refused.attributes["http.response.status_code"] == 404
    assert refused.status_code == 0  # a 4xx is the caller's, not the server's error
    denied = _one(got, "GET /v1/models")
    assert denied.attributes["http.response.status_code"] == 401
    assert denied.attributes["error.type"] == "invalid_api_key"


def test_stage_spans_when_asked_for(mock: MockServer, receiver: OtlpReceiver) -> None:
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "sk-up"}
    cfg = {
        "model_list": [{**dep, "model_name": "cached", "model": "sim-cached"},
                       {**dep, "model_name": "big", "model": "sim-big"}],
        "routes": {
            "cached": {"cache": {"enabled": True, "threshold": 0.8}},
            "auto": {"mode": "routed", "default": "cached",
                     "rules": [{"name": "long", "min_tokens": 40, "target": "big"}]},
        },
        "observability": {"tracing": {"endpoint": receiver.url, "stages": True}},
    }  # fmt: skip
    gw = Gateway(config.load(cfg, env={}), embedder=WordsEmbedder())
    app = create_app(gw)
    assert app.tracing is not None
    msgs: Any = [{"role": "user", "content": "what is the tallest mountain"}]
    with (
        ServerThread(app) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0) as c,
    ):
        c.chat.completions.create(model="cached", messages=msgs)
        c.chat.completions.create(model="cached", messages=msgs)
        long_msgs: Any = [{"role": "user", "content": "explain this please " * 30}]
        c.chat.completions.create(model="auto", messages=long_msgs)
        app.tracing.provider.force_flush()
        got = receiver.wait_for(lambda s: len([x for x in s if x.kind == SERVER]) >= 3)
    servers = {s.span_id: s for s in got if s.kind == SERVER}
    lookups = [s for s in got if s.name == "routeguard.cache.lookup"]
    assert all(s.kind == INTERNAL and s.parent_span_id in servers for s in lookups)
    by_request = {servers[s.parent_span_id].name: [] for s in lookups}
    for s in lookups:
        by_request[servers[s.parent_span_id].name].append(s.attributes)
    assert [a["routeguard.cache.status"] for a in by_request["chat cached"]] == ["miss", "hit"]
    assert by_request["chat cached"][1]["routeguard.cache.tier"] == "exact"
    assert by_request["chat cached"][0]["routeguard.cache.verifier_refused"] is False
    (route,) = [s for s in got if s.name == "routeguard.route"]
    assert servers[route.parent_span_id].name == "chat auto"
    assert route.attributes["routeguard.route.target"] == "big"
    assert route.attributes["routeguard.route.reason"] == "rule:long"
    # The stage ended before the upstream call started.
    (attempt,) = [s for s in got if s.kind == CLIENT and s.parent_span_id == route.parent_span_id]
    assert route.end_ns <= attempt.start_ns
