"""What relaying a streamed answer costs the proxy, against the bare passthrough floor.

The simulated upstream paces its streams (``--tokens-per-s``, one event a token, so each
event arrives on its own as a real model's do); one bare uvicorn + uvloop + aiohttp
passthrough (:mod:`routeguard.bench.passthrough`, which relays an event stream as it
arrives) and one ``routeguard serve`` per code tree given (``--code NAME=DIR``: a
``python/`` directory to run besides this checkout's, its built extension copied in, for a
before/after in the same run) take
streamed chat requests in turn, sequentially, in alternating blocks. Per target: p50 time to
the stream's last byte, and the server process's CPU time per request and per event (all
threads, from /proc around each block, which other jobs' load inflates far less than the
clock). With ``--pin S:C`` the servers run on CPU S, the client and the upstream on CPU C.

    .venv/bin/python benches/stream_overhead.py --requests 600 --pin 0:1
    .venv/bin/python benches/stream_overhead.py --code before=/tmp/old/python --pin 0:1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from routeguard.bench import proxy
from routeguard.bench.report import cpu_model

BODIES = {
    "chat": ("/v1/chat/completions", {**proxy.BODY, "stream": True}),
    "responses": ("/v1/responses", {**proxy.RESPONSES_BODY, "stream": True}),
}


def main() -> int:
    """Run the comparison and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600, help="requests per target")
    ap.add_argument("--block", type=int, default=20, help="requests per target in a row")
    ap.add_argument("--tokens-per-s", type=float, default=2000.0, help="the upstream's pace")
    ap.add_argument("--pin", default=None, help="S:C: servers on CPU S, the rest on CPU C")
    ap.add_argument("--api", choices=sorted(BODIES), default="chat",
                    help="chat (/v1/chat/completions) or responses (/v1/responses)")  # fmt: skip
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                    help="another routeguard python/ tree to compare (repeatable)")  # fmt: skip
    args = ap.parse_args()
    server_cpu, client_cpu = args.pin.split(":") if args.pin else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {int(client_cpu)})

    def start(
        cmd: list[str], cpu: str | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return proxy.start(cmd, env=env, cpus=None if cpu is None else {int(cpu)})

    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-stream-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports = {"mock": proxy.free_port()}
    mock = start([*proxy.ROUTEGUARD, "mock-upstream", "--port", str(ports["mock"]),
                  "--tokens-per-s", str(args.tokens_per_s)], client_cpu)  # fmt: skip
    try:
        mock_url = f"http://127.0.0.1:{ports['mock']}"
        proxy.wait_ready(mock_url + "/health", mock)
        cfg = tmp / "config.yaml"
        proxy.write_config(cfg, mock_url)
        ports["passthrough"] = proxy.free_port()
        procs["passthrough"] = start([sys.executable, "-m", "routeguard.bench.passthrough",
                                      "--port", str(ports["passthrough"]),
                                      "--upstream", mock_url], server_cpu)  # fmt: skip
        trees = [("routeguard", None), *(tuple(c.split("=", 1)) for c in args.code)]
        for name, code in trees:
            env = None if code is None else {"PYTHONPATH": code}
            ports[name] = proxy.free_port()
            procs[name] = start([sys.executable, "-m", "routeguard.cli", "serve", "--config",
                                 str(cfg), "--port", str(ports[name]), "--log-level", "error"],
                                server_cpu, env)  # fmt: skip
        for name, proc in procs.items():
            proxy.wait_ready(f"http://127.0.0.1:{ports[name]}/health", proc)
        rows = asyncio.run(_drive(procs, ports, args.requests, args.block, args.api))
    finally:
        for proc in [*procs.values(), mock]:
            proxy.stop(proc)
    print(
        f"CPU: {cpu_model()}; {BODIES[args.api][0]}; upstream pace {args.tokens_per_s:g} tokens/s; "
        f"pinned {args.pin or 'no'}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| target | events an answer | p50 to the last byte, ms | CPU a request, ms "
        "| CPU above the passthrough's, µs an event |"
    )
    print("|---|---|---|---|---|")
    for name, (events, p50, cpu) in rows.items():
        print(f"| {name} | {events} | {p50:.3f} | {cpu:.3f} | {_per_event(rows, name):.1f} |")
    return 0


def _per_event(rows: dict[str, tuple[int, float, float]], name: str) -> float:
    """CPU an event beyond the passthrough's per request, in µs: (cpu - floor's) / events."""
    events, _, cpu = rows[name]
    floor = rows["passthrough"][2]
    return (cpu - floor) / max(events, 1) * 1e3 if name != "passthrough" else 0.0


async def _drive(
    procs: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    requests: int,
    block: int,
    api: str,
) -> dict[str, tuple[int, float, float]]:
    path, body = BODIES[api]
    payload = json.dumps(body).encode()
    headers = {"authorization": f"Bearer {proxy.MASTER_KEY}", "content-type": "application/json"}
    lat: dict[str, list[float]] = {n: [] for n in procs}
    cpu = dict.fromkeys(procs, 0.0)
    events = dict.fromkeys(procs, 0)
    async with aiohttp.ClientSession() as s:

        async def one(name: str) -> float:
            t0 = time.perf_counter()
            url = f"http://127.0.0.1:{ports[name]}{path}"
            async with s.post(url, data=payload, headers=headers) as r:
                answer = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{name}: status {r.status}")
            events[name] = answer.count(b"data: ")
            return time.perf_counter() - t0

        for name in procs:  # warm-up
            for _ in range(50):
                await one(name)
        for _ in range(max(1, requests // block)):
            for name, proc in procs.items():
                c0 = proxy.process_cpu_s(proc.pid)
                for _ in range(block):
                    lat[name].append(await one(name))
                cpu[name] += proxy.process_cpu_s(proc.pid) - c0
    return {n: (events[n], statistics.median(lat[n]) * 1e3, cpu[n] / len(lat[n]) * 1e3)
            for n in procs}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
