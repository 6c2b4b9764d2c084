"""A separate process for the Redis budget tests (run as a script, not collected by pytest).

``hammer URL PREFIX ACCOUNTS_JSON SEED OPS``: reserve/settle against the shared chain with
16 concurrent tasks, then print ``{"settled": [...], "refused": n}`` as JSON.
``hold URL PREFIX ACCOUNTS_JSON AMOUNT TTL``: reserve once, print ``held``, then sleep until
killed (the crash test SIGKILLs it).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import redis.asyncio

from routeguard import BudgetExceeded
from routeguard.budget import RedisBudget
from routeguard.redis_url import cluster_target


def _gate_client(url: str) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """A client for the start line (a ``redis+cluster://`` URL gets a cluster client)."""
    target = cluster_target(url)
    if target is None:
        return redis.asyncio.Redis.from_url(url)
    return target.async_client(timeout_s=90.0, max_connections=2)


async def hammer(url: str, prefix: str, accounts: str, seed: int, ops: int) -> None:
    budget = RedisBudget(json.loads(accounts), url, prefix=prefix)
    rng = random.Random(seed)
    settled: list[int] = []
    refused = 0
    # Each process gets one small charge through before the start line (the test waits for
    # every "ready"), so however the scheduler then splits the race, every process has
    # spent; the pair also opens the connection and loads the scripts before the race.
    first = await budget.reserve(["key"], 1_000, f"p{seed}-first")
    await budget.settle(first, 500)
    settled.append(500)
    # A start line: every process begins the race together.
    gate = _gate_client(url)
    print("ready", flush=True)
    await gate.blpop([f"{prefix}:go"], timeout=60)
    await gate.aclose()

    async def task(t: int) -> None:
        nonlocal refused
        for i in range(ops // 16):
            worst = rng.randint(1_000, 20_000)
            try:
                res = await budget.reserve(["key"], worst, f"p{seed}-t{t}-{i}")
            except BudgetExceeded:
                refused += 1
                continue
            actual = rng.randint(0, worst)
            await budget.settle(res, actual)
            settled.append(actual)

    await asyncio.gather(*(task(t) for t in range(16)))
    await budget.close()
    print(json.dumps({"settled": settled, "refused": refused}))


async def hold(url: str, prefix: str, accounts: str, amount: int, ttl: float) -> None:
    budget = RedisBudget(json.loads(accounts), url, prefix=prefix)
    await budget.reserve(["key"], amount, "doomed", ttl_s=ttl)
    print("held", flush=True)
    await asyncio.sleep(3600)


def main() -> None:
    mode, url, prefix, accounts, a, b = sys.argv[1:7]
    if mode == "hammer":
        asyncio.run(hammer(url, prefix, accounts, int(a), int(b)))
    else:
        asyncio.run(hold(url, prefix, accounts, int(a), float(b)))


if __name__ == "__main__":
    main()
