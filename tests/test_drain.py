"""Graceful drain of a real ``routeguard serve``: on SIGTERM a stream in flight finishes,
new requests get 503 ``draining`` and readiness 503, and the process exits 0; a stream still
running at ``server.drain_seconds`` is cut and charged for what it sent; with ``--workers 2``
a SIGTERM to the parent drains every worker."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from routeguard.mock import MockServer
from serving import Served, serve

WAIT_S = 60.0  # the longest any condition below is waited for


def _wait(condition: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _status(url: str, *, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a GET, or a POST of ``body``, on a fresh connection."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


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
            {**dep, "model_name": "slow", "model": "sim-slow",
             "headers": {"x-mock-tokens-per-s": str(tokens_per_s)}},
            {**dep, "model_name": "fast", "model": "sim-fast"},
        ],  # fmt: skip
        **extra,
    }
    path = tmp_path / "routeguard.json"
    path.write_text(json.dumps(cfg))
    return path


class _Reader(threading.Thread):
    """Reads one streamed chat completion from the proxy on its own thread."""

    def __init__(self, url: str, key: str = "x") -> None:
        super().__init__(daemon=True)
        self.url = url
        self.key = key
        self.pieces: list[str] = []
        self.finish: str | None = None
        self.error: BaseException | None = None
        self.started_stream = threading.Event()

    def run(self) -> None:
        try:
            with openai.OpenAI(base_url=self.url + "/v1", api_key=self.key, max_retries=0) as c:
                stream = c.chat.completions.create(
                    model="slow", stream=True, messages=[{"role": "user", "content": "tell me"}]
                )
                for chunk in stream:
                    if chunk.choices:
                        self.pieces.append(chunk.choices[0].delta.content or "")
                        self.finish = chunk.choices[0].finish_reason or self.finish
                        self.started_stream.set()
        except BaseException as exc:  # the test reads it
            self.error = exc
        finally:
            self.started_stream.set()


def _proc(served: Served) -> Any:
    assert served.proc is not None
    return served.proc


def test_sigterm_lets_a_stream_finish_refuses_new_requests_and_exits_0(
    tmp_path: Path, upstream: MockServer
) -> None:
    cfg = _config(tmp_path, upstream, tokens_per_s=8, server={"drain_seconds": 120})
    with serve("--config", str(cfg)) as served:
        reader = _Reader(served.url)
        reader.start()
        assert reader.started_stream.wait(WAIT_S) and reader.error is None
        _proc(served).send_signal(signal.SIGTERM)
        # Draining: readiness fails and a new request is refused (the stream still runs).
        _wait(lambda: _status(served.url + "/health/readiness")[0] == 503, "readiness 503")
        status, body = _status(served.url + "/health/readiness")
        assert body["checks"]["serving"] == "draining"
        assert reader.is_alive(), "the stream should still be running"
        status, body = _status(
            served.url + "/v1/chat/completions",
            body={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert status == 503 and body["error"]["code"] == "draining"
        assert _status(served.url + "/health/liveness")[0] == 200
        reader.join(WAIT_S)
        assert not reader.is_alive()
        assert reader.error is None, reader.error
        assert reader.finish == "stop"  # the whole answer arrived
        assert "".join(reader.pieces).startswith("Simulated answer from sim-slow")
        assert _proc(served).wait(WAIT_S) == 0
    assert "draining" in served.output


def test_a_stream_past_drain_seconds_is_cut_and_charged_for_what_it_sent(
    tmp_path: Path, upstream: MockServer
) -> None:
    db = tmp_path / "keys.db"
    cfg = _config(
        tmp_path, upstream, tokens_per_s=1,
        server={"drain_seconds": 0.5, "database": str(db), "master_key": "sk-master"},
        budgets=[{"name": "all", "limit": 100.0}],
        budget_settings={"default_account": "all"},
    )  # fmt: skip
    with serve("--config", str(cfg)) as served:
        reader = _Reader(served.url, "sk-master")
        reader.start()
        assert reader.started_stream.wait(WAIT_S) and reader.error is None
        _proc(served).send_signal(signal.SIGTERM)
        assert _proc(served).wait(WAIT_S) == 0
        reader.join(WAIT_S)
    assert reader.finish != "stop"  # cut before the end
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT chain, amount FROM spend").fetchall()
    assert len(rows) == 1, rows  # settled once, neither lost nor charged twice
    chain, amount = rows[0]
    assert chain == "all" and amount > 0
    assert "cancelling 1 request" in served.output


def test_sigterm_to_the_parent_drains_every_worker(tmp_path: Path, upstream: MockServer) -> None:
    cfg = _config(tmp_path, upstream, tokens_per_s=8, server={"drain_seconds": 120})
    with serve("--config", str(cfg), "--workers", "2") as served:
        _wait(lambda: _status(served.url + "/health/readiness")[0] == 200, "ready")
        readers = [_Reader(served.url) for _ in range(4)]  # likely on both workers
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
