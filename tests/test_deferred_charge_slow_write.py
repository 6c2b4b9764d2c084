"""The proxy's deferred charge and a slow client: the hold's TTL covers the upstream call,
and writing the answer can outlast it (a client reading slowly, a full socket buffer:
``send`` waits on ``drain()`` with no deadline). The charge must not wait for the write: a
hold left to expire meanwhile would let the budget admit other requests into its room, and
the late charge would put the account over its hard limit."""

from __future__ import annotations

import asyncio
from typing import Any

from asgi_request import body_of, post_scope
from priced import skewed_clock
from routeguard.budget.accounts import usd_to_micros
from routeguard.budget.keys import KeySpec
from routeguard.errors import BudgetExceeded
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app

MSG = [{"role": "user", "content": "hello budget"}]
HOLD = 57_000  # worst case of MSG with max_tokens=5 at the prices below (micro-dollars)
COST = 13_000  # what it actually costs (3 prompt + 5 completion tokens)
LIMIT_USD = 4 * HOLD / 1e6  # exactly four holds fit


def _cfg(url: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
    return {
        "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
        "router_settings": {"num_retries": 0},
        "budgets": [{"name": "solo", "limit": LIMIT_USD}],
        "server": {"master_key": "sk-admin"},
    }


async def test_a_slow_write_never_overspends_the_budget(
    mock: MockServer,
) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.budget is not None
    backend: Any = gw.budget.backend
    skew = skewed_clock(backend)
    key, _ = gw.keys.create(KeySpec(team="solo"))
    app = create_app(gw)
    scope = post_scope("/v1/chat/completions", key)
    receive = body_of({"model": "m", "messages": MSG, "max_tokens": 5})
    reading = asyncio.Event()  # the slow client finally reads
    writing = 0
    all_writing = asyncio.Event()

    async def slow_send(message: dict[str, Any]) -> None:
        nonlocal writing
        if message["type"] == "http.response.body":
            writing += 1
            if writing == 4:
                all_writing.set()
            await reading.wait()  # as Cycle.send waits on conn.drain() while write_paused

    try:
        slow = [asyncio.create_task(app(dict(scope), receive, slow_send)) for _ in range(4)]
        await all_writing.wait()

        skew[0] = 700.0  # the writes outlast the hold's TTL (600 s here)
        served = 0
        while True:  # the room the expired holds left is given to other requests
            try:
                await gw.chat_result({"model": "m", "messages": MSG, "max_tokens": 5},
                                     accounts=["solo"])  # fmt: skip
            except BudgetExceeded:
                break
            served += 1
        reading.set()
        await asyncio.gather(*slow)

        spent = await backend.spent("solo")
        assert spent == (4 + served) * COST
        # The budget's one promise: never more than the limit.
        assert spent <= usd_to_micros(LIMIT_USD), (
            f"spent {spent} micro-USD of a {usd_to_micros(LIMIT_USD)} limit: "
            f"{served} requests were admitted into the room of holds that expired "
            "while their answers were being written"
        )
    finally:
        await gw.aclose()
