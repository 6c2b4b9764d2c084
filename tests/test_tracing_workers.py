"""Traces with ``routeguard serve --workers 2``: every worker exports its own spans to the
same real OTLP/HTTP receiver, each tagged with its own ``service.instance.id`` and
``process.pid``; every request is one trace (SERVER span, CLIENT child) and none is lost,
including those still queued when the proxy is stopped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from otlp_receiver import OtlpReceiver, ReceivedSpan
from routeguard.mock import MockServer
from serving import serve

SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture
def mock() -> Iterator[MockServer]:
    with MockServer() as m:
        yield m


def _ask(url: str) -> str:
    """One chat request on a connection of its own (the kernel picks the worker)."""
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hello there"}]
        )
        return raw.headers["x-routeguard-request-id"]


def _pids(spans: list[ReceivedSpan]) -> set[int]:
    return {s.resource["process.pid"] for s in spans if s.kind == SERVER}


def test_both_workers_export_their_spans(tmp_path: Path, mock: MockServer) -> None:
    with OtlpReceiver() as receiver:
        dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "sk-up"}
        cfg = {
            "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
            "observability": {"tracing": {"endpoint": receiver.url, "service_name": "gw-2"}},
        }
        path = tmp_path / "routeguard.json"
        path.write_text(json.dumps(cfg))
        ids: list[str] = []
        env = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
        with serve("--config", str(path), "--workers", "2", env=env) as proxy:
            assert proxy.proc is not None
            parent = proxy.proc.pid
            with ThreadPoolExecutor(8) as pool:
                # New connections until spans from both workers are in (or 400 requests).
                while len(ids) < 400 and (len(ids) < 40 or len(_pids(list(receiver.spans))) < 2):
                    ids += pool.map(lambda _: _ask(proxy.url), range(20))
            ids += [_ask(proxy.url) for _ in range(4)]  # just before the stop
        # The last requests' spans may have been queued at SIGTERM: each worker exports
        # what it holds as it shuts down.
        spans = receiver.wait_for(
            lambda s: len([x for x in s if x.kind == SERVER]) >= len(ids), timeout=30
        )

    servers = [s for s in spans if s.kind == SERVER]
    clients = [s for s in spans if s.kind == CLIENT]
    assert sorted(s.attributes["routeguard.request.id"] for s in servers) == sorted(ids)
    assert {s.name for s in servers} == {"chat m"}
    assert len(clients) == len(ids)
    pids = _pids(spans)
    assert len(pids) == 2, "spans came from one worker only"
    assert parent not in pids  # spans come from the workers, not the supervisor
    instances = {s.resource["service.instance.id"] for s in spans}
    assert len(instances) == 2
    assert {s.resource["service.name"] for s in spans} == {"gw-2"}
    # Each CLIENT span is the child of its request's SERVER span, from the same worker.
    by_id = {(s.trace_id, s.span_id): s for s in servers}
    for c in clients:
        server = by_id[(c.trace_id, c.parent_span_id)]
        assert server.resource["process.pid"] == c.resource["process.pid"]
        assert c.name == "chat sim-m"
    assert len({s.trace_id for s in servers}) == len(ids)  # one trace per request
