"""``/v1/embeddings`` calls are recorded like chat: a request-log line (operation
``embeddings``, usage, cost, deployment), the Prometheus families with
``gen_ai_operation_name="embeddings"``, and a row of the spend log (``GET /admin/spend``);
a refused call is recorded too. Driven by the official openai SDK."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from routeguard.analyze.logs import read_log
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from scrapes import MASTER, scrape, value

PRICE = 20.0  # dollars per million input tokens


def _cfg(url: str, log: Path) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "sk-upstream-embeddings"}
    return {
        "model_list": [{**dep, "model_name": "emb", "model": "text-embedding-3-small",
                        "id": "emb-1", "input_cost_per_mtok": PRICE}],
        "router_settings": {"num_retries": 0},
        "server": {"master_key": MASTER},
        "observability": {"request_log": str(log)},
    }  # fmt: skip


def test_embeddings_reach_the_log_the_metrics_and_the_spend_log(
    mock: MockServer, tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    app = create_app(Gateway.from_config(_cfg(mock.url, log)))
    with ServerThread(app) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c:
            raw = c.embeddings.with_raw_response.create(model="emb", input=["a cat", "a dog"])
            out = raw.parse()
            rid = raw.headers["x-routeguard-request-id"]
            with pytest.raises(openai.NotFoundError):
                c.embeddings.create(model="nope", input="x")
        samples = scrape(srv.url)
        app.spend.flush()
        req = urllib.request.Request(
            srv.url + "/admin/spend?group_by=model", headers={"authorization": f"Bearer {MASTER}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            spend = json.loads(r.read())
        assert app.request_log is not None
        app.request_log.flush()
    tokens = out.usage.prompt_tokens
    assert tokens > 0
    cost = tokens * PRICE / 1e6

    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 2
    ok = next(x for x in lines if x["request_id"] == rid)
    assert ok["operation"] == "embeddings"
    assert ok["endpoint"] == "/v1/embeddings"
    assert ok["status"] == 200 and ok["deployment"] == "emb-1" and ok["model"] == "emb"
    assert ok["usage"]["prompt_tokens"] == tokens
    assert ok["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert ok["response"] == {"embeddings": 2}
    assert "input" not in ok["request"]  # no content without log_content
    refused = next(x for x in lines if x["request_id"] != rid)
    assert refused["status"] == 404 and refused["error"]["code"] == "model_not_found"

    genai = {"gen_ai_operation_name": "embeddings",
             "gen_ai_request_model": "text-embedding-3-small"}  # fmt: skip
    assert value(samples, "gen_ai_client_token_usage_sum", gen_ai_token_type="input",
                 **genai) == tokens  # fmt: skip
    assert value(samples, "gen_ai_client_token_usage_count", gen_ai_token_type="output") == 0
    assert value(samples, "gen_ai_client_operation_duration_seconds_count", **genai) == 1
    assert value(samples, "gen_ai_client_operation_duration_seconds_count",
                 gen_ai_operation_name="chat") == 0  # fmt: skip
    assert value(samples, "routeguard_requests_total", route="emb", alias="emb",
                 status="200") == 1  # fmt: skip
    assert value(samples, "routeguard_requests_total", route="other", status="404") == 1
    assert value(samples, "routeguard_cost_usd_total", route="emb") == pytest.approx(cost)
    assert value(samples, "routeguard_overhead_seconds_count", route="emb") == 1

    rows = {row["group"]: row for row in spend["data"]}
    assert rows["emb"]["requests"] == 1
    assert rows["emb"]["prompt_tokens"] == tokens
    assert rows["emb"]["cost_usd"] == pytest.approx(cost, rel=1e-6)
    assert rows[None]["errors"] == 1  # the refusal, which named no served model


def test_embeddings_input_is_logged_only_with_log_content(mock: MockServer, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    cfg = _cfg(mock.url, log)
    cfg["observability"]["log_content"] = True
    app = create_app(Gateway.from_config(cfg))
    with ServerThread(app) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c:
            c.embeddings.create(model="emb", input="my key is sk-abcdefghijklmnop123")
        assert app.request_log is not None
        app.request_log.flush()
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert line["request"]["input"] == "my key is sk-***"
    parsed = read_log(log)  # `routeguard analyze` skips it: no messages to analyse
    assert (parsed.records, parsed.skipped) == ([], 1)


def test_an_embeddings_call_is_traced_as_one(mock: MockServer, tmp_path: Path) -> None:
    from otlp_receiver import OtlpReceiver

    with OtlpReceiver() as receiver:
        cfg = _cfg(mock.url, tmp_path / "requests.jsonl")
        cfg["observability"]["tracing"] = {"endpoint": receiver.url}
        app = create_app(Gateway.from_config(cfg))
        assert app.tracing is not None
        with ServerThread(app) as srv:
            with openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c:
                out = c.embeddings.create(model="emb", input="a cat")
            app.tracing.provider.force_flush()
            got = receiver.wait_for(lambda s: len(s) >= 2)
    server = next(s for s in got if s.kind == 2)
    client = next(s for s in got if s.kind == 3)
    assert server.name == "embeddings emb"
    assert server.attributes["gen_ai.operation.name"] == "embeddings"
    assert server.attributes["routeguard.usage.input_tokens"] == out.usage.prompt_tokens
    assert server.attributes["routeguard.cost_usd"] == pytest.approx(
        out.usage.prompt_tokens * PRICE / 1e6
    )
    assert client.name == "embeddings text-embedding-3-small"
    assert client.parent_span_id == server.span_id
