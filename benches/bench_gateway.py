"""In-process overhead of ``Gateway.chat_result`` (target p50 <= 50 us, no embedding).

    .venv/bin/python benches/bench_gateway.py [--redis-url redis://127.0.0.1:6379/0]

The provider is replaced by one that answers at once, so what is timed is routeguard's own
path: validation, alias lookup, fallback bookkeeping, balancing, usage. Prints p50/p99
with budgets off, on in memory (rate check + reserve + settle on a two-account chain), in
memory with the SQLite spend log, and through Redis when a URL is given.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from typing import Any

from routeguard.bench.gateway import BUDGETS, MODELS, gateway_ns
from routeguard.bench.timing import summarize


async def timed(cfg: dict[str, Any], n: int, accounts: tuple[str, ...] = ()) -> list[int]:
    """Per-request ns of ``chat_result`` on ``cfg`` with the instant provider."""
    return await gateway_ns(cfg, n, accounts)


def _line(label: str, times: list[int], base: float | None = None) -> float:
    s = summarize(times).scaled(1e-3)
    extra = "" if base is None else f"  (+{s.p50 - base:.1f} us vs budgets off)"
    print(f"  {label:<44} p50 {s.p50:7.1f} us  p99 {s.p99:7.1f} us{extra}")
    return s.p50


async def main(n: int = 20_000, redis_url: str | None = None) -> None:
    """Overhead with budgets off, in memory, in memory with the SQLite spend log, and Redis."""
    print(f"Gateway.chat_result in-process overhead (n={n} per row)")
    base = _line("budgets off", await timed({"model_list": MODELS}, n))
    chain = ("team",)
    cfg = {"model_list": MODELS, "budgets": BUDGETS}
    _line("memory budgets (2 accounts, rpm+tpm)", await timed(cfg, n, chain), base)
    with tempfile.TemporaryDirectory() as tmp:
        logged = {**cfg, "server": {"database": f"{tmp}/rg.db"}}
        _line("memory budgets + SQLite spend log", await timed(logged, n, chain), base)
    if redis_url:
        shared = {**cfg, "budget_settings": {"backend": "redis", "redis_url": redis_url}}
        _line("Redis budgets (loopback)", await timed(shared, n // 4, chain), base)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--redis-url", default=None, help="also time the Redis backend")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.redis_url))
