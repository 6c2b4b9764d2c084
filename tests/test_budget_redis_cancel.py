"""A charge on the Redis budget backend that a cancellation reaches: the drain deadline
cancels every request still running (``Lifecycle.drain``), a host may cancel on disconnect.
The upstream was paid, so the settlement must land: ``RedisBudget.settle`` marks the
reservation settled before its round trip, and a CancelledError is not a "store down" error
(nothing would be kept for replay), so the round trip runs shielded from the caller."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from asgi_request import body_of, post_scope
from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app

MSG = [{"role": "user", "content": "hello budget"}]


async def test_a_cancel_while_the_redis_charge_runs_keeps_it(
    mock: MockServer, redis_server: str
) -> None:
    team = f"t{uuid.uuid4().hex[:8]}"
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
    cfg = {
        "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
        "router_settings": {"num_retries": 0},
        "budgets": [{"name": team, "limit": 10.0}],
        "budget_settings": {"backend": "redis", "redis_url": redis_server},
        "server": {"master_key": "sk-admin"},
    }
    gw = Gateway.from_config(cfg)
    assert gw.budget is not None
    backend: Any = gw.budget.backend
    settle_script = backend._settle
    settling = asyncio.Event()

    async def slow_settle(**kw: Any) -> Any:  # a Redis round trip (or a WAIT) under load
        settling.set()
        await asyncio.sleep(0.3)
        return await settle_script(**kw)

    backend._settle = slow_settle
    key, _ = gw.keys.create(KeySpec(team=team))
    app = create_app(gw)
    scope = post_scope("/v1/chat/completions", key)
    receive = body_of({"model": "m", "messages": MSG, "max_tokens": 20})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        task = asyncio.create_task(app(scope, receive, send))
        await settling.wait()  # the upstream answered: its cost is being charged
        task.cancel()  # e.g. the drain deadline (Lifecycle.drain cancels what still runs)
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.5)  # anything still settling has landed by now
        assert await backend.spent(team) > 0, "an answer the upstream gave was never charged"
        assert await backend.reserved(team) == 0
    finally:
        await gw.aclose()
