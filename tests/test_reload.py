"""Config reload of a real ``routeguard serve``: SIGHUP and ``POST /admin/reload`` swap a
model alias to another upstream model while a stream started before the reload finishes on
the old one; budget spend and holds carry over and changed limits apply; a bad config is
refused (400 with every problem, or a log line for SIGHUP) and the running one stays. With
``--workers 2`` a SIGHUP to the parent restarts the workers one by one on the new file."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy_clients import WAIT_S, StreamReader, call, wait_for
from routeguard.mock import MockServer
from serving import serve

MASTER = "sk-master-reload"


@pytest.fixture
def upstream() -> Iterator[MockServer]:
    with MockServer() as mock:
        yield mock


def _write(path: Path, mock: MockServer, model: str, *, limit: float = 100.0, **extra: Any) -> None:
    """The config: alias ``chat`` (paced at 2 tokens/s: a whole answer takes seconds, a
    one-token one half a second) served by upstream ``model``."""
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "sk-up",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0,
           "headers": {"x-mock-tokens-per-s": "2"}}  # fmt: skip
    cfg = {
        "model_list": [{**dep, "model_name": "chat", "model": model}],
        "budgets": [{"name": "reload-team", "limit": limit}],
        "budget_settings": {"default_account": "reload-team"},
        "server": {"master_key": MASTER},
        **extra,
    }
    path.write_text(json.dumps(cfg))


def _served_by(url: str, key: str | None = MASTER) -> str:
    """The upstream model that answers a new (non-streamed, one-token) request for ``chat``;
    ``draining`` when a worker on its way out refused it (a rolling restart's brief race)."""
    status, body = call(
        url + "/v1/chat/completions",
        body={"model": "chat", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
        key=key,
    )
    if status == 503 and body["error"]["code"] == "draining":
        return "draining"
    assert status == 200, body
    return str(body["model"])


def _budget(url: str) -> dict[str, Any]:
    status, body = call(url + "/admin/budgets", key=MASTER)
    assert status == 200, body
    (row,) = [r for r in body["data"] if r["name"] == "reload-team"]
    return row


def test_sighup_and_admin_reload_swap_an_alias_without_touching_a_stream_in_flight(
    tmp_path: Path, upstream: MockServer
) -> None:
    cfg = tmp_path / "routeguard.json"
    _write(cfg, upstream, "sim-one")
    with serve("--config", str(cfg)) as served:
        assert served.proc is not None
        assert _served_by(served.url) == "sim-one"
        spent_before = _budget(served.url)["spent"]
        assert spent_before > 0
        reader = StreamReader(served.url, MASTER, model="chat")
        reader.start()
        assert reader.started_stream.wait(WAIT_S) and reader.error is None

        # SIGHUP: the alias now goes to sim-two, with a higher limit; the stream goes on.
        _write(cfg, upstream, "sim-two", limit=250.0)
        served.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _served_by(served.url) == "sim-two", "the SIGHUP reload")
        row = _budget(served.url)
        assert row["limit"] == pytest.approx(250.0)
        assert row["spent"] >= spent_before  # the ledger carried over, not reset
        assert row["reserved"] > 0  # the stream's hold, still open on the kept ledger
        assert reader.is_alive()
        reader.join(WAIT_S)
        assert reader.error is None, reader.error
        assert reader.finish == "stop"
        assert "".join(reader.pieces).startswith("Simulated answer from sim-one")
        row = _budget(served.url)
        assert row["reserved"] == pytest.approx(0.0, abs=1e-9)  # settled once it ended
        assert row["spent"] > spent_before

        # POST /admin/reload: needs the master key, answers with what it loaded.
        _write(cfg, upstream, "sim-three", limit=250.0)
        status, body = call(served.url + "/admin/reload", body={}, key="sk-not-master")
        assert status == 401
        status, body = call(served.url + "/admin/reload", body={}, key=MASTER)
        assert status == 200, body
        assert body["status"] == "reloaded" and body["models"] == ["chat"]
        assert _served_by(served.url) == "sim-three"

        # A bad config is refused; the running one stays.
        _write(cfg, upstream, "sim-four", fallbacks={"chat": ["nowhere"]})
        status, body = call(served.url + "/admin/reload", body={}, key=MASTER)
        assert status == 400
        assert body["error"]["code"] == "invalid_config"
        assert {"path": "fallbacks.chat[0]", "message": "unknown model 'nowhere'"} in body["error"][
            "problems"
        ]
        assert _served_by(served.url) == "sim-three"
        served.proc.send_signal(signal.SIGHUP)
        # The refusal is logged; nothing changed (a request after it still reaches sim-three).
        assert _served_by(served.url) == "sim-three"
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(WAIT_S) == 0
    assert "reload refused" in served.output
    assert "fallbacks.chat[0]: unknown model 'nowhere'" in served.output
    assert "sk-up" not in served.output and MASTER not in served.output


def test_a_reload_cannot_move_a_budget_account(tmp_path: Path, upstream: MockServer) -> None:
    cfg = tmp_path / "routeguard.json"
    dep = {"type": "openai", "api_base": upstream.url + "/v1", "api_key": "sk-up"}
    base = {
        "model_list": [{**dep, "model_name": "chat", "model": "sim-one"}],
        "server": {"master_key": MASTER},
        "budgets": [
            {"name": "org-a", "limit": 10.0},
            {"name": "org-b", "limit": 10.0},
            {"name": "team", "parent": "org-a", "limit": 5.0},
        ],
    }
    cfg.write_text(json.dumps(base))
    with serve("--config", str(cfg)) as served:
        base["budgets"][2]["parent"] = "org-b"
        cfg.write_text(json.dumps(base))
        status, body = call(served.url + "/admin/reload", body={}, key=MASTER)
        assert status == 400
        (problem,) = body["error"]["problems"]
        assert problem["path"] == "budgets[2].parent"
        assert "cannot move" in problem["message"]


def test_sighup_to_the_parent_restarts_every_worker_on_the_new_file(
    tmp_path: Path, upstream: MockServer
) -> None:
    cfg = tmp_path / "routeguard.json"
    dep = {"type": "openai", "api_base": upstream.url + "/v1", "api_key": "sk-up"}

    def write(model: str, **extra: Any) -> None:
        cfg.write_text(
            json.dumps({"model_list": [{**dep, "model_name": "chat", "model": model}], **extra})
        )

    def served_by() -> str:
        return _served_by(served.url, key=None)

    write("sim-one")
    with serve("--config", str(cfg), "--workers", "2") as served:
        assert served.proc is not None
        wait_for(lambda: call(served.url + "/health/readiness")[0] == 200, "ready")
        write("sim-broken", fallbacks={"chat": ["nowhere"]})
        served.proc.send_signal(signal.SIGHUP)
        refused = "reload refused, the workers keep the running config"
        wait_for(lambda: served.printed(refused), "the refusal")
        assert served_by() == "sim-one"
        write("sim-two")
        served.proc.send_signal(signal.SIGHUP)
        # Every worker was replaced once twenty answers in a row come from sim-two.
        streak = [0]

        def all_new() -> bool:
            streak[0] = streak[0] + 1 if served_by() == "sim-two" else 0
            return streak[0] >= 20

        wait_for(all_new, "both workers on the new config", timeout=3 * WAIT_S)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(WAIT_S) == 0
    assert "fallbacks.chat[0]: unknown model 'nowhere'" in served.output
    _no_traceback(served.output)


async def test_a_reload_keeps_the_stores_and_what_did_not_change(
    tmp_path: Path, upstream: MockServer
) -> None:
    from embedders import WordsEmbedder
    from routeguard.errors import BudgetExceeded
    from routeguard.gateway import Gateway
    from routeguard.server import create_app

    path = tmp_path / "routeguard.json"
    dep = {"type": "openai", "api_base": upstream.url + "/v1", "api_key": "sk-up",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip

    def write(model: str, *, threshold: float = 0.9, cap: bool = True) -> None:
        budgets = [{"name": "everyone", "limit": 100.0}]
        if cap:
            budgets.append({"name": "cap", "limit": 0.000001})
        path.write_text(json.dumps({
            "model_list": [{**dep, "model_name": "m", "model": model}],
            "cache": {"enabled": True, "threshold": threshold},
            "budgets": budgets,
            "budget_settings": {"default_account": "everyone"},
        }))  # fmt: skip

    write("sim-one")
    old = Gateway.from_config(path, embedder=WordsEmbedder())
    app = create_app(old)
    request = {"model": "m", "messages": [{"role": "user", "content": "what is a reload"}]}
    try:
        await old.chat_result(request)
        spent = await old.budget.backend.spent("everyone")
        assert spent > 0
        with pytest.raises(BudgetExceeded):
            await old.chat_result({**request, "messages": [{"role": "user", "content": "x"}]},
                                  accounts=["cap"])  # fmt: skip

        write("sim-two", cap=False)
        out = await app.lifecycle.reload()
        new = app.current_gateway
        assert out.gateway is new and new is not old and app.gateway is new
        assert new.keys is old.keys and new.budget.backend is old.budget.backend
        assert new.cache is old.cache  # same cache settings: its entries stay
        assert new.embedder is old.embedder and new.recent is old.recent
        assert await new.budget.backend.spent("everyone") == spent  # not reset
        hit = await new.chat_result(request)
        assert hit.cache == "hit"  # answered from the kept cache
        fresh = await new.chat_result({**request, "messages": [{"role": "user", "content": "y"}]})
        assert fresh.response is not None and fresh.response["model"] == "sim-two"
        # "cap" left the config: it no longer limits, and keeps what it had
        await new.chat_result({**request, "messages": [{"role": "user", "content": "z"}]},
                              accounts=["cap"])  # fmt: skip

        write("sim-two", threshold=0.95, cap=False)  # another cache: a new one is built
        await app.lifecycle.reload()
        newer = app.current_gateway
        assert newer.cache is not new.cache
        assert app.lifecycle.reloads == 2
    finally:
        await app.current_gateway.aclose()


def _no_traceback(output: str) -> None:
    """The server printed no traceback (the whole of the first one in the failure message)."""
    at = output.find("Traceback")
    assert at < 0, output[max(0, at - 300) : at + 6000]


def test_admin_reload_under_two_workers_restarts_them_on_redis(
    tmp_path: Path, upstream: MockServer, redis_server: str
) -> None:
    cfg = tmp_path / "routeguard.json"
    team = f"reload-{tmp_path.name[-12:]}"
    dep = {"type": "openai", "api_base": upstream.url + "/v1", "api_key": "sk-up",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip

    def write(model: str, **extra: Any) -> None:
        cfg.write_text(json.dumps({
            "model_list": [{**dep, "model_name": "chat", "model": model}],
            "server": {"master_key": MASTER, "key_store": "redis"},
            "budgets": [{"name": team, "limit": 100.0}],
            "budget_settings": {"backend": "redis", "redis_url": redis_server,
                                "default_account": team},
            **extra,
        }))  # fmt: skip

    def spent() -> float:
        status, body = call(served.url + "/admin/budgets", key=MASTER)
        assert status == 200, body
        (row,) = [r for r in body["data"] if r["name"] == team]
        return float(row["spent"])

    write("sim-one")
    with serve("--config", str(cfg), "--workers", "2") as served:
        wait_for(lambda: call(served.url + "/health/readiness")[0] == 200, "ready")
        assert _served_by(served.url) == "sim-one"
        before = spent()
        assert before > 0
        write("sim-two", fallbacks={"chat": ["nowhere"]})
        status, body = call(served.url + "/admin/reload", body={}, key=MASTER)
        assert status == 400 and body["error"]["code"] == "invalid_config"
        write("sim-two")
        status, body = call(served.url + "/admin/reload", body={}, key=MASTER)
        assert status == 202, body
        assert body["status"] == "restarting workers" and body["workers"] == 2
        streak = [0]

        def all_new() -> bool:
            streak[0] = streak[0] + 1 if _served_by(served.url) == "sim-two" else 0
            return streak[0] >= 20

        wait_for(all_new, "both workers on the new config", timeout=3 * WAIT_S)
        assert spent() > before  # Redis kept the spend across the new workers
    _no_traceback(served.output)
