"""The dashboard's data endpoint, ``GET /ui/api/summary``, on its own: every figure checked
against the traffic sent through the openai SDK, the proxy's other APIs (``/admin/spend``,
``/metrics``) and the budget periods; who may read it; its static files (shipped in the
package, nothing fetched from elsewhere); the spend-log queries under it; and, with
``serve --workers 2``, the same totals whichever worker answers."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import ServeConfig
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.observe.spend import SpendRecords
from routeguard.server import create_app
from routeguard.server.dashboard import _FILES, _quantile
from routeguard.server.thread import ServerThread
from scrapes import scrape, value

MASTER = "sk-master-dashboard-api"
CHEAP, STRONG = (1.0, 2.0), (10.0, 30.0)  # $ per million tokens: input, output
POLICY = """
rules:
  - id: no-us-transfers
    effect: deny
    action: {tool: send_money}
    when: {args: {$.recipient: {glob: "US*"}}}
  - id: pay
    effect: allow
    action: {tool: send_money}
  - id: wires-need-a-human
    effect: require_approval
    action: {tool: wire}
"""


def _cfg(url: str, tmp_path: Path, **server: Any) -> dict[str, Any]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "sk-upstream-dash"}
    cheap = {**dep, "input_cost_per_mtok": CHEAP[0], "output_cost_per_mtok": CHEAP[1]}
    strong = {**dep, "input_cost_per_mtok": STRONG[0], "output_cost_per_mtok": STRONG[1]}
    return {
        "model_list": [
            {**cheap, "model_name": "m", "model": "sim-m", "id": "m-1"},
            {**strong, "model_name": "big", "model": "sim-big", "id": "big-1"},
            {**cheap, "model_name": "cached", "model": "sim-cached", "id": "cached-1"},
            {**cheap, "model_name": "broken", "model": "error-500", "id": "broken-1"},
            {**cheap, "model_name": "down", "model": "error-503", "id": "down-1"},
        ],
        "fallbacks": {"down": ["m"]},
        "router_settings": {"allowed_fails": 1, "num_retries": 0, "retry_backoff": 0.0,
                            "cooldown_time": 600},
        "routes": {
            "cached": {"cache": {"enabled": True, "threshold": 0.8}},
            "auto": {"mode": "routed", "cheap": "m", "strong": "big", "strong_share": 0.5,
                     "rules": [{"name": "proofs", "regex": "(?i)\\bprove\\b", "target": "strong"}]},
            "pay": {"mode": "pinned", "target": "m"},
        },
        "enforce": {"policy": str(tmp_path / "policy.yaml")},
        "budgets": [
            {"name": "acme", "limit": 5.0, "soft_limit": 4.0, "period": "monthly"},
            {"name": "search", "parent": "acme", "limit": 1.0, "period": "daily"},
        ],
        "server": {"master_key": MASTER, **server},
    }  # fmt: skip


def _get(url: str, path: str, key: str | None = MASTER) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url + path, headers={"connection": "close"})
    if key is not None:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            headers = {k.lower(): v for k, v in r.headers.items()}
            ctype = headers.get("content-type", "")
            return r.status, headers, json.loads(body) if "json" in ctype else body
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def _post(url: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(url + path, data=json.dumps(body or {}).encode(), method="POST")
    req.add_header("authorization", f"Bearer {key}")
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _cost(usage: Any, prices: tuple[float, float]) -> float:
    return (usage.prompt_tokens * prices[0] + usage.completion_tokens * prices[1]) / 1e6


def _pay(recipient: str) -> Any:
    schema = {"type": "object", "properties": {"recipient": {"type": "string", "const": recipient}}}
    return [{"type": "function", "function": {"name": "send_money", "parameters": schema}}]


def test_summary_matches_the_traffic(mock: MockServer, tmp_path: Path) -> None:
    gw = Gateway.from_config(_cfg(mock.url, tmp_path))  # MiniLM: the learned route needs it
    search_key, search = gw.keys.create(KeySpec(name="search-bot", team="search", org="acme"))
    admin_key, _ = gw.keys.create(KeySpec(name="ops", admin=True))
    msgs: Any = [{"role": "user", "content": "what is the tallest mountain"}]
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as c,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=search_key, max_retries=0) as s,
    ):
        cost = {"search": 0.0, "master": 0.0}
        served: dict[str, int] = {}
        for prompt in ("hello there", "prove that 2 is prime", "list three colours"):
            raw = s.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}]
            )
            alias = raw.headers["x-routeguard-model"]
            served[alias] = served.get(alias, 0) + 1
            cost["search"] += _cost(raw.parse().usage, STRONG if alias == "big" else CHEAP)
        miss = c.chat.completions.create(model="cached", messages=msgs)
        hit = c.chat.completions.with_raw_response.create(model="cached", messages=msgs)
        assert hit.headers["x-routeguard-cache"] == "hit"
        cost["master"] += _cost(miss.usage, CHEAP)
        down = c.chat.completions.create(model="down", messages=msgs)
        cost["master"] += _cost(down.usage, CHEAP)
        with pytest.raises(openai.APIStatusError):
            c.chat.completions.create(model="broken", messages=msgs)
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="no-such-model", messages=msgs)
        denied = s.chat.completions.create(model="pay", messages=msgs, tools=_pay("US1"))
        assert not denied.choices[0].message.tool_calls
        cost["search"] += _cost(denied.usage, CHEAP)
        sent, failed = 3 + 2 + 1 + 2 + 1, 2

        status, headers, d = _get(srv.url, "/ui/api/summary?window=3600", key=admin_key)
        assert status == 200 and headers["cache-control"] == "no-store"
        _, _, spend = _get(srv.url, "/admin/spend?group_by=model")
        metrics = scrape(srv.url, MASTER)
        now = time.time()

    assert d["object"] == "dashboard.summary"
    w = d["window"]
    assert w["seconds"] == 3600 and w["end"] - w["start"] == pytest.approx(3600)
    assert w["start"] <= now - 3600 + w["bucket_seconds"] and w["end"] >= now - 5
    assert d["scope"] == {"spend_log": "worker", "metrics": "worker", "worker_pid": os.getpid(),
                          "approvals": "worker"}  # fmt: skip

    t = d["totals"]
    total = cost["search"] + cost["master"]
    assert t["requests"] == sent == sum(r["requests"] for r in spend["data"])
    assert t["errors"] == failed and t["error_rate"] == pytest.approx(failed / sent)
    assert t["spend_usd"] == pytest.approx(total, rel=1e-9)
    assert t["spend_usd"] == pytest.approx(sum(r["cost_usd"] for r in spend["data"]), rel=1e-9)
    assert len(d["timeline"]) == 60
    assert sum(b["requests"] for b in d["timeline"]) == sent
    assert sum(b["errors"] for b in d["timeline"]) == failed

    by_key = {r["group"]: r for r in d["spend"]["key"]}
    assert by_key[search.key_id]["name"] == "search-bot"
    assert by_key[search.key_id]["requests"] == 4
    assert by_key[search.key_id]["cost_usd"] == pytest.approx(cost["search"], rel=1e-9)
    assert by_key[None]["cost_usd"] == pytest.approx(cost["master"], rel=1e-9)
    teams = {r["group"]: r["cost_usd"] for r in d["spend"]["team"]}
    assert teams["search"] == pytest.approx(cost["search"], rel=1e-9)
    assert {r["group"] for r in d["spend"]["org"]} == {"acme", None}
    models = {r["group"]: r["requests"] for r in d["spend"]["model"]}
    assert models["cached"] == 2 and models["m"] == served.get("m", 0) + 2

    budgets = {b["name"]: b for b in d["budgets"]}
    acme, team = budgets["acme"], budgets["search"]
    assert acme["limit_usd"] == 5.0 and acme["soft_limit_usd"] == 4.0
    assert acme["spent_usd"] == pytest.approx(cost["search"], rel=1e-6)  # the team's spend
    assert acme["used"] == pytest.approx(acme["spent_usd"] / 5.0)
    today = datetime.fromtimestamp(now, UTC)
    next_month = datetime(today.year + today.month // 12, today.month % 12 + 1, 1, tzinfo=UTC)
    assert acme["resets_at"] == next_month.timestamp()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp() + 86_400
    assert team["resets_at"] == midnight and team["parent"] == "acme"

    (cache,) = d["cache"]
    assert (cache["route"], cache["lookups"], cache["hits"]) == ("cached", 2, 1)
    assert cache["hit_rate"] == 0.5
    assert cache["saved_usd"] == pytest.approx(_cost(hit.parse().usage, CHEAP), rel=1e-9)
    assert t["saved_usd"] == cache["saved_usd"] and t["cache_hit_rate"] == 0.5

    routes = {r["route"]: r for r in d["routes"]}
    auto = routes["auto"]
    assert served.get("big", 0) >= 1  # the "prove" rule
    assert auto["strong"] == "big" and auto["strong_target"] == 0.5
    assert auto["strong_share"] == pytest.approx(served.get("big", 0) / 3)
    assert {m["model"]: m["requests"] for m in auto["models"]} == served
    assert routes["down"]["models"] == [{"model": "m", "requests": 1, "share": 1.0}]
    assert "no-such-model" not in routes  # refused before a model was chosen

    layers = {r["layer"]: r for r in d["latency"]}
    assert layers["end to end"]["count"] == sent
    assert layers["cache hits"]["count"] == 1
    assert layers["upstream calls"]["count"] == sent - failed - 1
    for row in d["latency"]:
        assert row["p50_ms"] is not None and 0 <= row["p50_ms"] <= row["p95_ms"]
    assert layers["gateway overhead"]["source"] == "metrics"
    assert layers["gateway overhead"]["count"] == value(
        metrics, "routeguard_overhead_seconds_count"
    )

    assert d["fallbacks"] == {"total": 1, "by_route": [{"route": "down", "count": 1}]}
    open_now = {c["deployment"] for c in d["circuits"] if c["open"]}
    scraped = {dep for dep in ("m-1", "big-1", "cached-1", "broken-1", "down-1")
               if value(metrics, "routeguard_deployment_circuit_open", deployment=dep)}  # fmt: skip
    assert open_now == scraped == {"broken-1", "down-1"}
    assert all(c["until"] > now for c in d["circuits"] if c["open"])

    e = d["enforcement"]
    assert e["denied"] == 1 and e["allowed"] == 0
    assert e["decisions"] == [
        {"effect": "deny", "rule": "no-us-transfers", "outcome": "denied", "count": 1.0}
    ]
    assert d["approvals"] == []


def test_who_may_read_it_and_what_it_serves(mock: MockServer, tmp_path: Path) -> None:
    gw = Gateway.from_config(_cfg(mock.url, tmp_path))
    plain_key, _ = gw.keys.create(KeySpec(name="app"))
    admin_key, _ = gw.keys.create(KeySpec(name="ops", admin=True))
    with ServerThread(create_app(gw)) as srv:
        # The files hold no data: no key needed, and a strict Content-Security-Policy.
        status, headers, page = _get(srv.url, "/ui", key=None)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert b'data-testid="requests-total"' in page and b'data-testid="spend-total"' in page
        for path, ctype in (("/ui/", "text/html"), ("/ui/app.js", "text/javascript"),
                            ("/ui/app.css", "text/css")):  # fmt: skip
            status, headers, _ = _get(srv.url, path, key=None)
            assert status == 200 and headers["content-type"].startswith(ctype)
        status, _, err = _get(srv.url, "/ui/secrets.txt", key=None)
        assert status == 404 and err["error"]["code"] == "not_found"
        assert _post(srv.url, "/ui", MASTER)[0] == 405

        api = "/ui/api/summary"
        status, headers, err = _get(srv.url, api, key=None)
        assert status == 401 and "missing API key" in err["error"]["message"]
        status, _, err = _get(srv.url, api, key=plain_key)
        assert status == 403 and "admin virtual key" in err["error"]["message"]
        assert _get(srv.url, api, key=admin_key)[0] == 200
        status, _, body = _get(srv.url, api)  # the master key
        assert status == 200 and body["window"]["seconds"] == 3600  # the default window
        for bad in ("abc", "10", str(10**9), "-5"):
            status, _, err = _get(srv.url, f"{api}?window={bad}")
            assert status == 400 and err["error"]["param"] == "window"
        assert _get(srv.url, "/ui/api/nothing")[0] == 404
        status, err = _post(srv.url, "/ui/api/approvals/apr-none/approve", admin_key)
        assert status == 404 and "no pending approval" in err["error"]["message"]
        status, err = _post(srv.url, "/ui/api/approvals/apr-none/approve", plain_key)
        assert status == 403
        # Key management stays with the master key: an admin key is for the dashboard.
        assert _get(srv.url, "/admin/keys", key=admin_key)[0] == 403


def test_an_open_proxy_has_no_dashboard_data(mock: MockServer, tmp_path: Path) -> None:
    cfg = _cfg(mock.url, tmp_path)
    del cfg["server"]
    with ServerThread(create_app(Gateway.from_config(cfg))) as srv:
        assert _get(srv.url, "/ui", key=None)[0] == 200
        status, _, err = _get(srv.url, "/ui/api/summary", key=None)
        assert status == 403 and "server.master_key" in err["error"]["message"]


def test_the_files_ship_in_the_package_and_load_nothing_from_elsewhere() -> None:
    ui = resources.files("routeguard.server").joinpath("ui")
    names = {entry[0] for entry in _FILES.values()}
    assert names == {p.name for p in ui.iterdir()}  # every file served, none forgotten
    for name in names:
        text = ui.joinpath(name).read_text()
        # The one URL allowed is the SVG namespace name, which is never fetched.
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    html = ui.joinpath("index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/ui/app.js" defer>']
    assert " style=" not in html and "<style" not in html  # the CSP allows no inline style
    assert "innerHTML" not in ui.joinpath("app.js").read_text()  # values go in as text


def test_spend_log_queries_under_the_dashboard(tmp_path: Path) -> None:
    records = SpendRecords(tmp_path / "spend.db")
    t0 = 1_800_000_000.0
    rows = [  # (offset s, route, model, deployment, cache, status, latency ms, cost)
        (5, "auto", "m", "m-1", "miss", 200, 10.0, 0.5),
        (15, "auto", "big", "big-1", "miss", 200, 30.0, 2.0),
        (16, "faq", "m", "m-1", "hit", 200, 1.0, 0.0),
        (25, "faq", None, None, None, 429, 0.5, None),
        (99, "auto", "m", "m-1", "miss", 200, 20.0, 0.25),  # outside [t0, t0 + 30)
    ]
    for off, route, model, dep, cache, status, latency, cost in rows:
        records.record({"ts": t0 + off, "route": route, "model": model, "deployment": dep,
                        "cache": cache, "status": status, "latency_ms": latency,
                        "cost_usd": cost, "prompt_tokens": 10, "completion_tokens": 5})  # fmt: skip
    records.flush()
    try:
        line = records.timeline(t0, t0 + 30, 10)
        assert [(b["ts"] - t0, b["requests"], b["errors"], b["cost_usd"]) for b in line] == [
            (0, 1, 0, 0.5), (10, 2, 0, 2.0), (20, 1, 1, 0.0)
        ]  # fmt: skip
        mix = records.breakdown(("route", "cache"), start=t0, end=t0 + 30)
        assert {(r["route"], r["cache"]): r["requests"] for r in mix} == {
            ("auto", "miss"): 2, ("faq", "hit"): 1, ("faq", None): 1
        }  # fmt: skip
        q = records.latency_quantiles((0.5, 1.0), start=t0, end=t0 + 30)
        assert q == {"all": (4, [1.0, 30.0]), "hit": (1, [1.0, 1.0]), "upstream": (2, [10.0, 30.0])}
        assert records.latency_quantiles((0.5,))["upstream"] == (3, [20.0])  # no range: all rows
        assert records.latency_quantiles((0.5,), start=t0 + 1000)["all"] == (0, [None])
        # A range over most of the stored span is read without the ts index, a narrow one
        # with it; the answers are the same either way.
        assert records._table(t0, t0 + 80) == "request_spend NOT INDEXED"
        assert records._table(t0 + 90, t0 + 95) == "request_spend"
        wide = records.breakdown(("route",), start=t0, end=t0 + 80)
        narrow = records.breakdown(("route",), start=t0, end=t0 + 20)
        assert {r["route"]: r["requests"] for r in wide} == {"auto": 2, "faq": 2}
        assert {r["route"]: r["requests"] for r in narrow} == {"auto": 2, "faq": 1}
        with pytest.raises(ValueError, match="cannot group"):
            records.breakdown(("prompt",))
        with pytest.raises(ValueError, match="end > start"):
            records.timeline(t0, t0, 10)
    finally:
        records.close()


def test_histogram_quantiles_interpolate_within_buckets() -> None:
    edges = [(0.001, 10.0), (0.002, 20.0), (0.004, 20.0), (float("inf"), 20.0)]
    assert _quantile(edges, 0.5) == pytest.approx(1.0)  # ms: the top of the first bucket
    assert _quantile(edges, 0.75) == pytest.approx(1.5)
    beyond = [(0.001, 1.0), (float("inf"), 4.0)]
    assert _quantile(beyond, 0.95) == pytest.approx(1.0)  # capped at the last finite bound
    assert _quantile([(0.001, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_two_workers_give_the_same_totals(
    mock: MockServer, tmp_path: Path, redis_server: str, serve_config: ServeConfig
) -> None:
    cfg = _cfg(mock.url, tmp_path, key_store="redis", redis_url=redis_server)
    cfg["budget_settings"] = {"backend": "redis", "redis_url": redis_server}
    cfg["enforce"]["approval_timeout"] = 60
    # TMPDIR: where serve makes (and removes) its shared files
    with serve_config(cfg, "--workers", "2", env={"TMPDIR": str(tmp_path)}) as served:
        url = served.url
        sent, cost, fallbacks = 0, 0.0, 0
        # A new connection each: the kernel spreads them over the workers. Until both have
        # served some (each then has its own counter file), or the test proves nothing.
        deadline = time.monotonic() + 90  # a worker still warming up accepts nothing
        while sent < 12 or len(list(tmp_path.glob("routeguard-metrics-*/counter_*.db"))) < 2:
            assert time.monotonic() < deadline, f"all {sent} requests went to the same worker"
            with openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0,
                               default_headers={"connection": "close"}) as c:  # fmt: skip
                model = "down" if sent % 4 == 0 else "m"
                out = c.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": f"question {sent}"}]
                )
            # "down" falls back until its circuit opens in the worker that saw it fail.
            fallbacks += int(model == "down")
            cost += _cost(out.usage, CHEAP)
            sent += 1
        # Each worker records a request (spend row, metrics) after its response has left:
        # keep the latest summary of each worker until both show every request (bounded).
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + 20
        while len(answers) < 2 or any(_behind(d, sent) for d in answers.values()):
            assert time.monotonic() < deadline, "summaries of both workers with every request"
            d = _get(url, "/ui/api/summary")[2]
            answers[d["scope"]["worker_pid"]] = d
        decided_elsewhere = _approvals_across_workers(url)
    assert decided_elsewhere >= 1
    for d in answers.values():
        assert (d["scope"]["spend_log"], d["scope"]["metrics"]) == ("shared", "all workers")
        assert d["scope"]["approvals"] == "shared"
        assert d["totals"]["requests"] == sent
        assert d["totals"]["spend_usd"] == pytest.approx(cost, rel=1e-9)
        overhead = {r["layer"]: r["count"] for r in d["latency"]}["gateway overhead"]
        assert overhead == sent  # a metrics histogram, summed over both workers
        assert 1 <= d["fallbacks"]["total"] <= fallbacks
    assert len({json.dumps(d["fallbacks"]) for d in answers.values()}) == 1
    assert not list(tmp_path.glob("routeguard-spend-*")), "serve left its spend database"


def _behind(summary: dict[str, Any], sent: int) -> bool:
    """Whether a summary is missing some of the ``sent`` requests (not yet recorded)."""
    overhead = {r["layer"]: r["count"] for r in summary["latency"]}.get("gateway overhead", 0)
    return bool(summary["totals"]["requests"] < sent or overhead < sent)


def test_admin_keys_from_the_cli_and_the_admin_api(
    mock: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routeguard.cli import main

    cfg = _cfg(mock.url, tmp_path, database=str(tmp_path / "keys.db"))
    path = tmp_path / "routeguard.json"
    path.write_text(json.dumps(cfg))
    assert main(["keys", "--config", str(path), "create", "--name", "ops", "--admin"]) == 0
    ops = json.loads(capsys.readouterr().out)
    assert ops["admin"] is True
    assert main(["keys", "--config", str(path), "create", "--name", "app"]) == 0
    assert json.loads(capsys.readouterr().out)["admin"] is False
    with ServerThread(create_app(Gateway.from_config(cfg))) as srv:
        assert _get(srv.url, "/ui/api/summary", key=ops["key"])[0] == 200
        status, made = _post(srv.url, "/admin/keys", MASTER, {"name": "viewer", "admin": True})
        assert status == 201 and made["admin"] is True
        assert _get(srv.url, "/ui/api/summary", key=made["key"])[0] == 200
        status, _ = _post(srv.url, f"/admin/keys/{made['key_id']}/rotate", made["key"])
        assert status == 403  # an admin key does not manage keys
        # Admin paths that are not /admin/keys make no key, whatever the method.
        count = len(_get(srv.url, "/admin/keys")[2]["data"])
        for path in ("/admin/budgets", "/admin/spend", "/admin/keysx", "/admin/spend/x"):
            status, out = _post(srv.url, path, MASTER, {"name": "stray"})
            assert status == 404 and "key" not in out, (path, out)
        assert _get(srv.url, "/admin/spend/x")[0] == 404
        assert len(_get(srv.url, "/admin/keys")[2]["data"]) == count


async def test_a_slow_reading_is_shared_and_reused(
    mock: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from routeguard.server import dashboard

    gw = Gateway.from_config(_cfg(mock.url, tmp_path))
    records = SpendRecords(tmp_path / "spend.db")
    board = dashboard.Dashboard(gw, records, None, shared_spend=True, metrics_shared=False)
    reads = 0
    real = board._read

    def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return real(*args)

    monkeypatch.setattr(board, "_read", counted)
    row = {"ts": time.time(), "route": "m", "model": "m", "status": 200, "cost_usd": 0.5}
    try:
        records.record(row)
        monkeypatch.setattr(dashboard, "_CACHE_AFTER_S", -1.0)  # every reading counts as slow
        first, second = await asyncio.gather(board.summary(3600), board.summary(3600))
        assert reads == 1  # one reading in flight serves both
        assert first["totals"]["requests"] == second["totals"]["requests"] == 1
        records.record(row)
        assert (await board.summary(3600))["totals"]["requests"] == 1  # reused while fresh
        monkeypatch.setattr(dashboard, "_CACHE_AFTER_S", 3600.0)  # every reading is quick
        board._logged_cache.clear()
        assert (await board.summary(3600))["totals"]["requests"] == 2
        assert (await board.summary(3600))["totals"]["requests"] == 2 and reads == 3
        assert board.scope.metrics == "off"
    finally:
        await gw.aclose()
        records.close()


def _approvals_across_workers(url: str) -> int:
    """Tool calls waiting for approval, each held by the worker its request reached: every
    worker's summary lists it and any worker's decision lets it through. Repeated until one
    was decided by a worker other than its holder; how many were."""
    import threading

    elsewhere = 0
    for _ in range(12):
        if elsewhere:
            break
        done: dict[str, Any] = {}

        def ask(done: dict[str, Any] = done) -> None:
            with openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0,
                               timeout=60) as c:  # fmt: skip
                done["response"] = c.chat.completions.create(
                    model="pay", messages=[{"role": "user", "content": "wire it"}],
                    tools=[{"type": "function", "function": {"name": "wire", "parameters": {}}}],
                )  # fmt: skip

        asker = threading.Thread(target=ask)
        asker.start()
        listed_by: set[int] = set()
        pending: list[Any] = []
        for _ in range(400):  # until both workers' summaries list it
            d = _get(url, "/ui/api/summary")[2]
            if d["approvals"]:
                pending = d["approvals"]
                listed_by.add(d["scope"]["worker_pid"])
            if len(listed_by) == 2:
                break
            time.sleep(0.02)
        assert len(listed_by) == 2, "a pending approval was not listed by both workers"
        (item,) = pending
        status, out = _post(url, f"/ui/api/approvals/{item['id']}/approve", MASTER)
        assert status == 200 and out["approved"] is True
        asker.join(30)
        assert not asker.is_alive(), "the approved call did not return"
        calls = done["response"].choices[0].message.tool_calls
        assert calls and calls[0].function.name == "wire"
        elsewhere += out["worker"] != item["worker"]
    return elsewhere
