"""The first request after ``routeguard serve`` reports ready, against steady ones.

    .venv/bin/python benches/bench_first_request.py [--requests 30]

Starts the simulated upstream and ``routeguard serve`` with the semantic cache on and a
learned cheap/strong route (both need the MiniLM embedder and the router model), waits for
``/health``, then sends one request at a time, each a different prompt (all cache misses),
and prints the first request's latency, the median of the rest, and their ratio, with the
CPU model. Ready means loaded: the ratio should stay at or below 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from proxy_overhead import MASTER_KEY, ROOT, free_port, start, stop, wait_ready
from routeguard.bench.timing import percentile


def cpu_model() -> str:
    """The CPU's model name, as Linux reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_config(path: Path, mock_url: str) -> None:
    """A config whose routed alias needs the embedder, the cache and the learned model."""
    dep = {"type": "openai", "api_base": mock_url + "/v1", "api_key": "k"}
    cfg = {
        "model_list": [
            {**dep, "model_name": "cheap-m", "model": "sim-cheap"},
            {**dep, "model_name": "strong-m", "model": "sim-strong"},
        ],
        "cache": {"enabled": True},
        "routes": {
            "auto": {
                "mode": "routed",
                "cheap": "cheap-m",
                "strong": "strong-m",
                "strong_share": 0.3,
            }
        },
        "server": {"master_key": MASTER_KEY},
    }
    path.write_text(json.dumps(cfg))


def one(url: str, i: int) -> float:
    """Seconds for one chat completion with a prompt unique to ``i``."""
    body = json.dumps(
        {
            "model": "auto",
            "messages": [{"role": "user", "content": f"Question {i}: how do tides work {i}?"}],
            "max_tokens": 16,
        }
    ).encode()
    req = urllib.request.Request(
        url,
        data=body,
        headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        assert r.status == 200
    return time.perf_counter() - t0


def trial(exe: str, requests: int) -> tuple[float, float, list[float]]:
    """One fresh server: (start-to-ready s, first request s, steady request s)."""
    tmp = Path(tempfile.mkdtemp(prefix="rg-first-"))
    procs = []
    try:
        mock_port, rg_port = free_port(), free_port()
        mock = start([exe, "mock-upstream", "--port", str(mock_port)])
        procs.append(mock)
        mock_url = f"http://127.0.0.1:{mock_port}"
        wait_ready(mock_url + "/health", mock)
        cfg = tmp / "config.json"
        write_config(cfg, mock_url)
        t0 = time.perf_counter()
        rg = start([exe, "serve", "--config", str(cfg), "--port", str(rg_port),
                    "--log-level", "error"])  # fmt: skip
        procs.append(rg)
        wait_ready(f"http://127.0.0.1:{rg_port}/health", rg)
        startup = time.perf_counter() - t0
        url = f"http://127.0.0.1:{rg_port}/v1/chat/completions"
        first = one(url, 0)
        return startup, first, [one(url, i) for i in range(1, requests + 1)]
    finally:
        for p in reversed(procs):
            stop(p)


def main() -> None:
    """Start fresh servers, time their first and steady requests, print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=30, help="steady requests after the first")
    ap.add_argument("--trials", type=int, default=3, help="fresh servers to start")
    args = ap.parse_args()
    # The CLI beside this interpreter (the project's .venv when run as documented).
    here = str(Path(sys.executable).parent)
    exe = shutil.which("routeguard", path=here) or str(ROOT / ".venv" / "bin" / "routeguard")
    print(f"CPU: {cpu_model()}")
    print(
        f"  {'trial':<6}{'ready ms':>10}{'first ms':>10}{'steady p50 ms':>15}{'first/steady':>14}"
    )
    ratios = []
    for t in range(args.trials):
        startup, first, steady = trial(exe, args.requests)
        med = percentile(steady, 50)
        ratios.append(first / med)
        print(f"  {t + 1:<6}{startup * 1e3:>10.1f}{first * 1e3:>10.2f}{med * 1e3:>15.2f}"
              f"{first / med:>13.2f}x")  # fmt: skip
    print(f"  median first/steady over {args.trials} servers: {percentile(ratios, 50):.2f}x")


if __name__ == "__main__":
    main()
