"""Budget ledger throughput: reserve+settle pairs per second, in process and through Redis.

Run: ``.venv/bin/python benches/bench_budget.py [--redis-url URL] [--seconds S]``. Without a
URL it starts a throwaway ``redis-server`` (persistence off) if the binary is on PATH.

Every figure is one reserve plus one settle on a three-account chain (key -> team -> org).
In process: the Rust ledger called from Python (``core.Ledger``), the full
``MemoryBudget`` (names, TTL heap, Reservation objects), on 1 and 2 threads, next to a
peer: the obvious pure-Python ledger (a dict of totals under a ``threading.Lock``), whose
ratio is printed. Through Redis: one request at a time (latency-bound), many concurrent
asyncio tasks over a connection pool, and pipelined batches on one connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from routeguard._native import core
from routeguard.bench.budget import ACCOUNTS, LockedLedger
from routeguard.budget import MemoryBudget, RedisBudget


def rate(fn: Callable[[int], None], seconds: float, threads: int = 1) -> float:
    """Pairs per second of ``fn(n)`` (which does n pairs) run on ``threads`` threads."""
    n = 2_000
    fn(n)  # warm up
    while True:  # size a batch to ~1/10 of the budget
        start = time.perf_counter()
        fn(n)
        took = time.perf_counter() - start
        if took > seconds / 10:
            break
        n *= 2
    batches = 10
    start = time.perf_counter()
    workers = [
        threading.Thread(target=lambda: [fn(n) for _ in range(batches)]) for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return n * batches * threads / (time.perf_counter() - start)


def in_process(seconds: float) -> None:
    ledger = core.Ledger()
    cal = ledger.add_calendar(1)
    ids = [ledger.add_account(10**15, calendar=cal) for _ in range(3)]

    def rust(n: int) -> None:
        reserve, settle = ledger.reserve, ledger.settle
        for _ in range(n):
            settle(reserve(ids, 100, 0), 50, 0)

    memory = MemoryBudget(ACCOUNTS)
    counter = iter(range(10**12))

    def python_layer(n: int) -> None:
        reserve, settle = memory.reserve_sync, memory.settle_sync
        for _ in range(n):
            settle(reserve(["key"], 100, f"r{next(counter)}"), 50)

    peer = LockedLedger()
    chain = ("key", "team", "org")

    def locked(n: int) -> None:
        for _ in range(n):
            peer.settle(peer.reserve(chain, 100), 50)

    print("in process (reserve+settle pairs/s, 3-account chain)")
    base = {t: rate(locked, seconds, t) for t in (1, 2)}
    # MemoryBudget's bookkeeping belongs to one event loop (one thread); the ledger under it
    # is the part shared across threads.
    for label, fn, counts in (
        ("core.Ledger from Python", rust, (1, 2)),
        ("MemoryBudget (sync API)", python_layer, (1,)),
    ):
        for threads in counts:
            r = rate(fn, seconds, threads)
            print(
                f"  {label:<26} {threads} thread(s): {r:>12,.0f}/s  {1e6 / r:6.2f} us/pair"
                f"  x{r / base[threads]:.1f} vs the locked pure-Python ledger"
            )
    for threads in (1, 2):
        print(f"  {'peer: locked dict ledger':<26} {threads} thread(s): {base[threads]:>12,.0f}/s")


async def through_redis(url: str, seconds: float) -> None:
    budget = RedisBudget(ACCOUNTS, url, prefix=f"bench{uuid.uuid4().hex[:8]}", max_connections=64)
    counter = iter(range(10**12))

    async def pair() -> None:
        res = await budget.reserve(["key"], 100, f"r{next(counter)}")
        await budget.settle(res, 50)

    await pair()  # loads the scripts
    print("through Redis (reserve+settle pairs/s, one script call each)")
    ping = await _ping_us(budget)
    print(f"  (one PING round trip from this client: {ping:.0f} us)")
    for concurrency in (1, 16, 64):
        done = 0

        async def worker(deadline: float) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await pair()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(start + seconds) for _ in range(concurrency)))
        r = done / (time.perf_counter() - start)
        extra = f"  {1e3 / r:.3f} ms/pair" if concurrency == 1 else ""
        print(f"  {concurrency:>3} concurrent tasks: {r:>10,.0f}/s{extra}")
    for batch in (100,):  # private helpers: the bench builds the script calls itself
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            calls = [
                budget._reserve_call(["key"], 100, f"p{next(counter)}", None) for _ in range(batch)
            ]
            pipe = budget._redis.pipeline(transaction=False)
            for _, _, keys, args in calls:
                pipe.evalsha(budget._reserve.sha, len(keys), *keys, *args)
            await pipe.execute()
            pipe = budget._redis.pipeline(transaction=False)
            for plan, _, _, args in calls:
                keys, settle_args = _settle_args(budget, plan, args[1])
                pipe.evalsha(budget._settle.sha, len(keys), *keys, *settle_args)
            await pipe.execute()
            done += batch
        r = done / (time.perf_counter() - start)
        print(f"  pipelined, {batch} per batch, 1 connection: {r:>10,.0f}/s")
    await budget.close()


async def _ping_us(budget: RedisBudget) -> float:
    n = 500
    start = time.perf_counter()
    for _ in range(n):
        await budget._redis.ping()
    return (time.perf_counter() - start) / n * 1e6


def _settle_args(budget: RedisBudget, plan: Any, request_id: str) -> tuple[list[str], list[str]]:
    from routeguard.budget.ledger import Reservation

    res = Reservation(request_id, plan.names, 100, 0.0, (), "open", plan)
    return budget._settle_call(res, 50)


def start_redis() -> tuple[str, subprocess.Popen[bytes]] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="rg-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return f"redis://127.0.0.1:{port}/0", proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("ROUTEGUARD_BENCH_REDIS"))
    parser.add_argument("--seconds", type=float, default=2.0)
    opts = parser.parse_args()
    in_process(opts.seconds)
    proc = None
    url = opts.redis_url
    if url is None:
        started = start_redis()
        if started is None:
            print("through Redis: skipped (no redis-server on PATH and no --redis-url)")
            return
        url, proc = started
    try:
        asyncio.run(through_redis(url, opts.seconds))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
