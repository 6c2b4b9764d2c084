"""Suite ``gateway``: the in-process overhead of ``Gateway.chat_result`` with a provider that
answers at once, budgets off and on, against a bare dispatcher (alias lookup, provider call,
usage read): the floor any in-process gateway sits on."""

from __future__ import annotations

import asyncio
from typing import Any

from routeguard.bench.report import Row
from routeguard.bench.suite import Options
from routeguard.bench.timing import summarize, time_async
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
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hello there"}],
           "max_tokens": 64}  # fmt: skip


class InstantProvider:
    """A provider that answers every call at once with the same completion."""

    name = "instant"

    async def chat(self, request: Any, deployment: Any, timeout: float) -> Any:
        """The canned completion."""
        return RESPONSE


async def gateway_ns(cfg: dict[str, Any], n: int, accounts: tuple[str, ...] = ()) -> list[int]:
    """Per-call ns of ``chat_result`` on ``cfg`` with the instant provider."""
    gw = Gateway.from_config(cfg)
    gw._providers["openai"] = InstantProvider()  # type: ignore[assignment]
    try:
        return await time_async(
            lambda: gw.chat_result(dict(REQUEST), accounts=accounts), n, warmup=min(2000, n)
        )
    finally:
        await gw.aclose()


async def bare_ns(n: int) -> list[int]:
    """Per-call ns of the peer: look the alias up, call the provider, read the usage."""
    provider = InstantProvider()
    table = {"m": [object(), object()]}
    turn = [0]

    async def dispatch() -> int:
        req: dict[str, Any] = dict(REQUEST)
        deps = table[req["model"]]
        turn[0] += 1
        resp = await provider.chat(req, deps[turn[0] % len(deps)], 30.0)
        return int(resp["usage"]["total_tokens"])

    return await time_async(dispatch, n, warmup=min(2000, n))


def run(opts: Options) -> list[Row]:
    """Budgets off and on (two accounts, rpm+tpm), each against the bare dispatcher."""
    n = opts.n(20_000, 3_000)
    opts.progress.step(f"bare dispatcher, {n} calls")
    peer = summarize(asyncio.run(bare_ns(n))).scaled(1e-3)
    cases = {
        "chat_result, budgets off": ({"model_list": MODELS}, ()),
        "chat_result, budgets on": ({"model_list": MODELS, "budgets": BUDGETS}, ("team",)),
    }
    rows = []
    for case, (cfg, accounts) in cases.items():
        opts.progress.step(f"{case}, {n} calls")
        ours = summarize(asyncio.run(gateway_ns(cfg, n, accounts))).scaled(1e-3)
        rows.append(
            Row("gateway", case, ours.p50, peer.p50, "bare dispatcher (floor)",
                detail={"ours": ours.as_dict(), "peer": peer.as_dict()})
        )  # fmt: skip
    return rows
