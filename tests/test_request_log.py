"""The request log: one JSON line per request through the proxy, in the format
``routeguard analyze`` reads, with the request id the client saw, usage, cost, the latency
split, the cache and route results, and never a key; content only when asked for; size
rotation that stays whole under several writing processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from routeguard.analyze.logs import read_log
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.observe.requestlog import RequestLog
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-requestlog"
UPSTREAM_KEY = "sk-upstream-secret-requestlog-123456"
PROMPT = "what is the capital of France"


def _cfg(url: str, log: Path, content: bool) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": UPSTREAM_KEY,
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    return {
        "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
        "server": {"master_key": MASTER},
        "observability": {"request_log": str(log), "log_content": content},
    }


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _traffic(srv: ServerThread, key: str) -> list[str]:
    """A plain call, a stream, an Anthropic call and an error; the request ids seen."""
    ids = []
    with openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0) as c:
        msgs: Any = [{"role": "user", "content": PROMPT}]
        raw = c.chat.completions.with_raw_response.create(model="m", messages=msgs)
        ids.append(raw.headers["x-routeguard-request-id"])
        assert raw.parse().choices[0].message.content
        with c.chat.completions.with_streaming_response.create(
            model="m", messages=msgs, stream=True, stream_options={"include_usage": True}
        ) as resp:
            ids.append(resp.headers["x-routeguard-request-id"])
            assert "".join(resp.iter_lines())
        with pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model="nope", messages=msgs)
        ids.append(info.value.response.headers["x-routeguard-request-id"])
    with anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0) as ant:
        araw = ant.messages.with_raw_response.create(
            model="m", max_tokens=20, messages=[{"role": "user", "content": PROMPT}]
        )
        ids.append(araw.headers["x-routeguard-request-id"])
    return ids


def test_every_request_is_logged_with_what_served_it(mock: MockServer, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    gw = Gateway.from_config(_cfg(mock.url, log, content=True))
    secret, rec = gw.keys.create(KeySpec(name="app", team="search", org="acme"))
    app = create_app(gw)
    with ServerThread(app) as srv:
        ids = _traffic(srv, secret)
    assert app.request_log is not None
    app.request_log.flush()
    lines = _lines(log)
    # One line each with the ids the clients saw. Lines are written as requests finish, so
    # their order follows completion, which a loaded machine may interleave.
    by_id = {x["request_id"]: x for x in lines}
    assert len(lines) == len(ids) and set(by_id) == set(ids)
    plain, stream, error, messages = (by_id[i] for i in ids)
    for x in (plain, stream, messages):
        assert x["status"] == 200 and x["model"] == "m" and x["deployment"] == "m#0"
        assert x["usage"]["prompt_tokens"] > 0 and x["usage"]["completion_tokens"] > 0
        assert x["cost_usd"] > 0 and x["cache"]["result"] == "off"
        assert 0 <= x["overhead_ms"] <= x["latency_ms"] and x["upstream_ms"] <= x["latency_ms"]
        assert x["metadata"]["key_id"] == rec.key_id and x["metadata"]["team"] == "search"
    assert stream["stream"] is True and 0 < stream["ttft_ms"] <= stream["latency_ms"]
    assert plain["response"]["finish_reasons"] == ["stop"]
    assert error["status"] == 404 and error["error"]["code"] == "model_not_found"
    assert messages["endpoint"] == "/v1/messages"
    text = log.read_text()
    for never in (secret, MASTER, UPSTREAM_KEY):
        assert never not in text
    # `routeguard analyze` reads it as is: the served requests, with their routes and usage.
    parsed = read_log(log)
    assert [r.route for r in parsed.records] == [x["route"] for x in lines]
    assert sorted(r.route for r in parsed.records) == ["m", "m", "m", "nope"]
    first = parsed.records[lines.index(plain)]
    assert first.prompt == PROMPT and first.prompt_tokens == plain["usage"]["prompt_tokens"]


def test_content_stays_out_unless_asked_for(mock: MockServer, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    gw = Gateway.from_config(_cfg(mock.url, log, content=False))
    app = create_app(gw)
    with (
        ServerThread(app) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c,
    ):
        answer = (
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": PROMPT}])
            .choices[0]
            .message.content
        )
    assert app.request_log is not None
    app.request_log.flush()
    (line,) = _lines(log)
    assert line["usage"]["total_tokens"] > 0 and line["request"]["model"] == "m"
    assert PROMPT not in log.read_text() and (answer or "") not in log.read_text()


def test_rotation_keeps_whole_lines_and_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    rl = RequestLog(path, max_bytes=2_000, backups=2)
    for i in range(200):
        rl.record({"i": i, "pad": "x" * 50})
        rl.flush()
    rl.close()
    files = [path, path.with_name("r.jsonl.1"), path.with_name("r.jsonl.2")]
    assert all(f.exists() for f in files) and not path.with_name("r.jsonl.3").exists()
    seen = [json.loads(x)["i"] for f in reversed(files) for x in f.read_text().splitlines()]
    assert seen == list(range(seen[0], 200))  # the newest, contiguous, none torn
    assert all(f.stat().st_size <= 2_000 for f in files)


def test_two_processes_share_one_log(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from routeguard.observe.requestlog import RequestLog
        rl = RequestLog({str(path)!r}, max_bytes=20_000, backups=1000)
        for i in range(500):
            rl.record({{"writer": sys.argv[1], "i": i, "pad": "y" * 40}})
            if i % 7 == 0:
                rl.flush()
        rl.close()
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, w]) for w in ("a", "b")]
    assert [p.wait(120) for p in procs] == [0, 0]
    lines = [
        json.loads(x) for f in tmp_path.glob("shared.jsonl*") if not f.name.endswith(".lock")
        for x in f.read_text().splitlines()
    ]  # fmt: skip
    for w in ("a", "b"):
        assert sorted(x["i"] for x in lines if x["writer"] == w) == list(range(500))


def test_a_full_queue_drops_lines_and_flush_cuts_the_linger_short(tmp_path: Path) -> None:
    from routeguard.observe.requestlog import Trace

    log = RequestLog(tmp_path / "r.jsonl", queue_size=2, linger=30.0)
    try:
        for i in range(5):
            trace = Trace(f"req_{i}", 1_700_000_000.0, 0.0)
            trace.request = {"model": "m", "messages": []}
            log.record_trace(trace, "/v1/chat/completions", now=0.25)
        assert log.dropped == 3
        log.flush(timeout=10)  # far shorter than the linger: flush does not wait for it
        lines = _lines(tmp_path / "r.jsonl")
    finally:
        log.close()
    assert [x["request_id"] for x in lines] == ["req_0", "req_1"]
    assert lines[0]["latency_ms"] == 250.0  # built by the writer, at the time it was queued
    assert lines[0]["timestamp"].startswith("2023-11-14T22:13:20")


def test_a_secret_registered_after_a_name_was_logged_is_masked_from_then_on() -> None:
    from routeguard import scrub

    name = "model-xq7kd9wplm"
    assert scrub.scrub_name(name) == name  # memoised
    scrub.remember("xq7kd9wplm")
    try:
        assert scrub.scrub_name(name) == "model-***"
    finally:
        scrub.forget("xq7kd9wplm")
    assert scrub.scrub_name(name) == name
