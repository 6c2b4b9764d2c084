"""Where a running proxy's event loop spends its time on recording and tracing: per-thread CPU
clocks around each call (metrics, request log, spend log, tracing hooks, the batch span
processor) and around the garbage collector, inside ``routeguard serve`` processes, not in a
warm microbenchmark (between two requests a proxy runs a millisecond of other Python, which
pushes the recording code out of the CPU's caches, so calls cost several times what they do
in a loop).

Four proxies, driven sequentially (concurrency 1) in alternating rounds: observability off
and on (``--mode recording``: request log and metrics; ``--mode tracing``: traces to a local
OTLP sink), each from this source tree and, with ``--baseline PATH`` (another checkout's
``python`` directory), from that one. Prints µs per request of each wrapped call, and each
process's CPU and its event loop's thread CPU per request (from /proc).

    .venv/bin/python benches/proxy_insitu.py --mode tracing --baseline /path/to/main/python
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent / "python"


def _serve(argv: list[str]) -> int:
    """The child: ``routeguard serve`` with the calls wrapped (totals written at SIGUSR1)."""
    from routeguard.observe.requestlog import RequestLog, Trace
    from routeguard.observe.spend import SpendRecords
    from routeguard.server.metrics import Metrics

    acc: dict[str, list[int]] = {}

    def wrap(cls: Any, name: str, label: str) -> None:
        fn = getattr(cls, name, None)
        if fn is None:  # a tree without this call
            return

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return fn(*a, **k)
            finally:
                c = acc.setdefault(label, [0, 0])
                c[0] += time.thread_time_ns() - t0
                c[1] += 1

        setattr(cls, name, timed)

    for cls, name in ((Metrics, "record"), (Metrics, "flush"), (RequestLog, "record_trace"),
                      (SpendRecords, "record"), (SpendRecords, "record_trace"),
                      (Trace, "spend_row")):  # fmt: skip
        wrap(cls, name, f"{cls.__name__}.{name}")
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from routeguard.server.tracing import Tracing

        for name in ("begin", "end", "attempt_begin", "attempt_end", "inject", "_end_attributes"):
            wrap(Tracing, name, f"Tracing.{name}")
        wrap(BatchSpanProcessor, "on_end", "BatchSpanProcessor.on_end")
    except ImportError:
        pass
    started = [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if not any(not k.startswith("gc") for k in acc):  # start-up (serve's freeze)
            return
        if phase == "start":
            started[0] = time.thread_time_ns()
        else:
            c = acc.setdefault(f"gc gen{info['generation']}", [0, 0])
            c[0] += time.thread_time_ns() - started[0]
            c[1] += 1

    gc.callbacks.append(on_gc)
    out = os.environ["INSITU_OUT"]

    def dump(*_: Any) -> None:
        Path(out).write_text(json.dumps(acc))

    atexit.register(dump)
    signal.signal(signal.SIGUSR1, dump)
    from routeguard.cli import main

    return main(argv)


def _drive(args: argparse.Namespace) -> int:
    from routeguard.bench import proxy
    from routeguard.bench.report import cpu_model
    from routeguard.bench.timing import percentile

    trees = {"this": str(HERE)}
    if args.baseline:
        trees = {"baseline": args.baseline, **trees}
    names = [f"{t}-{m}" for t in trees for m in ("off", "on")]
    tmp = Path(tempfile.mkdtemp(prefix="rg-insitu-"))
    procs: list[Any] = []
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    try:
        mock, mock_url = proxy.start_upstream()
        procs.append(mock)
        sink_port = proxy.free_port()
        sink = proxy.start([sys.executable, "-m", "routeguard.bench.otlp_sink",
                            "--port", str(sink_port)])  # fmt: skip
        procs.append(sink)
        proxy.wait_ready(f"http://127.0.0.1:{sink_port}/health", sink)
        params = {"model": "openai/sim-bench", "api_base": mock_url + "/v1", "api_key": "sk-x"}
        dep = {"model_name": "bench", "litellm_params": params}
        servers = {}
        for name in names:
            obs: dict[str, Any] = {}
            if name.endswith("-on") and args.mode == "tracing":
                obs["tracing"] = {"endpoint": f"http://127.0.0.1:{sink_port}"}
            elif args.mode == "recording":
                obs["metrics"] = name.endswith("-on")
                if name.endswith("-on"):
                    obs["request_log"] = str(tmp / f"{name}.jsonl")
            cfg = {"model_list": [dep], "general_settings": {"master_key": proxy.MASTER_KEY},
                   "observability": obs}  # fmt: skip
            path = tmp / f"{name}.json"
            path.write_text(json.dumps(cfg))
            p_port = proxy.free_port()
            env = {"INSITU_OUT": str(tmp / f"{name}.acc.json"),
                   "PYTHONPATH": trees[name.rsplit("-", 1)[0]]}  # fmt: skip
            p = proxy.start([sys.executable, __file__, "--serve", "serve", "--config", str(path),
                             "--port", str(p_port), "--log-level", "error"], env=env)  # fmt: skip
            procs.append(p)
            proxy.wait_ready(f"http://127.0.0.1:{p_port}/health", p)
            servers[name] = (f"http://127.0.0.1:{p_port}/v1/chat/completions", p)
        lat: dict[str, list[float]] = {n: [] for n in names}
        cpu = dict.fromkeys(names, 0.0)
        loop = dict.fromkeys(names, 0.0)
        count = dict.fromkeys(names, 0)
        for i in range(args.rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                url, p = servers[name]
                c0, m0 = proxy.process_cpu_s(p.pid), proxy.process_cpu_s(p.pid, p.pid)
                res = asyncio.run(proxy.drive(name, url, 1, args.requests, proxy.MASTER_KEY))
                cpu[name] += proxy.process_cpu_s(p.pid) - c0
                loop[name] += proxy.process_cpu_s(p.pid, p.pid) - m0
                count[name] += args.requests + 50  # its warm-up requests too
                lat[name] += res.latencies
        for _, p in servers.values():
            os.kill(p.pid, signal.SIGUSR1)
        time.sleep(1)
        print(f"{args.mode}: {args.rounds} rounds x {args.requests} requests; load average "
              f"{os.getloadavg()[0]:.1f} at the end")  # fmt: skip
        for name in names:
            acc = json.loads((tmp / f"{name}.acc.json").read_text())
            print(f"\n{name}: p50 {percentile(lat[name], 50) * 1e6:.0f} µs, CPU "
                  f"{cpu[name] / count[name] * 1e6:.0f} µs per request, event loop's thread "
                  f"{loop[name] / count[name] * 1e6:.0f} µs")  # fmt: skip
            for k, (ns, calls) in sorted(acc.items()):
                print(f"  {k}: {ns / count[name] / 1e3:.1f} µs per request ({calls} calls)")
    finally:
        for p in reversed(procs):
            proxy.stop(p)
    return 0


def main() -> int:
    """Drive the proxies (or, with ``--serve``, be one of them)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return _serve(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("recording", "tracing"), default="recording")
    ap.add_argument("--baseline", help="another tree's python/ directory to compare with")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--requests", type=int, default=250)
    return _drive(ap.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
