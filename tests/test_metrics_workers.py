"""``routeguard serve --workers 2``: one scrape of ``/metrics``, whichever worker answers it,
shows the sum over both workers (prometheus_client's multiprocess files, in a directory
``serve`` makes and removes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ports import free_port
from routeguard.mock import MockServer
from scrapes import scrape, value


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A proxy on two worker processes (metrics public: a 2-worker config has no master
    key), and the parent of its multiprocess directory."""
    with MockServer() as mock:
        dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "sk-up",
               "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
        cfg = {
            "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
            "observability": {"metrics_public": True},
        }
        path = tmp_path / "routeguard.json"
        path.write_text(json.dumps(cfg))
        parent = tmp_path / "multiproc"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env["PROMETHEUS_MULTIPROC_DIR"] = str(parent)  # serve makes its own directory inside
        exe = Path(sys.executable).with_name("routeguard")
        proc = subprocess.Popen(
            [str(exe), "serve", "--config", str(path), "--port", str(port), "--workers", "2",
             "--log-level", "warning"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                try:
                    with urllib.request.urlopen(url + "/health/readiness", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "proxy did not start"
                time.sleep(0.1)
            yield url, parent
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        assert not list(parent.glob("routeguard-metrics-*")), "serve left its metrics directory"


def _chat(url: str) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi there"}]})
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=body.encode(),
        headers={"content-type": "application/json", "connection": "close"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def _serving_pids(parent: Path) -> set[str]:
    """The worker processes that have written a counter so far."""
    return {f.stem.rsplit("_", 1)[-1] for f in parent.glob("routeguard-metrics-*/counter_*.db")}


def test_one_scrape_sums_every_worker(two_workers: tuple[str, Path]) -> None:
    url, parent = two_workers
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        # New connections, 8 at a time, until both workers have served some (the kernel
        # hands each connection to one of them).
        while sent < 400 and (sent < 40 or len(_serving_pids(parent)) < 2):
            list(pool.map(lambda _: _chat(url), range(20)))
            sent += 20
    assert len(_serving_pids(parent)) == 2, "the kernel gave every connection to one worker"
    for _ in range(8):  # each scrape on a new connection: either worker may answer
        s = scrape(url, key=None)
        assert value(s, "routeguard_requests_total", route="m", alias="m", status="200") == sent
        assert value(s, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == sent
        assert value(s, "routeguard_deployment_circuit_open") == 0
