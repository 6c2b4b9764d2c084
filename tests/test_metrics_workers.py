"""``routeguard serve --workers 2``: one scrape of ``/metrics``, whichever worker answers it,
shows the sum over both workers (prometheus_client's multiprocess files, in a directory
``serve`` makes and removes)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ServeConfig
from routeguard.mock import MockServer
from scrapes import scrape, value


@pytest.fixture
def two_workers(tmp_path: Path, serve_config: ServeConfig) -> Iterator[tuple[str, Path]]:
    """A proxy on two worker processes (metrics public: a 2-worker config has no master
    key), and the parent of its multiprocess directory."""
    with MockServer() as mock:
        dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "sk-up",
               "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
        cfg = {
            "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
            "observability": {"metrics_public": True},
        }
        parent = tmp_path / "multiproc"
        env = {"PROMETHEUS_MULTIPROC_DIR": str(parent)}  # serve makes its own directory inside
        with serve_config(cfg, "--workers", "2", env=env) as served:
            yield served.url, parent
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
    deadline = time.monotonic() + 90  # a worker still warming up accepts nothing: wait for it
    with ThreadPoolExecutor(8) as pool:
        # New connections, 8 at a time, until both workers have served some (the kernel
        # hands each connection to one of them).
        while (sent < 40 or len(_serving_pids(parent)) < 2) and time.monotonic() < deadline:
            list(pool.map(lambda _: _chat(url), range(20)))
            sent += 20
    assert len(_serving_pids(parent)) == 2, "the kernel gave every connection to one worker"
    # A worker records a request after its response has left, so a scrape answered by the
    # other worker right after the last response may not hold it yet: wait (bounded) until
    # one scrape shows every request, then every scrape must show exactly that.
    requests = {"route": "m", "alias": "m", "status": "200"}
    deadline = time.monotonic() + 10
    while (seen := value(scrape(url, key=None), "routeguard_requests_total", **requests)) < sent:
        assert time.monotonic() < deadline, f"{seen} of {sent} requests ever recorded"
        time.sleep(0.05)
    for _ in range(8):  # each scrape on a new connection: either worker may answer
        s = scrape(url, key=None)
        assert value(s, "routeguard_requests_total", **requests) == sent
        assert value(s, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == sent
        assert value(s, "routeguard_deployment_circuit_open") == 0
