"""Graceful drain of a real ``routeguard serve``: on SIGTERM a stream in flight finishes,
new requests get 503 ``draining`` and readiness 503, and the process exits 0; a stream still
running at ``server.drain_seconds`` is cut and charged for what it sent; with ``--workers 2``
a SIGTERM to the parent drains every worker."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from proxy_clients import WAIT_S, StreamReader, call, wait_for
from routeguard.mock import MockServer
from serving import Served, serve


@pytest.fixture
def upstream() -> Iterator[MockServer]:
    with MockServer() as mock:
        yield mock


def _config(tmp_path: Path, mock: MockServer, *, tokens_per_s: int, **extra: Any) -> Path:
    """A config whose alias ``slow`` streams ``tokens_per_s`` tokens a second."""
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "sk-up",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
    cfg = {
        "model_list": [
            {
                **dep,
                "model_name": "slow",
                "model": "sim-slow",
                "headers": {"x-mock-tokens-per-s": str(tokens_per_s)},
            },
            {**dep, "model_name": "fast", "model": "sim-fast"},
        ],
        **extra,
    }
    path = tmp_path / "routeguard.json"
    path.write_text(json.dumps(cfg))
    return path


def _proc(served: Served) -> Any:
    assert served.proc is not None
    return served.proc


def test_sigterm_lets_a_stream_finish_refuses_new_requests_and_exits_0(
    tmp_path: Path, upstream: MockServer
) -> None:
    cfg = _config(tmp_path, upstream, tokens_per_s=8, server={"drain_seconds": 120})
    with serve("--config", str(cfg)) as served:
        reader = StreamReader(served.url)
        reader.start()
        assert reader.started_stream.wait(WAIT_S) and reader.error is None
        _proc(served).send_signal(signal.SIGTERM)
        # Draining: readiness fails and a new request is refused (the stream still runs).
        wait_for(lambda: call(served.url + "/health/readiness")[0] == 503, "readiness 503")
        status, body = call(served.url + "/health/readiness")
        assert body["checks"]["serving"] == "draining"
        assert reader.is_alive(), "the stream should still be running"
        status, body = call(
            served.url + "/v1/chat/completions",
            body={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert status == 503 and body["error"]["code"] == "draining"
        assert call(served.url + "/health/liveness")[0] == 200
        reader.join(WAIT_S)
        assert not reader.is_alive()
        assert reader.error is None, reader.error
        assert reader.finish == "stop"  # the whole answer arrived
        assert "".join(reader.pieces).startswith("Simulated answer from sim-slow")
        assert _proc(served).wait(WAIT_S) == 0
    assert "draining" in served.output


def test_requests_past_drain_seconds_are_cut_and_settled_once(
    tmp_path: Path, upstream: MockServer
) -> None:
    """A stream is cut with an in-band error and charged for what it sent; a plain request
    still waiting on upstream gets a 503 ``draining`` and its hold is released."""
    db = tmp_path / "keys.db"
    cfg = _config(
        tmp_path, upstream, tokens_per_s=1,
        server={"drain_seconds": 0.5, "database": str(db), "master_key": "sk-master"},
        budgets=[{"name": "all", "limit": 100.0}],
        budget_settings={"default_account": "all"},
    )  # fmt: skip
    with serve("--config", str(cfg)) as served:
        reader = StreamReader(served.url, "sk-master")
        reader.start()
        assert reader.started_stream.wait(WAIT_S) and reader.error is None
        plain: list[tuple[int, dict[str, Any]]] = []
        body = {"model": "slow", "messages": [{"role": "user", "content": "and you?"}]}
        waiting = threading.Thread(
            target=lambda: plain.append(
                call(served.url + "/v1/chat/completions", body=body, key="sk-master")
            )
        )
        waiting.start()
        wait_for(lambda: len(upstream.requests) == 2, "the plain request upstream")
        _proc(served).send_signal(signal.SIGTERM)
        assert _proc(served).wait(WAIT_S) == 0
        reader.join(WAIT_S)
        waiting.join(WAIT_S)
    ((status, answer),) = plain
    assert status == 503 and answer["error"]["code"] == "draining"
    assert reader.finish != "stop"  # cut before the end, with an in-band error
    assert isinstance(reader.error, openai.APIError), reader.error
    assert "shutting down" in str(reader.error)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT chain, amount FROM spend").fetchall()
    assert len(rows) == 1, rows  # the stream, settled once; the plain request's hold released
    chain, amount = rows[0]
    assert chain == "all" and amount > 0
    assert "cutting 2 request" in served.output
    assert "Traceback" not in served.output


def test_sigterm_to_the_parent_drains_every_worker(tmp_path: Path, upstream: MockServer) -> None:
    cfg = _config(tmp_path, upstream, tokens_per_s=8, server={"drain_seconds": 120})
    with serve("--config", str(cfg), "--workers", "2") as served:
        wait_for(lambda: call(served.url + "/health/readiness")[0] == 200, "ready")
        readers = [StreamReader(served.url) for _ in range(4)]  # likely on both workers
        for r in readers:
            r.start()
        for r in readers:
            assert r.started_stream.wait(WAIT_S) and r.error is None
        _proc(served).send_signal(signal.SIGTERM)  # the parent only: it signals the workers
        for r in readers:
            r.join(WAIT_S)
            assert r.error is None, r.error
            assert r.finish == "stop"
        assert _proc(served).wait(WAIT_S) == 0


@pytest.mark.parametrize("seconds", [-1, float("nan"), 90_000])
def test_drain_seconds_is_checked(seconds: float) -> None:
    from routeguard import config as config_mod

    raw = {
        "model_list": [{"type": "openai", "model_name": "m", "model": "sim-m", "api_key": "k"}],
        "server": {"drain_seconds": seconds},
    }
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.load(raw)
    assert [p.path for p in err.value.problems] == ["server.drain_seconds"]
