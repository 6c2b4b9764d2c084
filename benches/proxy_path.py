"""A request's critical path through the proxy at concurrency 1: what its caller waits for.

At concurrency 1 the caller waits for two stretches of the proxy's event loop: from the
request's bytes to the upstream request written (``pre``), and from the upstream's answer to
the answer written (``post``). What the loop does after that (a deferred budget charge,
metrics, the request log's row) overlaps the client reading the answer and sending the next
request, so it costs CPU but not latency. This prints both stretches and the loop thread's
CPU per request, for a master key and a virtual key (budget, RPM, TPM), for this checkout and
any ``--code NAME=DIR`` (another ``python/`` directory, its built extension copied in), and
inside ``pre`` the authentication and the admission (rate limits and budget hold).

One ``routeguard serve`` per tree and key kind runs under a wrapper that stamps those points
with ``time.perf_counter``; an aiohttp client sends sequential requests to each in turn,
alternating rounds. ``--pin S:C`` puts the servers on CPU S, the client and the upstream on C.

    .venv/bin/python benches/proxy_path.py --pin 0:1
    .venv/bin/python benches/proxy_path.py --code before=/tmp/old/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

POINTS = ("pre", "post", "auth", "admit")


def _serve(argv: list[str]) -> int:
    """The child: ``routeguard serve`` with the path stamped (written to $PATH_OUT at SIGUSR1)."""
    from routeguard.gateway import Gateway
    from routeguard.providers import h1
    from routeguard.server import protocol
    from routeguard.server.auth import Gate

    clock = time.perf_counter_ns
    spans: dict[str, list[int]] = {k: [] for k in POINTS}
    arrived = [0, 0]  # the request's first bytes, the upstream answer's first bytes

    def timed(cls: Any, name: str, point: str) -> None:
        fn = getattr(cls, name)

        if asyncio.iscoroutinefunction(fn):

            async def stamped_async(*a: Any, **k: Any) -> Any:
                t0 = clock()
                try:
                    return await fn(*a, **k)
                finally:
                    spans[point].append(clock() - t0)

            setattr(cls, name, stamped_async)
            return

        def stamped(*a: Any, **k: Any) -> Any:
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                spans[point].append(clock() - t0)

        setattr(cls, name, stamped)

    timed(Gate, "authenticate", "auth")
    timed(Gateway, "_admit", "admit")
    received = protocol.HttpProtocol.data_received

    def request_bytes(self: Any, data: bytes) -> None:
        if self.current is None:  # a new request's bytes, not a body's rest
            arrived[0] = clock()
        received(self, data)

    protocol.HttpProtocol.data_received = request_bytes  # type: ignore[method-assign]
    head = h1._head

    def upstream_head(*a: Any) -> bytes:
        out = head(*a)  # built: written next, in the same step
        spans["pre"].append(clock() - arrived[0])
        return out

    h1._head = upstream_head  # type: ignore[assignment]
    answered = h1._Conn.data_received

    def answer_bytes(self: Any, data: bytes) -> None:
        if not self.head_done:
            arrived[1] = clock()
        answered(self, data)

    h1._Conn.data_received = answer_bytes  # type: ignore[method-assign]
    body = protocol._Cycle._body

    def last_bytes(self: Any, data: bytes, more: bool) -> None:
        if not more:
            spans["post"].append(clock() - arrived[1])
        body(self, data, more)

    protocol._Cycle._body = last_bytes  # type: ignore[method-assign,assignment]

    def dump(*_: Any) -> None:
        Path(os.environ["PATH_OUT"]).write_text(json.dumps(spans))
        for v in spans.values():
            v.clear()

    signal.signal(signal.SIGUSR1, dump)
    from routeguard.cli import main

    return main(argv)


def _median_us(ns: list[int]) -> float:
    """The median of ``ns`` in µs (nan when empty)."""
    if not ns:
        return float("nan")
    s = sorted(ns)
    return s[len(s) // 2] / 1e3


def _drive(args: argparse.Namespace) -> int:
    from routeguard.bench import proxy
    from routeguard.bench.report import cpu_model
    from routeguard.bench.timing import percentile

    serve, rest = proxy.pinned(args.pin)
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-path-"))
    procs: list[subprocess.Popen[bytes]] = []
    servers: dict[str, tuple[subprocess.Popen[bytes], str, str, Path]] = {}
    try:
        mock, mock_url = proxy.start_upstream(rest)
        procs.append(mock)
        plain, keyed = tmp / "config.yaml", tmp / "keyed.json"
        proxy.write_config(plain, mock_url)
        proxy.keyed_config(keyed, mock_url, tmp / "keys.db")
        kinds = {"master key": (plain, proxy.MASTER_KEY), "virtual key": (keyed, "")}
        for tree, code in proxy.code_trees(Path(__file__).resolve().parent.parent, args.code):
            for kind, (cfg, token) in kinds.items():
                if kind == "virtual key":
                    token = proxy.make_key(cfg)  # one per server: their limits stay apart
                out = tmp / f"{len(servers)}.json"
                proc, url = proxy.serve_wrapped(__file__, code, cfg, {"PATH_OUT": str(out)}, serve)
                procs.append(proc)
                servers[f"{tree}, {kind}"] = (proc, url, token, out)
        if rest is not None:
            os.sched_setaffinity(0, rest)
        lat: dict[str, list[float]] = {name: [] for name in servers}
        stamps: dict[str, dict[str, list[int]]] = {n: {k: [] for k in POINTS} for n in servers}
        loop_cpu = dict.fromkeys(servers, 0.0)
        per_round = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            for name, (proc, url, token, out) in servers.items():
                res = asyncio.run(proxy.drive(name, url, 1, per_round, token))  # warms first
                proxy.dumped(proc, out)  # the warm-up's stamps, dropped
                out.unlink()
                c0 = proxy.process_cpu_s(proc.pid, proc.pid)
                res = asyncio.run(proxy.drive(name, url, 1, per_round, token))
                loop_cpu[name] += proxy.process_cpu_s(proc.pid, proc.pid) - c0
                for k, v in proxy.dumped(proc, out).items():
                    stamps[name][k] += v
                out.unlink()
                if res.errors:
                    raise RuntimeError(f"{name}: {res.errors} requests failed")
                lat[name] += res.latencies
    finally:
        for proc in reversed(procs):
            proxy.stop(proc)
    print(f"CPU: {cpu_model()}; pinned {args.pin or 'no'}; {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| target | p50, µs | pre, µs | post, µs | pre + post | in pre: auth, admission | "
          "loop thread CPU per request, µs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, s in stamps.items():
        n = len(lat[name]) + 50 * args.rounds  # each round's warm-up requests too
        pre, post = _median_us(s["pre"]), _median_us(s["post"])
        print(f"| {name} | {percentile(lat[name], 50) * 1e6:.0f} | {pre:.1f} | {post:.1f} | "
              f"{pre + post:.1f} | {_median_us(s['auth']):.1f}, {_median_us(s['admit']):.1f} | "
              f"{loop_cpu[name] / n * 1e6:.0f} |")  # fmt: skip
    return 0


def main() -> int:
    """Serve (as the child) or drive the servers and print the table."""
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return _serve(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8000, help="requests per target")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    ap.add_argument("--pin", default=None, help="S:C: servers on CPU S, the rest on CPU C")
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                    help="another routeguard python/ tree to compare (repeatable)")  # fmt: skip
    return _drive(ap.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
