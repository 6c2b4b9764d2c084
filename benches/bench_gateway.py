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
import statistics
import tempfile
import time
from typing import Any

from routeguard.config import Deployment
from routeguard.gateway import Gateway

RESPONSE: dict[str, Any] = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}  # fmt: skip


class InstantProvider:
    name = "instant"

    async def chat(self, request: Any, deployment: Deployment, timeout: float) -> Any:
        return RESPONSE


MODELS = [
    {"model_name": "m", "type": "openai", "model": "m", "api_base": "http://x/v1",
     "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
    {"model_name": "m", "type": "openai", "model": "m2", "api_base": "http://x/v1",
     "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
]  # fmt: skip
BUDGETS = [
    {"name": "org", "limit": 1e9},
    {"name": "team", "parent": "org", "limit": 1e9, "rpm": 10**9, "tpm": 10**12},
]


async def timed(cfg: dict[str, Any], n: int, accounts: tuple[str, ...] = ()) -> list[float]:
    """Per-request seconds of ``chat_result`` on ``cfg`` with the instant provider."""
    gw = Gateway.from_config(cfg)
    gw._providers["openai"] = InstantProvider()  # type: ignore[assignment]
    req = {"model": "m", "messages": [{"role": "user", "content": "hello there"}],
           "max_tokens": 64}  # fmt: skip
    for _ in range(2000):
        await gw.chat_result(dict(req), accounts=accounts)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await gw.chat_result(dict(req), accounts=accounts)
        times.append(time.perf_counter() - t0)
    await gw.aclose()
    times.sort()
    return times


def _line(label: str, times: list[float], base: float | None = None) -> float:
    p50 = statistics.median(times) * 1e6
    p99 = times[int(len(times) * 0.99)] * 1e6
    extra = "" if base is None else f"  (+{p50 - base:.1f} us vs budgets off)"
    print(f"  {label:<44} p50 {p50:7.1f} us  p99 {p99:7.1f} us{extra}")
    return p50


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
