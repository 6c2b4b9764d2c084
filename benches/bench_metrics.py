"""What Prometheus metrics cost a request: the proxy with ``observability.metrics`` off, on
(in-process values) and on in multiprocess mode (the mmap files every worker of
``serve --workers N`` writes), in one run on the same machine; plus the cost of one
``Metrics.record`` call measured alone.

    .venv/bin/python benches/bench_metrics.py [--requests 3000] [--rounds 5]

The end-to-end part starts the simulated upstream and three single-worker proxies on the
same config (master key; only ``observability`` differs), then drives them sequentially
(concurrency 1) in alternating rounds so drift in the machine's load reaches all alike, and
prints p50/p99 latency and the added p50 of each metrics mode over metrics off. Not part
of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from routeguard.bench.proxy import (
    MASTER_KEY,
    Result,
    drive,
    free_port,
    start,
    stop,
    wait_ready,
)
from routeguard.bench.report import cpu_model
from routeguard.bench.timing import percentile, time_batches


def record_cost(n: int = 20_000) -> dict[str, float]:
    """Median µs of one ``Metrics.record`` per kind of request (in this process's mode)."""
    from routeguard.gateway import Gateway
    from routeguard.observe.requestlog import Trace
    from routeguard.result import ChatResult
    from routeguard.server.metrics import Metrics, multiprocess

    dep = {"model_name": "bench", "type": "openai", "model": "sim-bench",
           "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-x",
           "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.6}  # fmt: skip
    cfg = {"model_list": [dep], "cache": {"enabled": True}}
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from embedders import WordsEmbedder  # tests/embedders.py: no model to load

    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    metrics = Metrics(gw)
    d = gw.config.deployments["bench"][0]
    usage = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}
    response = {"model": "sim-bench", "usage": usage}

    def trace(stream: bool, cache: str) -> Trace:
        t = Trace("req", time.time(), time.perf_counter())
        t.request = {"model": "bench", "messages": [], "stream": stream}
        t.result = ChatResult(alias="bench", deployment=d, attempts=1, upstream_s=0.001,
                              started=t.started, response=None if stream else response,
                              usage=dict(usage), cache=cache)  # fmt: skip
        t.first_byte = t.started + 0.002 if stream else None
        return t

    out = {"mode": 1.0 if multiprocess() else 0.0}
    for name, tr in (("plain", trace(False, "miss")), ("stream", trace(True, "miss")),
                     ("cache hit", trace(False, "hit"))):  # fmt: skip
        out[name] = percentile(time_batches(lambda tr=tr: metrics.record(tr), n), 50) / 1e3
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000, help="requests per target")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    ap.add_argument("--record-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.record_only:  # the child run in multiprocess mode
        print(json.dumps(record_cost()))
        return 0

    print(f"CPU: {cpu_model()}", flush=True)
    here = record_cost()
    mp_dir = tempfile.mkdtemp(prefix="rg-bench-mp-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": mp_dir}
    child = subprocess.run([sys.executable, __file__, "--record-only"], env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    there = json.loads(child.stdout.strip().splitlines()[-1])
    shutil.rmtree(mp_dir, ignore_errors=True)
    print("\nMetrics.record, µs per call (median of 5 x 20,000):")
    print("| request | in-process values | multiprocess (mmap) |\n|---|---|---|")
    for k in ("plain", "stream", "cache hit"):
        print(f"| {k} | {here[k]:.2f} | {there[k]:.2f} |")

    here_bin = str(Path(sys.executable).parent)
    exe = shutil.which("routeguard", path=here_bin) or "routeguard"
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-metrics-"))
    try:
        mock_port = free_port()
        mock = start([exe, "mock-upstream", "--port", str(mock_port)])
        procs.append(mock)
        mock_url = f"http://127.0.0.1:{mock_port}"
        wait_ready(mock_url + "/health", mock)
        dep = {"model_name": "bench", "type": "openai", "model": "sim-bench",
               "api_base": f"{mock_url}/v1", "api_key": "sk-upstream",
               "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.60}  # fmt: skip
        targets: dict[str, str] = {}
        for name, metrics_on, extra_env in (
            ("metrics off", False, {}),
            ("metrics on", True, {}),
            ("metrics on, multiprocess", True, {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "mp")}),
            ("metrics off (A/A control)", False, {}),
        ):
            cfg = {"model_list": [dep], "server": {"master_key": MASTER_KEY},
                   "observability": {"metrics": metrics_on}}  # fmt: skip
            path = tmp / f"{len(targets)}.json"
            path.write_text(json.dumps(cfg))
            for d in extra_env.values():
                os.makedirs(d, exist_ok=True)
            port = free_port()
            proc = start([exe, "serve", "--config", str(path), "--port", str(port),
                          "--log-level", "error"], env=extra_env)  # fmt: skip
            procs.append(proc)
            wait_ready(f"http://127.0.0.1:{port}/health", proc)
            targets[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        results: dict[str, Result] = {}
        deltas: dict[str, list[float]] = {name: [] for name in targets}
        per_round = max(1, args.requests // args.rounds)
        names = list(targets)
        for i in range(args.rounds):
            # Each round starts at another target, so no target always runs first or last.
            order = names[i % len(names) :] + names[: i % len(names)]
            this: dict[str, Result] = {}
            for name in order:
                this[name] = asyncio.run(drive(name, targets[name], 1, per_round, MASTER_KEY))
            for name, res in this.items():
                deltas[name].append((res.p50 - this["metrics off"].p50) * 1000)
                if name in results:
                    results[name].merge(res)
                else:
                    results[name] = res
        off = results["metrics off"]
        print(f"\nProxy, sequential, {per_round * args.rounds} requests per target:")
        print("| target | p50 ms | p99 ms | added p50 µs vs off (pooled) | median of rounds' "
              "added p50 µs | errors |\n|---|---|---|---|---|---|")  # fmt: skip
        for name, r in results.items():
            pooled = "" if r is off else f"{(r.p50 - off.p50) * 1000:+.1f}"
            per = "" if r is off else f"{percentile(deltas[name], 50):+.1f}"
            print(f"| {name} | {r.p50:.3f} | {r.p99:.3f} | {pooled} | {per} | {r.errors} |")
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
