"""In-process overhead of ``Gateway.chat_result`` (target p50 <= 50 us, no embedding).

    .venv/bin/python benches/bench_gateway.py

The provider is replaced by one that answers at once, so what is timed is routeguard's own
path: validation, alias lookup, fallback bookkeeping, balancing, usage. Prints p50/p99.
"""

from __future__ import annotations

import asyncio
import statistics
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


async def main(n: int = 20_000) -> None:
    gw = Gateway.from_config(
        {
            "model_list": [
                {"model_name": "m", "type": "openai", "model": "m", "api_base": "http://x/v1"},
                {"model_name": "m", "type": "openai", "model": "m2", "api_base": "http://x/v1"},
            ]
        }
    )
    gw._providers["openai"] = InstantProvider()  # type: ignore[assignment]
    req = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
    for _ in range(2000):
        await gw.chat_result(dict(req))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await gw.chat_result(dict(req))
        times.append(time.perf_counter() - t0)
    times.sort()
    p50 = statistics.median(times) * 1e6
    p99 = times[int(len(times) * 0.99)] * 1e6
    print(f"Gateway.chat_result in-process overhead: p50 {p50:.1f} us, p99 {p99:.1f} us (n={n})")


if __name__ == "__main__":
    asyncio.run(main())
