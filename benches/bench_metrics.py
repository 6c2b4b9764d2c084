"""What the request log and Prometheus metrics cost a request, in one run on the same machine.

1. In process: CPU µs of one ``Metrics.record`` per kind of request (in-process values, and
   the multiprocess files every worker of ``serve --workers N`` writes), and of building
   and queueing one request-log line (what the event loop pays; the writer thread does the
   encoding and the write).
2. End to end: single-worker proxies on the same config against the simulated upstream,
   differing only in ``observability``: everything off, the request log and metrics on
   (the issue's target), and a second "off" and a second "log+metrics" as A/A controls
   (``--parts`` adds each of the two alone, and both in multiprocess mode). They are driven
   sequentially (concurrency 1) in short alternating rounds, each round starting at another
   proxy, so drift in the machine's load reaches all alike. Printed: p50/p95 latency, what
   each adds over "off" (pooled samples, and the median of the rounds' differences), and
   CPU per request of each proxy process (all its threads, from /proc: the log's writer
   thread included), with the CPU model and the load average before and after.

    PYTHONPATH=python .venv/bin/python benches/bench_metrics.py [--requests 150] [--rounds 40]
        [--parts]

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from routeguard.bench import proxy
from routeguard.bench.proxy import MASTER_KEY, Result
from routeguard.bench.report import cpu_model
from routeguard.bench.timing import percentile

ROOT = Path(__file__).resolve().parent.parent
DEP = {"model_name": "bench", "type": "openai", "model": "sim-bench",
       "api_key": "sk-upstream", "input_cost_per_mtok": 0.15,
       "output_cost_per_mtok": 0.6}  # fmt: skip


def _traces() -> tuple[Any, dict[str, Any]]:
    """A gateway's metrics and one finished trace per kind of request."""
    from routeguard.gateway import Gateway
    from routeguard.observe.requestlog import Trace
    from routeguard.result import ChatResult
    from routeguard.server.metrics import Metrics

    sys.path.insert(0, str(ROOT / "tests"))
    from embedders import WordsEmbedder  # tests/embedders.py: no model to load

    cfg = {"model_list": [{**DEP, "api_base": "http://127.0.0.1:9/v1"}],
           "cache": {"enabled": True}}  # fmt: skip
    gw = Gateway.from_config(cfg, embedder=WordsEmbedder())
    d = gw.config.deployments["bench"][0]
    usage = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}
    response = {"id": "chatcmpl-1", "model": "sim-bench", "usage": usage,
                "choices": [{"finish_reason": "stop", "message": {"content": "x"}}]}  # fmt: skip

    def trace(stream: bool, cache: str) -> Trace:
        t = Trace("req_0123456789abcdef", time.time(), time.perf_counter())
        t.request = {"model": "bench", "messages": [{"role": "user", "content": "hi"}],
                     "max_tokens": 16, "stream": stream}  # fmt: skip
        t.result = ChatResult(alias="bench", deployment=d, attempts=1, upstream_s=0.001,
                              started=t.started, response=None if stream else response,
                              usage=dict(usage), cache=cache)  # fmt: skip
        t.first_byte = t.started + 0.002 if stream else None
        return t

    kinds = {"plain": trace(False, "miss"), "stream": trace(True, "miss"),
             "cache hit": trace(False, "hit")}  # fmt: skip
    return Metrics(gw), kinds


def _per_call_us(fn: Any, n: int) -> float:
    """Median over 5 batches of the CPU µs of one ``fn()`` call."""
    samples = []
    for _ in range(5):
        c0 = time.process_time()
        for _ in range(n):
            fn()
        samples.append((time.process_time() - c0) / n * 1e6)
    return statistics.median(samples)


def record_cost(n: int = 20_000) -> dict[str, float]:
    """CPU µs of one ``Metrics.record`` per kind of request (in this process's mode)."""
    metrics, kinds = _traces()
    return {name: _per_call_us(lambda t=t: metrics.record(t), n) for name, t in kinds.items()}


def log_cost(n: int = 4_000) -> tuple[float, float]:
    """CPU µs per request-log line: queueing a finished request's trace (the event loop's
    share), and building and encoding its line (the writer thread's share)."""
    from routeguard.observe.requestlog import RequestLog, _enc

    _, kinds = _traces()
    tr = kinds["plain"]
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-log-"))
    rl = RequestLog(tmp / "requests.jsonl", queue_size=10 * n)
    try:
        queued = _per_call_us(lambda: rl.record_trace(tr, "/v1/chat/completions"), n)
        rl.flush(30)
    finally:
        rl.close()
        shutil.rmtree(tmp, ignore_errors=True)
    built = _per_call_us(lambda: _enc.encode(tr.entry("/v1/chat/completions", False)), n)
    return queued, built


# name -> (metrics on, request log on, multiprocess files)
TARGETS: dict[str, tuple[bool, bool, bool]] = {
    "off": (False, False, False),
    "log+metrics": (True, True, False),
    "off (A/A)": (False, False, False),
    "log+metrics (A/A)": (True, True, False),
}
PARTS: dict[str, tuple[bool, bool, bool]] = {  # --parts: which of the two costs what
    "metrics only": (True, False, False),
    "log only": (False, True, False),
    "log+metrics, multiprocess": (True, True, True),
}


def end_to_end(
    requests: int, rounds: int, targets: dict[str, tuple[bool, bool, bool]]
) -> dict[str, dict[str, Any]]:
    """Latencies (s) and CPU µs per request of each target, over alternating rounds."""
    procs: list[Any] = []
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-observe-"))
    try:
        mock, mock_url = proxy.start_upstream()
        procs.append(mock)
        servers: dict[str, tuple[str, Any]] = {}
        for i, (name, (metrics_on, log_on, mp)) in enumerate(targets.items()):
            obs: dict[str, Any] = {"metrics": metrics_on}
            if log_on:
                obs["request_log"] = str(tmp / f"requests{i}.jsonl")
            cfg = {"model_list": [{**DEP, "api_base": f"{mock_url}/v1"}],
                   "server": {"master_key": MASTER_KEY}, "observability": obs}  # fmt: skip
            path = tmp / f"config{i}.json"
            path.write_text(json.dumps(cfg))
            env = {}
            if mp:
                (tmp / f"mp{i}").mkdir()
                env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / f"mp{i}")
            port = proxy.free_port()
            p = proxy.start([*proxy.ROUTEGUARD, "serve", "--config", str(path), "--port",
                             str(port), "--log-level", "error"], env=env)  # fmt: skip
            procs.append(p)
            proxy.wait_ready(f"http://127.0.0.1:{port}/health", p)
            servers[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", p)
        out: dict[str, dict[str, Any]] = {
            n: {"latencies": [], "round_p50": [], "cpu": [], "loop": [], "errors": 0}
            for n in servers
        }
        names = list(servers)
        for i in range(rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                url, p = servers[name]
                c0 = proxy.process_cpu_s(p.pid)
                m0 = proxy.process_cpu_s(p.pid, p.pid)  # the main thread: the event loop
                res: Result = asyncio.run(proxy.drive(name, url, 1, requests, MASTER_KEY))
                cpu = proxy.process_cpu_s(p.pid) - c0
                loop_cpu = proxy.process_cpu_s(p.pid, p.pid) - m0
                o = out[name]
                o["latencies"] += res.latencies
                o["round_p50"].append(res.p50)
                o["errors"] += res.errors
                o["cpu"].append((cpu, requests + 50))  # the 50 warm-up requests too
                o["loop"].append((loop_cpu, requests + 50))
        for i, (name, (_, log_on, _)) in enumerate(targets.items()):
            if log_on:  # a figure means something only if the lines were written
                lines = (tmp / f"requests{i}.jsonl").read_bytes().count(b"\n")
                if lines < rounds * requests:
                    raise RuntimeError(f"{name}: {lines} log lines for {rounds * requests}")
        return out
    finally:
        for p in reversed(procs):
            proxy.stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    """Print the in-process costs, then the end-to-end table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=150, help="requests per proxy per round")
    ap.add_argument("--rounds", type=int, default=40, help="alternating rounds")
    ap.add_argument("--parts", action="store_true", help="also metrics only, log only and "
                    "log+metrics in multiprocess mode")  # fmt: skip
    ap.add_argument("--record-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.record_only:  # the child run in multiprocess mode
        print(json.dumps(record_cost()))
        return 0

    load0 = os.getloadavg()[0]
    print(f"CPU: {cpu_model()}; {os.cpu_count()} cores; load average {load0:.1f}", flush=True)
    here = record_cost()
    mp_dir = tempfile.mkdtemp(prefix="rg-bench-mp-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": mp_dir}
    child = subprocess.run([sys.executable, __file__, "--record-only"], env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    there = json.loads(child.stdout.strip().splitlines()[-1])
    shutil.rmtree(mp_dir, ignore_errors=True)
    queued, built = log_cost()
    print("\nIn process, CPU µs per call (median of 5 batches):")
    print("| call | in-process values | multiprocess (mmap) |\n|---|---|---|")
    for k in ("plain", "stream", "cache hit"):
        print(f"| `Metrics.record`, {k} | {here[k]:.1f} | {there[k]:.1f} |")
    print(f"| request-log line queued (event loop) | {queued:.1f} | |")
    print(f"| request-log line built and encoded (writer thread) | {built:.1f} | |")

    e = end_to_end(args.requests, args.rounds, {**TARGETS, **(PARTS if args.parts else {})})
    load1 = os.getloadavg()[0]

    def p(name: str, q: float) -> float:
        return percentile(e[name]["latencies"], q) * 1e6  # µs

    def cpu(name: str, what: str = "cpu") -> float:  # µs per request, all rounds (10 ms ticks)
        return sum(c for c, _ in e[name][what]) / sum(n for _, n in e[name][what]) * 1e6

    base50 = (p("off", 50) + p("off (A/A)", 50)) / 2
    base95 = (p("off", 95) + p("off (A/A)", 95)) / 2
    base_cpu = (cpu("off") + cpu("off (A/A)")) / 2
    base_loop = (cpu("off", "loop") + cpu("off (A/A)", "loop")) / 2
    off_rounds = [
        (a + b) / 2 for a, b in zip(e["off"]["round_p50"], e["off (A/A)"]["round_p50"], strict=True)
    ]
    print(f"\nProxy, sequential, {args.rounds} rounds x {args.requests} requests per proxy; "
          f"load average {load0:.1f} before, {load1:.1f} after:")  # fmt: skip
    print("| proxy | p50 ms | p95 ms | p50 added µs (pooled) | p50 added µs (median of rounds) "
          "| p95 added µs | CPU µs per request | CPU added µs | event-loop thread CPU added µs "
          "| errors |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, o in e.items():
        rounds_added = statistics.median(
            (r - b) * 1000 for r, b in zip(o["round_p50"], off_rounds, strict=True)
        )
        print(f"| {name} | {p(name, 50) / 1000:.3f} | {p(name, 95) / 1000:.3f} "
              f"| {p(name, 50) - base50:+.0f} | {rounds_added:+.0f} | {p(name, 95) - base95:+.0f} "
              f"| {cpu(name):.0f} | {cpu(name) - base_cpu:+.0f} "
              f"| {cpu(name, 'loop') - base_loop:+.0f} | {o['errors']} |")  # fmt: skip
    spread = abs(p("off", 50) - p("off (A/A)", 50))
    spread_on = abs(p("log+metrics", 50) - p("log+metrics (A/A)", 50))
    on50 = (p("log+metrics", 50) + p("log+metrics (A/A)", 50)) / 2
    on_cpu = (cpu("log+metrics") + cpu("log+metrics (A/A)")) / 2
    on_loop = (cpu("log+metrics", "loop") + cpu("log+metrics (A/A)", "loop")) / 2
    print(f"\nlog+metrics (both copies) over off (both copies): p50 {on50 - base50:+.0f} µs, "
          f"CPU {on_cpu - base_cpu:+.0f} µs per request (event-loop thread "
          f"{on_loop - base_loop:+.0f} µs); A/A p50 spread: off {spread:.0f} µs, "
          f"log+metrics {spread_on:.0f} µs")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
