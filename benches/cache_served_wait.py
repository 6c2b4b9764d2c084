"""What making a hit's served-hit record durable costs the hit path (``cache.backend: redis``).

Run: ``.venv/bin/python benches/cache_served_wait.py [--hits 2000] [--redis-url URL]``
(without ``--redis-url`` it starts a throwaway ``redis-server`` from PATH). One gateway with
the Redis cache backend over the simulated upstream; one answer is cached, then the same
request is asked ``--hits`` times (exact hits through ``Gateway.chat_result``), alternately
with the record's write awaited before the hit returns (what the gateway does) and started
in the background (what it did before: feedback on another instance could then arrive
first). Prints p50/p99 of each and their difference: the price of one Redis SET round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from routeguard.bench.timing import summarize
from routeguard.gateway import Gateway
from routeguard.mock import MockServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(url: str, redis_url: str, hits: int) -> dict[str, list[int]]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k", "model_name": "qa",
           "model": "sim-qa"}  # fmt: skip
    cache = {"enabled": True, "backend": "redis", "redis_url": redis_url,
             "redis_prefix": f"bench-{time.time_ns()}"}  # fmt: skip
    gw = Gateway.from_config({"model_list": [dep], "cache": cache})
    layer = gw.cache
    assert layer is not None and layer.served is not None
    served = layer.served
    durable = served.durable

    async def background(request_id: str, record: Mapping[str, Any]) -> bool:
        served.share(request_id, record)
        return False

    request = {"model": "qa", "messages": [{"role": "user", "content": "why is the sky blue"}]}
    out: dict[str, list[int]] = {"awaited": [], "background": []}
    try:
        await gw.chat_result(request)  # the miss that caches it
        for i in range(hits + 200):
            mode = "awaited" if i % 2 else "background"
            served.durable = durable if mode == "awaited" else background  # type: ignore[method-assign]
            t0 = time.perf_counter_ns()
            result = await gw.chat_result(request)
            took = time.perf_counter_ns() - t0
            assert result.cache == "hit"
            await served.flush()  # the background writes do not pile up into the next hit
            if i >= 200:
                out[mode].append(took)
        print("served_records:", served.stats())
    finally:
        await gw.aclose()
    return out


def main() -> None:
    """Start Redis (unless given) and the upstream, time the hits, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    proc = None
    redis_url = args.redis_url
    if redis_url is None:
        binary = shutil.which("redis-server")
        if binary is None:
            print("no redis-server on PATH and no --redis-url: skipped")
            return
        port = _free_port()
        workdir = tempfile.mkdtemp()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        redis_url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.3)
    try:
        with MockServer() as mock:
            times = asyncio.run(_run(mock.url, redis_url, args.hits))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
    p50 = {}
    for mode, ns in times.items():
        s = summarize(ns)
        p50[mode] = s.p50
        print(f"{mode:>10}: p50 {s.p50 / 1e3:8.1f} µs  p99 {s.p99 / 1e3:8.1f} µs  (n={len(ns)})")
    print(f"awaiting the record adds {(p50['awaited'] - p50['background']) / 1e3:.1f} µs at p50")


if __name__ == "__main__":
    main()
