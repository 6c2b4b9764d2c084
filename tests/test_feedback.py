"""Feedback on served requests (``POST /v1/feedback``, ``Gateway.feedback``): validation as
OpenAI-style 400s, unknown ids 404, a virtual key rating only its own requests, the master key
any; where it is stored (next to the request log, the server database, memory); and shadow
checks (a sampled share of cheap answers judged against the strong alias in the background,
the verdict stored as feedback, bounded, never delaying or failing the client)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedders import WideWordsEmbedder
from routeguard import config
from routeguard.budget.keys import KeySpec
from routeguard.errors import ConfigError, InvalidRequest, PermissionDenied, RequestNotFound
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.observe.feedback import MemoryFeedback, SqliteFeedback, read_feedback
from routeguard.routing.shadow import parse_verdict
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from waiting import eventually

MASTER = "sk-master-feedback"
HARD = "Prove that the square root of two is irrational"
EASY = "hello, how is the weather today"


def _cfg(url: str, *, strong: str = "sim-strong", shadow: dict[str, Any] | None = None,
         **extra: Any) -> dict[str, Any]:  # fmt: skip
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    route: dict[str, Any] = {"cheap": "cheap-m", "strong": "strong-m", "threshold": 1.0}
    if shadow is not None:
        route["shadow"] = shadow
    return {
        "model_list": [
            {**dep, "model_name": "cheap-m", "model": "sim-cheap"},
            {**dep, "model_name": "strong-m", "model": strong},
            {**dep, "model_name": "judge-m", "model": "sim-judge"},
        ],
        "routes": {"auto": route},  # threshold 1.0: every request goes to cheap-m
        **extra,
    }


def _msg(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _post(c: httpx.Client, path: str, key: str, body: Any) -> httpx.Response:
    return c.post(path, json=body, headers={"authorization": f"Bearer {key}"})


def test_proxy_feedback_checks_bodies_ids_and_ownership(mock: MockServer, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    cfg = _cfg(mock.url, server={"master_key": MASTER},
               observability={"request_log": str(log), "log_content": True})  # fmt: skip
    gw = Gateway(config.load(cfg, env={}), embedder=WideWordsEmbedder())
    alice, _ = gw.keys.create(KeySpec(name="alice"))
    bob, _ = gw.keys.create(KeySpec(name="bob"))
    app = create_app(gw)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url) as c:
        r = _post(c, "/v1/chat/completions", alice, {"model": "auto", "messages": _msg(HARD)})
        assert r.status_code == 200
        rid = r.headers["x-routeguard-request-id"]

        bad: list[tuple[Any, str | None]] = [
            ({"request_id": rid}, "rating"),
            ({"request_id": rid, "rating": "meh"}, "rating"),
            ({"request_id": rid, "score": 1.5}, "score"),
            ({"request_id": rid, "score": True}, "score"),
            ({"request_id": rid, "strong_needed": "yes"}, "strong_needed"),
            ({"request_id": rid, "rating": "up", "score": 1}, "score"),
            ({"request_id": rid, "rating": "up", "comment": "x" * 2001}, "comment"),
            ({"request_id": rid, "rating": "up", "stars": 5}, "stars"),
            ({"rating": "up"}, "request_id"),
            ([1, 2], None),
        ]
        for body, param in bad:
            r = _post(c, "/v1/feedback", alice, body)
            assert r.status_code == 400, body
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["param"] == param, body
        r = _post(c, "/v1/feedback", alice, {"request_id": "req_nope", "rating": "up"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
        # Another key's request: refused; no key at all: 401.
        r = _post(c, "/v1/feedback", bob, {"request_id": rid, "rating": "down"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
        assert c.post("/v1/feedback", json={"request_id": rid, "rating": "up"}).status_code == 401
        # Its own key, and the master key, may.
        r = _post(c, "/v1/feedback", alice,
                  {"request_id": rid, "strong_needed": True, "comment": "wrong proof"})  # fmt: skip
        assert r.status_code == 200
        out = r.json()
        assert out["recorded"] is True and out["model"] == "cheap-m" and out["route"] == "auto"
        assert out["route_reason"] == "learned" and "key_id" not in out
        r = _post(c, "/v1/feedback", MASTER, {"request_id": rid, "score": 0.25})
        assert r.status_code == 200
    assert app.request_log is not None
    app.request_log.flush()
    gw_store = gw._feedback
    assert gw_store is None  # closed at shutdown; everything is on disk
    entries = read_feedback(tmp_path / "requests.jsonl.feedback.jsonl")
    assert [(e.get("strong_needed"), e.get("score")) for e in entries] == [
        (True, None),
        (None, 0.25),
    ]
    assert all(e["request_id"] == rid and e["source"] == "client" for e in entries)
    assert entries[0]["comment"] == "wrong proof" and entries[0]["key_id"]
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["request_id"] for x in logged] == [rid]  # feedback calls are not request lines


async def test_library_feedback_in_memory_and_sqlite(mock: MockServer, tmp_path: Path) -> None:
    gw = Gateway(config.load(_cfg(mock.url), env={}), embedder=WideWordsEmbedder())
    try:
        r = await gw.chat_result({"model": "auto", "messages": _msg(EASY)})
        assert r.request_id is not None and r.request_id.startswith("req_")
        entry = gw.feedback(r.request_id, rating="up")
        assert entry["rating"] == "up" and entry["model"] == "cheap-m"
        store = gw.feedback_store
        assert isinstance(store, MemoryFeedback) and list(store.entries) == [entry]
        with pytest.raises(InvalidRequest):
            gw.feedback(r.request_id, rating="sideways")
        with pytest.raises(RequestNotFound):
            gw.feedback("req_unknown", rating="up")
        _, rec = gw.keys.create(KeySpec(name="someone"))
        with pytest.raises(PermissionDenied):
            gw.feedback(r.request_id, rating="down", key=rec)
    finally:
        await gw.aclose()

    db = tmp_path / "server.db"
    gw = Gateway(config.load(_cfg(mock.url, server={"database": str(db)}), env={}),
                 embedder=WideWordsEmbedder())  # fmt: skip
    try:
        r = await gw.chat_result({"model": "auto", "messages": _msg(EASY)}, request_id="req_mine")
        gw.feedback("req_mine", strong_needed=False)
        assert isinstance(gw.feedback_store, SqliteFeedback)
    finally:
        await gw.aclose()
    (row,) = read_feedback(db)
    assert row["request_id"] == "req_mine" and row["strong_needed"] is False


def test_recent_index_is_bounded() -> None:
    from routeguard.observe.feedback import RecentRequests, Served

    idx = RecentRequests(3)
    for i in range(5):
        idx.add(f"r{i}", Served(None, "a", "a", None, "off"))
    assert len(idx) == 3 and idx.get("r1") is None and idx.get("r4") is not None


def test_the_recent_index_is_out_of_the_collectors_way() -> None:
    """The index holds up to 50,000 served requests. Kept as objects the collector tracks,
    every full collection of a busy proxy walked all of them (up to 70 ms a collection in a
    proxy under load): its entries are plain tuples of strings, untracked once collected,
    and read back whole."""
    import gc

    from routeguard.observe.feedback import RecentRequests, Served

    idx = RecentRequests(20_000)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        idx.add(f"r{i}", Served(f"k{i % 7}", "auto", "cheap", "rule:short", "hit", f"c{i}"))
    gc.collect()
    assert len(gc.get_objects()) - before < 100  # was 10,000 and more
    assert idx.get("r42") == Served("k0", "auto", "cheap", "rule:short", "hit", "c42")
    assert idx.get("r43") == Served("k1", "auto", "cheap", "rule:short", "hit", "c43")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("B", "B"),
        ("A", "A"),
        ("tie", "TIE"),
        ("**Answer B** is better.", "B"),
        ("Verdict: TIE", "TIE"),
        ("I think B, clearly", "B"),
        ("Both are about equally good", "TIE"),
        ("Answer A is better than answer B", "A"),
        ("I cannot decide", None),
        ("", None),
        (None, None),
    ],
)
def test_judge_replies_are_parsed_robustly(reply: str | None, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


def test_shadow_config_is_checked() -> None:
    base = _cfg("http://127.0.0.1:9")
    for shadow, message in [
        ({"share": 1.5, "judge": "judge-m"}, "routes.auto.shadow.share"),
        ({"share": 0.1, "judge": "nobody"}, "unknown model 'nobody'"),
        ({"share": 0.1, "judge": "judge-m", "max_concurrent": 0}, "max_concurrent"),
        ({"share": 0.1}, "judge"),
    ]:
        base["routes"]["auto"]["shadow"] = shadow
        with pytest.raises(ConfigError) as info:
            config.load(base, env={})
        assert message in str(info.value)
    base["routes"]["plain"] = {"shadow": {"share": 0.1, "judge": "judge-m"}}
    base["routes"]["auto"]["shadow"] = {"share": 0.1, "judge": "judge-m"}
    with pytest.raises(ConfigError) as info:
        config.load(base, env={})
    assert "routes.plain.shadow: needs 'cheap' and 'strong'" in str(info.value)


async def test_shadow_verdicts_become_feedback(mock: MockServer) -> None:
    shadow = {"share": 1.0, "judge": "judge-m"}
    gw = Gateway(config.load(_cfg(mock.url, shadow=shadow), env={}), embedder=WideWordsEmbedder())
    try:
        hard = await gw.chat_result({"model": "auto", "messages": _msg(HARD)})
        easy = await gw.chat_result({"model": "auto", "messages": _msg(EASY)})
        streamed = await gw.chat_result({"model": "auto", "messages": _msg(HARD), "stream": True})
        assert streamed.stream is not None
        async for _ in streamed.stream:
            pass
        assert hard.alias == easy.alias == "cheap-m"
        assert gw.shadows is not None
        await gw.shadows.drain()
        store = gw.feedback_store
        assert isinstance(store, MemoryFeedback)
        by_id = {e["request_id"]: e for e in store.entries}
        assert set(by_id) == {hard.request_id, easy.request_id}  # streams are not shadowed
        h, e = by_id[hard.request_id], by_id[easy.request_id]
        assert h["source"] == "shadow" and h["strong_needed"] is True and h["judge"] == "strong"
        assert e["strong_needed"] is False and e["judge"] == "tie"
        assert h["judge_model"] == "judge-m" and h["shadow_cost_usd"] > 0
        stats = gw.shadows.stats
        assert stats.calls == 4 and stats.verdicts == {"A": 0, "B": 1, "TIE": 1}
        assert stats.cost_usd == pytest.approx(h["shadow_cost_usd"] + e["shadow_cost_usd"])
    finally:
        await gw.aclose()


async def test_shadow_stays_within_the_callers_key_scope(mock: MockServer) -> None:
    shadow = {"share": 1.0, "judge": "judge-m"}
    gw = Gateway(config.load(_cfg(mock.url, shadow=shadow), env={}), embedder=WideWordsEmbedder())
    try:
        _, narrow = gw.keys.create(KeySpec(name="narrow", models=["auto", "cheap-m"]))
        _, wide = gw.keys.create(KeySpec(name="wide"))
        request = {"model": "auto", "messages": _msg(HARD)}
        assert (await gw.chat_result(dict(request), key=narrow)).shadow is None
        assert (await gw.chat_result(dict(request), key=wide, defer_shadow=True)).shadow
    finally:
        await gw.aclose()


async def test_shadow_is_sampled_by_share(mock: MockServer) -> None:
    shadow = {"share": 0.0, "judge": "judge-m"}
    gw = Gateway(config.load(_cfg(mock.url, shadow=shadow), env={}), embedder=WideWordsEmbedder())
    try:
        for i in range(5):
            r = await gw.chat_result({"model": "auto", "messages": _msg(f"{HARD} {i}")})
            assert r.shadow is None
        assert gw.shadows is not None and gw.shadows.stats.started == 0
    finally:
        await gw.aclose()


def test_shadow_never_delays_or_fails_the_client(mock: MockServer) -> None:
    # The strong model takes 1.5 s: the client's answer must not wait for it; one check at a
    # time, the other samples are skipped; a failing strong model is only counted.
    shadow = {"share": 1.0, "judge": "judge-m", "max_concurrent": 1}
    cfg = _cfg(mock.url, strong="sim-strong-slow-1500", shadow=shadow)
    gw = Gateway(config.load(cfg, env={}), embedder=WideWordsEmbedder())
    with ServerThread(create_app(gw)) as srv, httpx.Client(base_url=srv.url) as c:
        for i in range(3):
            t0 = time.perf_counter()
            r = c.post("/v1/chat/completions",
                       json={"model": "auto", "messages": _msg(f"{HARD} {i}")})  # fmt: skip
            assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
        assert gw.shadows is not None
        stats = gw.shadows.stats
        assert stats.started == 1 and stats.skipped_busy == 2
        eventually(lambda: _assert(stats.verdicts["B"] == 1), timeout=10)

    cfg = _cfg(mock.url, strong="sim-strong-error-500", shadow=shadow)
    gw = Gateway(config.load(cfg, env={}), embedder=WideWordsEmbedder())
    with ServerThread(create_app(gw)) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/chat/completions", json={"model": "auto", "messages": _msg(HARD)})
        assert r.status_code == 200
        assert gw.shadows is not None
        failing = gw.shadows.stats
        eventually(lambda: _assert(failing.failed == 1), timeout=10)
        assert failing.verdicts == {"A": 0, "B": 0, "TIE": 0}


def _assert(ok: bool) -> None:
    assert ok
