"""What the slowest requests of a running proxy overlapped, and how late its event loop runs.

One ``routeguard serve`` per code tree (this checkout's, and ``--code NAME=DIR`` for another
``python/`` directory, its built extension copied in) runs under a wrapper that stamps, with
the clock the client uses: every garbage collection on the loop's thread, every metrics
batch, every insert of the spend writer thread and every span export. A 2 ms timer on the
loop, started by the first request, records how late it fires. The client sends sequential
requests to each server in turn. A request slower than ``--slow`` times the median is put
down to whatever of those it overlapped (``handler`` when none, the handler being slow
itself or waiting on the upstream). ``--pin S:C`` puts the servers on CPU S and the client
and the upstream on CPU C; ``--keyed`` serves a virtual key with a budget, RPM and TPM;
``--tracing`` traces every request to a local OTLP sink.

    .venv/bin/python benches/proxy_tail.py --pin 0:1
    .venv/bin/python benches/proxy_tail.py --code before=/tmp/old/python --tracing
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

KINDS = ("gc0", "gc1", "gc2", "metrics batch", "spend writer", "span export")
TICK_S = 0.002


def _serve(argv: list[str]) -> int:
    """The child: ``routeguard serve`` with the stamps (written to $TAIL_OUT at SIGUSR1)."""
    from routeguard.observe.spend import SpendRecords
    from routeguard.server.app import ProxyApp
    from routeguard.server.metrics import Metrics

    clock = time.perf_counter
    events: list[tuple[str, float, float]] = []
    late: list[float] = []

    def wrap(cls: Any, name: str, kind: str) -> None:
        fn = getattr(cls, name)

        def stamped(*a: Any, **k: Any) -> Any:
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                events.append((kind, t0, clock()))

        setattr(cls, name, stamped)

    wrap(Metrics, "flush", "metrics batch")
    wrap(SpendRecords, "_insert", "spend writer")
    try:
        from routeguard.server.tracing import WireExporter

        wrap(WireExporter, "export", "span export")
    except ImportError:  # no tracing extra here
        pass
    began = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if phase == "start":
            began[0] = clock()
        else:
            events.append((f"gc{info['generation']}", began[0], clock()))

    gc.callbacks.append(on_gc)
    http = ProxyApp._http

    async def first(self: ProxyApp, scope: Any, receive: Any, send: Any) -> None:
        if not late:  # the first request starts the timer, after start-up's collection
            late.append(0.0)
            loop = asyncio.get_running_loop()

            def tick(due: float) -> None:
                now = clock()
                late.append(now - due)
                loop.call_later(TICK_S, tick, now + TICK_S)

            loop.call_later(TICK_S, tick, clock() + TICK_S)
        await http(self, scope, receive, send)

    ProxyApp._http = first  # type: ignore[method-assign]

    def dump(*_: Any) -> None:
        Path(os.environ["TAIL_OUT"]).write_text(json.dumps({"events": events, "late": late}))

    signal.signal(signal.SIGUSR1, dump)
    from routeguard.cli import main

    return main(argv)


async def _sequential(url: str, token: str, n: int) -> list[tuple[float, float]]:
    """``n`` requests one after another: (sent, answered) on the perf-counter clock."""
    import aiohttp

    from routeguard.bench import proxy

    payload = json.dumps(proxy.BODY).encode()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(100):  # warm the connection and lazy server-side setup
            async with session.post(url, data=payload, headers=headers) as r:
                await r.read()
        for _ in range(n):
            t0 = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as r:
                await r.read()
            out.append((t0, time.perf_counter()))
    return out


def _report(name: str, sent: list[tuple[float, float]], data: dict[str, Any], slow: float) -> str:
    """One table row: latency, the slow requests by what they overlapped, the loop's lateness."""
    from routeguard.bench.timing import percentile

    took = [b - a for a, b in sent]
    median = percentile(took, 50)
    start = min(a for a, _ in sent)
    events = [e for e in data["events"] if e[2] >= start]
    causes: Counter[str] = Counter()
    for a, b in sent:
        if b - a <= slow * median:
            continue
        hit = sorted({kind for kind, s, e in events if s < b and e > a})
        causes[" + ".join(hit) or "handler"] += 1
    late = data["late"][1:]
    lateness = (f"{percentile(late, 50) * 1e3:.2f} / {percentile(late, 99) * 1e3:.2f}"
                if late else "-")  # fmt: skip
    count = Counter(kind for kind, _, _ in events)
    spent: Counter[str] = Counter()
    for kind, s, e in events:
        spent[kind] += e - s
    seen = ", ".join(f"{k} {count[k]} ({spent[k] / count[k] * 1e3:.2f} ms)" for k in KINDS
                     if count[k])  # fmt: skip
    why = ", ".join(f"{k} {n}" for k, n in causes.most_common()) or "-"
    return (f"| {name} | {median * 1e3:.3f} / {percentile(took, 99) * 1e3:.3f} | "
            f"{sum(causes.values())} of {len(sent)}: {why} | {lateness} | {seen} |")  # fmt: skip


def _drive(args: argparse.Namespace) -> int:
    from routeguard.bench import proxy
    from routeguard.bench.report import cpu_model

    serve, rest = proxy.pinned(args.pin)
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-tail-"))
    procs: list[subprocess.Popen[bytes]] = []
    servers: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    try:
        mock, mock_url = proxy.start_upstream(rest)
        procs.append(mock)
        cfg, token = tmp / "config.yaml", proxy.MASTER_KEY
        if args.keyed:
            cfg = tmp / "keyed.json"
            proxy.keyed_config(cfg, mock_url, tmp / "keys.db")
            token = proxy.make_key(cfg)
        elif args.tracing:
            sink_port = proxy.free_port()
            sink = proxy.start([sys.executable, "-m", "routeguard.bench.otlp_sink",
                                "--port", str(sink_port)], cpus=rest)  # fmt: skip
            procs.append(sink)
            proxy.wait_ready(f"http://127.0.0.1:{sink_port}/health", sink)
            proxy.tracing_config(cfg, mock_url, f"http://127.0.0.1:{sink_port}")
        else:
            proxy.write_config(cfg, mock_url)
        for name, code in proxy.code_trees(Path(__file__).resolve().parent.parent, args.code):
            out = tmp / f"{name}.json"
            proc, url = proxy.serve_wrapped(__file__, code, cfg, {"TAIL_OUT": str(out)}, serve)
            procs.append(proc)
            servers[name] = (proc, url, out)
        if rest is not None:
            os.sched_setaffinity(0, rest)
        sent: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        per_round = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            for name, (_, url, _) in servers.items():
                sent[name] += asyncio.run(_sequential(url, token, per_round))
        rows = []
        for name, (proc, _, out) in servers.items():
            rows.append(_report(name, sent[name], proxy.dumped(proc, out), args.slow))
    finally:
        for proc in reversed(procs):
            proxy.stop(proc)
    config = "virtual key" if args.keyed else "tracing" if args.tracing else "master key"
    print(f"CPU: {cpu_model()}; {config}; pinned {args.pin or 'no'}; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(
        f"| target | p50 / p99, ms | slower than {args.slow:g}x the median: what they "
        "overlapped | loop lateness p50 / p99, ms | events (mean duration) |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


def main() -> int:
    """Serve (as the child) or drive the servers and print the table."""
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return _serve(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000, help="requests per target")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    ap.add_argument("--slow", type=float, default=2.5, help="slow: this many times the median")
    ap.add_argument("--pin", default=None, help="S:C: servers on CPU S, the rest on CPU C")
    config = ap.add_mutually_exclusive_group()
    config.add_argument("--keyed", action="store_true", help="a virtual key, budget, RPM, TPM")
    config.add_argument("--tracing", action="store_true", help="every request traced over OTLP")
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                    help="another routeguard python/ tree to compare (repeatable)")  # fmt: skip
    return _drive(ap.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
