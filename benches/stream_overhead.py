"""What relaying a streamed answer costs the proxy, against the bare passthrough floor.

The simulated upstream paces its streams (``--tokens-per-s``, one event a token, so each
event arrives on its own as a real model's do); one bare uvicorn + uvloop + aiohttp
passthrough (:mod:`routeguard.bench.passthrough`, which relays an event stream as it
arrives) and one ``routeguard serve`` per code tree given (``--code NAME=DIR``: a
``python/`` directory to run besides this checkout's, its built extension copied in, for a
before/after in the same run) take streamed chat requests in turn, in alternating blocks,
one at a time or ``--concurrency N`` at once. Per target: the time to the first token (the
first event carrying answer text) and to the stream's last byte (p50 and p99), and the
server process's CPU time per request and per event (all threads, from /proc around each
block, which other jobs' load inflates far less than the clock). With ``--pin S:C`` the
servers run on CPU S, the client and the upstream on CPU C.

    .venv/bin/python benches/stream_overhead.py --requests 600 --pin 0:1
    .venv/bin/python benches/stream_overhead.py --code before=/tmp/old/python --pin 0:1
    .venv/bin/python benches/stream_overhead.py --concurrency 50 --tokens-per-s 200 --pin 0:1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import aiohttp

from routeguard.bench import proxy
from routeguard.bench.report import cpu_model
from routeguard.bench.timing import percentile

# The first event carrying answer text: a chat delta with content (not the role-only first
# chunk's ""), or a Responses output-text delta.
_FIRST_TOKEN = re.compile(rb'"content":"[^"]|"type":"response\.output_text\.delta"')
BODIES = {
    "chat": ("/v1/chat/completions", {**proxy.BODY, "stream": True}),
    "responses": ("/v1/responses", {**proxy.RESPONSES_BODY, "stream": True}),
}


def main() -> int:
    """Run the comparison and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600, help="requests per target")
    ap.add_argument("--block", type=int, default=20, help="requests per target in a row")
    ap.add_argument("--concurrency", type=int, default=1, help="streams open at once")
    ap.add_argument("--tokens-per-s", type=float, default=2000.0, help="the upstream's pace")
    ap.add_argument("--pin", default=None, help="S:C: servers on CPU S, the rest on CPU C")
    ap.add_argument("--api", choices=sorted(BODIES), default="chat",
                    help="chat (/v1/chat/completions) or responses (/v1/responses)")  # fmt: skip
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                    help="another routeguard python/ tree to compare (repeatable)")  # fmt: skip
    args = ap.parse_args()
    server_cpus, client_cpus = proxy.pinned(args.pin)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)

    def start(
        cmd: list[str], cpus: set[int] | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return proxy.start(cmd, env=env, cpus=cpus)

    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-stream-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    mock, mock_url = proxy.start_upstream(client_cpus, ("--tokens-per-s", str(args.tokens_per_s)))
    try:
        cfg = tmp / "config.yaml"
        proxy.write_config(cfg, mock_url)
        ports["passthrough"] = proxy.free_port()
        procs["passthrough"] = start([sys.executable, "-m", "routeguard.bench.passthrough",
                                      "--port", str(ports["passthrough"]),
                                      "--upstream", mock_url], server_cpus)  # fmt: skip
        trees = [("routeguard", None), *(tuple(c.split("=", 1)) for c in args.code)]
        for name, code in trees:
            env = None if code is None else {"PYTHONPATH": code}
            ports[name] = proxy.free_port()
            procs[name] = start([sys.executable, "-m", "routeguard.cli", "serve", "--config",
                                 str(cfg), "--port", str(ports[name]), "--log-level", "error"],
                                server_cpus, env)  # fmt: skip
        for name, proc in procs.items():
            proxy.wait_ready(f"http://127.0.0.1:{ports[name]}/health", proc)
        rows = asyncio.run(
            _drive(procs, ports, args.requests, args.block, args.api, args.concurrency)
        )
    finally:
        for proc in [*procs.values(), mock]:
            proxy.stop(proc)
    print(
        f"CPU: {cpu_model()}; {BODIES[args.api][0]}; upstream pace {args.tokens_per_s:g} tokens/s; "
        f"concurrency {args.concurrency}; pinned {args.pin or 'no'}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| target | events an answer | first token p50 / p99, ms | last byte p50 / p99, ms "
        "| CPU a request, ms | CPU above the passthrough's, µs an event |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row.events} | {row.first[0]:.2f} / {row.first[1]:.2f} "
            f"| {row.last[0]:.2f} / {row.last[1]:.2f} | {row.cpu:.3f} "
            f"| {_per_event(rows, name):.1f} |"
        )
    return 0


class _Row(NamedTuple):
    """One target's figures: events an answer, (p50, p99) to the first token and to the
    last byte in ms, CPU a request in ms."""

    events: int
    first: tuple[float, float]
    last: tuple[float, float]
    cpu: float


def _per_event(rows: dict[str, _Row], name: str) -> float:
    """CPU an event beyond the passthrough's per request, in µs: (cpu - floor's) / events."""
    row = rows[name]
    floor = rows["passthrough"].cpu
    return (row.cpu - floor) / max(row.events, 1) * 1e3 if name != "passthrough" else 0.0


def _p50_p99(samples: list[float]) -> tuple[float, float]:
    """The median and 99th percentile of ``samples`` (seconds), in ms."""
    return percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3


async def _drive(
    procs: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    requests: int,
    block: int,
    api: str,
    concurrency: int,
) -> dict[str, _Row]:
    path, body = BODIES[api]
    payload = json.dumps(body).encode()
    headers = {"authorization": f"Bearer {proxy.MASTER_KEY}", "content-type": "application/json"}
    first: dict[str, list[float]] = {n: [] for n in procs}
    last: dict[str, list[float]] = {n: [] for n in procs}
    cpu = dict.fromkeys(procs, 0.0)
    events = dict.fromkeys(procs, 0)
    connector = aiohttp.TCPConnector(limit=max(100, concurrency))
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one(name: str) -> tuple[float, float]:
            t0 = time.perf_counter()
            url = f"http://127.0.0.1:{ports[name]}{path}"
            parts: list[bytes] = []
            seen = None
            async with s.post(url, data=payload, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"{name}: status {r.status}")
                async for part in r.content.iter_any():
                    parts.append(part)
                    if seen is None and _FIRST_TOKEN.search(b"".join(parts)):
                        seen = time.perf_counter()
            answer = b"".join(parts)
            events[name] = answer.count(b"data: ")
            end = time.perf_counter()
            return (seen or end) - t0, end - t0

        async def run(name: str, n: int) -> None:
            for _ in range(n):
                to_first, to_last = await one(name)
                first[name].append(to_first)
                last[name].append(to_last)

        for name in procs:  # warm-up
            await asyncio.gather(*(run(name, 50 // concurrency + 1) for _ in range(concurrency)))
            first[name].clear()
            last[name].clear()
        for _ in range(max(1, requests // (block * concurrency))):
            for name, proc in procs.items():
                c0 = proxy.process_cpu_s(proc.pid)
                await asyncio.gather(*(run(name, block) for _ in range(concurrency)))
                cpu[name] += proxy.process_cpu_s(proc.pid) - c0
    return {n: _Row(events[n], _p50_p99(first[n]), _p50_p99(last[n]), cpu[n] / len(last[n]) * 1e3)
            for n in procs}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
