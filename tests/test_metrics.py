"""Prometheus ``/metrics``: the counters match traffic sent through the official openai SDK
(plain, stream, cache hit, fallback, an upstream failure, a budget's 429, an unknown model),
the scrape-time gauges (budget spend and limit, open circuits), who may scrape, the
``metrics: false`` switch, and the liveness and readiness probes."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedders import WordsEmbedder
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from scrapes import MASTER, scrape, value

PRICE_IN, PRICE_OUT = 1.0, 2.0  # $ per million tokens


def _cfg(url: str, **observability: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "sk-upstream-metrics",
           "input_cost_per_mtok": PRICE_IN, "output_cost_per_mtok": PRICE_OUT}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "m", "model": "sim-m", "id": "m-1"},
            {**dep, "model_name": "cached", "model": "sim-cached", "id": "cached-1"},
            {**dep, "model_name": "broken", "model": "error-500", "id": "broken-1"},
            {**dep, "model_name": "down", "model": "error-503", "id": "down-1"},
        ],
        "fallbacks": {"down": ["m"]},
        "router_settings": {"allowed_fails": 1, "num_retries": 0, "retry_backoff": 0.0},
        "routes": {
            "cached": {"cache": {"enabled": True, "threshold": 0.8}},
            "auto": {
                "mode": "routed",
                "default": "m",
                "rules": [{"name": "long", "min_tokens": 40, "target": "m"}],
            },
        },
        "budgets": [{"name": "acme", "limit": 5.0}],
        "server": {"master_key": MASTER},
        "observability": observability,
    }


def _cost(usage: Any) -> float:
    return (usage.prompt_tokens * PRICE_IN + usage.completion_tokens * PRICE_OUT) / 1e6


def test_counters_match_traffic_through_the_openai_sdk(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    poor_key, _ = gw.keys.create(KeySpec(name="poor", max_budget=0.000001))
    acme_key, _ = gw.keys.create(KeySpec(name="acme-app", team="acme"))
    msgs: Any = [{"role": "user", "content": "what is the tallest mountain"}]
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c,
    ):
        before = scrape(srv.url)
        assert value(before, "routeguard_requests_total") == 0
        plain = c.chat.completions.create(model="m", messages=msgs)
        chunks = list(
            c.chat.completions.create(
                model="m", messages=msgs, stream=True, stream_options={"include_usage": True}
            )
        )
        stream_usage = next(ch.usage for ch in chunks if ch.usage is not None)
        miss = c.chat.completions.with_raw_response.create(model="cached", messages=msgs)
        hit = c.chat.completions.with_raw_response.create(model="cached", messages=msgs)
        assert (miss.headers["x-routeguard-cache"], hit.headers["x-routeguard-cache"]) == (
            "miss",
            "hit",
        )
        with pytest.raises(openai.APIStatusError) as broken:
            c.chat.completions.create(model="broken", messages=msgs)
        assert broken.value.status_code == 503
        down = c.chat.completions.with_raw_response.create(model="down", messages=msgs)
        assert down.headers["x-routeguard-attempts"] == "2"
        auto = c.chat.completions.create(model="auto", messages=msgs)
        long_msgs: Any = [{"role": "user", "content": "explain this please " * 30}]
        auto_long = c.chat.completions.create(model="auto", messages=long_msgs)
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="no-such-model", messages=msgs)
        with (
            openai.OpenAI(base_url=srv.url + "/v1", api_key=poor_key, max_retries=0) as poor,
            pytest.raises(openai.RateLimitError) as refused,
        ):
            poor.chat.completions.create(model="m", messages=msgs)
        assert refused.value.code == "budget_exceeded"
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=acme_key, max_retries=0) as acme:
            team = acme.chat.completions.create(model="m", messages=msgs)
        s = scrape(srv.url)
        again = scrape(srv.url)

    assert s == {k: v for k, v in again.items() if k in s}  # a scrape changes no counter
    req = "routeguard_requests_total"
    assert value(s, req, route="m", alias="m", status="200") == 3
    assert value(s, req, route="cached", alias="cached", status="200") == 2
    assert value(s, req, route="broken", alias="", status="503") == 1
    assert value(s, req, route="down", alias="m", status="200") == 1
    assert value(s, req, route="auto", alias="m", status="200") == 2
    assert value(s, req, route="other", alias="", status="404") == 1
    assert value(s, req, route="m", alias="", status="429") == 1
    assert value(s, req) == 11
    assert value(s, "routeguard_budget_refusals_total", route="m", code="budget_exceeded") == 1
    assert value(s, "routeguard_rate_limited_total") == 0

    cache = "routeguard_cache_requests_total"
    assert value(s, cache, route="cached", result="miss") == 1
    assert value(s, cache, route="cached", result="hit") == 1
    assert value(s, cache, route="m", result="off") == 3
    hit_usage = hit.parse().usage
    assert value(s, "routeguard_cost_saved_usd_total", layer="cache") == pytest.approx(
        _cost(hit_usage)
    )
    spent_on_m = _cost(plain.usage) + _cost(stream_usage) + _cost(team.usage)
    spent_on_m += _cost(down.parse().usage) + _cost(auto.usage) + _cost(auto_long.usage)
    assert value(s, "routeguard_cost_usd_total", alias="m") == pytest.approx(spent_on_m)
    assert value(s, "routeguard_cost_usd_total", alias="cached") == pytest.approx(
        _cost(miss.parse().usage)
    )

    decisions = "routeguard_route_decisions_total"
    assert value(s, decisions, route="auto", reason_kind="default", target="m") == 1
    assert value(s, decisions, route="auto", reason_kind="rule", target="m") == 1
    assert value(s, "routeguard_fallbacks_total", route="down") == 1
    assert value(s, "routeguard_fallbacks_total") == 1
    assert value(s, "routeguard_overhead_seconds_count", route="m") == 3
    assert value(s, "routeguard_overhead_seconds_count") == 8  # every served request

    genai = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai"}
    usage = "gen_ai_client_token_usage"
    on_m = {**genai, "gen_ai_request_model": "sim-m"}
    assert value(s, usage + "_count", **on_m, gen_ai_token_type="input") == 6
    assert value(s, usage + "_count", **on_m, gen_ai_token_type="output") == 6
    prompts = [plain.usage, stream_usage, team.usage, down.parse().usage, auto.usage,
               auto_long.usage]  # fmt: skip
    assert value(s, usage + "_sum", **on_m, gen_ai_token_type="input") == sum(
        u.prompt_tokens for u in prompts
    )
    assert value(s, usage + "_count", gen_ai_request_model="sim-cached") == 2  # the miss only
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert value(s, duration, **on_m, error_type="") == 6
    assert value(s, duration, gen_ai_response_model="sim-m") == 5  # not known for the stream
    assert value(s, duration, gen_ai_request_model="error-500",
                 error_type="upstream_unavailable") == 1  # fmt: skip
    assert value(s, "gen_ai_server_time_to_first_token_seconds_count", **on_m) == 1

    circuit = "routeguard_deployment_circuit_open"
    assert value(s, circuit, deployment="down-1") == 1
    assert value(s, circuit, deployment="broken-1") == 1
    assert value(s, circuit, deployment="m-1") == 0
    assert value(s, "routeguard_budget_limit_usd", account="acme") == 5.0
    assert value(s, "routeguard_budget_spend_usd", account="acme") == pytest.approx(
        _cost(team.usage), abs=1e-6
    )
    labels = {k for (_, ls) in s for k, _ in ls}
    assert not labels & {"user", "key", "key_id", "prompt", "end_user"}


def _get(url: str, key: str | None = None) -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_need_the_master_key_unless_public(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    key, _ = gw.keys.create(KeySpec(name="app"))
    with ServerThread(create_app(gw)) as srv:
        assert _get(srv.url + "/metrics")[0] == 401
        assert _get(srv.url + "/metrics", "sk-wrong")[0] == 401
        status, body = _get(srv.url + "/metrics", key)
        assert status == 403 and b"metrics_public" in body
        assert _get(srv.url + "/metrics", MASTER)[0] == 200
    public = Gateway.from_config(_cfg(mock.url, metrics_public=True), embedder=WordsEmbedder())
    with ServerThread(create_app(public)) as srv:
        status, body = _get(srv.url + "/metrics")
        assert status == 200 and b"routeguard_requests_total" in body


def test_metrics_off_switch(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url, metrics=False), embedder=WordsEmbedder())
    with ServerThread(create_app(gw)) as srv:
        assert _get(srv.url + "/metrics", MASTER)[0] == 404
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c:
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def test_liveness_and_readiness_in_memory_mode(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    with ServerThread(create_app(gw)) as srv:
        assert _get(srv.url + "/health/liveness") == (200, b'{"status":"ok"}')
        status, body = _get(srv.url + "/health/readiness")
        assert status == 200
        assert json.loads(body) == {"status": "ready", "checks": {"models": "ok"}}
        assert _get(srv.url + "/health")[0] == 200


def _ready(url: str) -> tuple[int, dict[str, Any]]:
    status, body = _get(url + "/health/readiness")
    return status, json.loads(body)


def _wait_for(url: str, status: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got, body = _ready(url)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"readiness stayed {got}: {body}"
        time.sleep(0.1)


def test_readiness_follows_the_redis_stores(mock: MockServer, redis_process: Any) -> None:
    cfg = _cfg(mock.url)
    cfg["cache"] = {"backend": "redis", "redis_url": redis_process.url,
                    "redis_prefix": "rg-ready-cache"}  # fmt: skip
    cfg["budget_settings"] = {"backend": "redis", "redis_url": redis_process.url}
    cfg["server"] = {"master_key": MASTER, "key_store": "redis", "redis_url": redis_process.url}
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    with ServerThread(create_app(gw)) as srv:
        status, body = _ready(srv.url)
        assert status == 200, body
        assert body["checks"] == {
            "models": "ok",
            "cache": "ok",
            "budget_store": "ok",
            "key_store": "ok",
        }
        redis_process.stop()
        body = _wait_for(srv.url, 503)
        assert body["status"] == "not ready"
        assert body["not_ready"] == ["budget_store", "cache", "key_store"]
        assert body["checks"]["models"] == "ok"
        assert all(body["checks"][n].startswith("unreachable") for n in body["not_ready"])
        assert _get(srv.url + "/health/liveness")[0] == 200
        # A scrape still answers while the budget store is down (no budget gauges then).
        assert scrape(srv.url) is not None
        redis_process.start()
        assert _wait_for(srv.url, 200)["status"] == "ready"


DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "routeguard.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _queried_metrics(dashboard: dict[str, Any]) -> set[str]:
    """The metric names the dashboard's queries (panels and variables) read."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    names: set[str] = set()
    for expr in exprs:
        bare = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
        bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)  # grouping labels
        bare = re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", bare)
        names |= set(re.findall(r"\b(?:routeguard|gen_ai)_[a-z_]+\b", bare))
    return names


def test_grafana_dashboard_queries_only_metrics_we_export(mock: MockServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = _queried_metrics(dashboard)
    assert len(queried) >= 15
    cfg = _cfg(mock.url)  # with a bounded route: its families are exported at scrape time
    cfg["model_list"].append({**cfg["model_list"][0], "model_name": "bounded", "id": "b-1"})
    cfg["routes"]["bounded"] = {"cache": {"enabled": True, "max_error_rate": 0.05}}
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    with ServerThread(create_app(gw)) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c:
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        status, body = _get(srv.url + "/metrics", MASTER)
    assert status == 200
    exported: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        exported |= {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
        exported |= {s.name for s in family.samples}
    assert queried <= exported, sorted(queried - exported)


def test_request_families_carry_the_api_operation(mock: MockServer) -> None:
    cfg = _cfg(mock.url)
    cfg["model_list"].append({"type": "openai", "api_base": mock.url + "/v1",
                              "api_key": "sk-upstream-metrics", "model_name": "emb",
                              "model": "text-embedding-3-small", "id": "emb-1",
                              "input_cost_per_mtok": PRICE_IN})  # fmt: skip
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    msgs: Any = [{"role": "user", "content": "name a river"}]
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c,
        anthropic.Anthropic(base_url=srv.url, api_key=MASTER, max_retries=0) as a,
    ):
        c.chat.completions.create(model="m", messages=msgs)
        c.completions.create(model="m", prompt="name a river", max_tokens=8)
        c.completions.create(model="m", prompt="name a lake", max_tokens=8)
        c.responses.create(model="m", input="name a river")
        a.messages.create(model="m", max_tokens=16, messages=msgs)
        c.embeddings.create(model="emb", input="a river")
        with pytest.raises(openai.NotFoundError):
            c.embeddings.create(model="nope", input="x")
        s = scrape(srv.url)
    req = "routeguard_requests_total"
    served = {"chat": 1, "completions": 2, "responses": 1, "messages": 1, "embeddings": 1}
    for operation, n in served.items():
        route = "emb" if operation == "embeddings" else "m"
        assert value(s, req, operation=operation, route=route, status="200") == n, operation
        assert value(s, "routeguard_overhead_seconds_count", operation=operation) == n
        assert value(s, "routeguard_cost_usd_total", operation=operation, route=route) > 0
    assert value(s, req, operation="embeddings", route="other", status="404") == 1
    assert value(s, req) == sum(served.values()) + 1


async def test_recording_is_batched_on_a_loop_and_a_bad_record_holds_back_no_other(
    mock: MockServer,
) -> None:
    import asyncio

    from routeguard.observe.requestlog import Trace
    from routeguard.server.metrics import FLUSH_S, Metrics

    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    try:
        metrics = Metrics(gw)

        def count() -> float:
            return sum(
                s.value
                for f in metrics.registry.collect()
                if f.name == "routeguard_requests"
                for s in f.samples
                if s.name == "routeguard_requests_total"
            )

        def trace(request: Any) -> Trace:
            t = Trace("req_x", time.time(), time.perf_counter())
            t.request = request
            return t

        metrics.record(trace({"model": "m"}))
        metrics.record(trace(42))  # not a mapping: its record fails
        metrics.record(trace({"model": "m"}))
        assert count() == 0  # queued, not yet applied
        await asyncio.sleep(FLUSH_S * 2)
        assert count() == 2  # applied by the loop's timer, the bad one skipped
        metrics.record(trace({"model": "m"}))
        metrics.flush()
        assert count() == 3
    finally:
        await gw.aclose()


async def test_each_flush_applies_what_its_own_batch_touched(mock: MockServer) -> None:
    """A flush applies only the label sets its batch touched (not every one ever seen);
    one touched again in a later batch is applied again, one left out keeps its value."""
    from routeguard.observe.requestlog import Trace
    from routeguard.server.metrics import Metrics

    gw = Gateway.from_config(_cfg(mock.url), embedder=WordsEmbedder())
    metrics = Metrics(gw)

    def count(route: str) -> float:
        return sum(
            s.value
            for f in metrics.registry.collect()
            if f.name == "routeguard_requests"
            for s in f.samples
            if s.name == "routeguard_requests_total" and s.labels.get("route") == route
        )

    def record(route: str) -> None:
        t = Trace("req_x", time.time(), time.perf_counter())
        t.request = {"model": route}
        metrics.record(t)  # queued on this loop until the flush

    try:
        for batch in (["m", "m", "cached"], ["m"], ["cached", "cached"], [], ["m"]):
            for route in batch:
                record(route)
            assert len(metrics._pending) == len(batch)
            metrics.flush()
        assert (count("m"), count("cached")) == (4, 3)
    finally:
        await gw.aclose()


def test_observations_applied_in_bulk_read_as_one_by_one() -> None:
    """A flush applies a histogram's observations bucket by bucket and a counter's increments
    at once (through prometheus_client's own values): the exposition reads exactly as
    ``observe`` and ``inc`` one by one give, bounds, infinities, negatives and NaN included."""
    import math

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from routeguard.server.metrics import _Sum, _Tally

    observed = [0.0, 0.005, 0.0051, 0.1, 1.0, 7.5, 2.5e3, -3.0, math.inf, -math.inf, 0.25]
    registry = CollectorRegistry()
    buckets = (0.005, 0.1, 1.0, 10.0)
    one = Histogram("one", "h", ["k"], registry=registry, buckets=buckets)
    bulk = Histogram("bulk", "h", ["k"], registry=registry, buckets=buckets)
    counted = Counter("counted", "c", ["k"], registry=registry)
    summed = Counter("summed", "c", ["k"], registry=registry)
    tally, total = _Tally(bulk.labels("x")), _Sum(summed.labels("x"))
    for v in observed:
        one.labels("x").observe(v)
        tally.observe(v)
        counted.labels("x").inc(abs(v) if math.isfinite(v) else 1)
        total.inc(abs(v) if math.isfinite(v) else 1)
    tally.apply()
    total.apply()
    tally.apply()  # nothing new: nothing added
    one.labels("y").observe(float("nan"))
    nan = _Tally(bulk.labels("y"))
    nan.observe(float("nan"))
    nan.apply()
    lines = [ln for ln in generate_latest(registry).decode().splitlines()
             if not ln.startswith("#") and "_created" not in ln]  # fmt: skip
    ones = sorted(ln.removeprefix("one") for ln in lines if ln.startswith("one"))
    bulks = sorted(ln.removeprefix("bulk") for ln in lines if ln.startswith("bulk"))
    assert ones == bulks and len(ones) == 2 * (len(buckets) + 1 + 2)
    counts = [ln.removeprefix("counted") for ln in lines if ln.startswith("counted")]
    sums = [ln.removeprefix("summed") for ln in lines if ln.startswith("summed")]
    assert counts == sums and counts
