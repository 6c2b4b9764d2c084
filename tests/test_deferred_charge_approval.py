"""The proxy's deferred charge and tool-call approval: enforcement can wait for a human
(``enforce.approval_timeout``, unbounded), longer than the hold's TTL (``Gateway._hold_ttl``
covers the upstream call). The answer must be charged when the upstream answers, not once
the approval and the write are done: a hold left to expire meanwhile would let the budget
admit other requests into its room, and the late charge would overspend the limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from asgi_request import body_of, post_scope
from priced import skewed_clock
from routeguard.budget.accounts import usd_to_micros
from routeguard.budget.keys import KeySpec
from routeguard.errors import BudgetExceeded
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import admin, create_app

POLICY = """
rules:
  - id: pay-needs-a-human
    effect: require_approval
    action: {tool: send_money}
"""
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "send_money",
            "parameters": {
                "type": "object",
                "properties": {"recipient": {"type": "string", "const": "GB1"}},
            },
        },
    }
]
ASK = {
    "model": "safe",
    "messages": [{"role": "user", "content": "pay"}],
    "tools": TOOLS,
    "max_tokens": 5,
}
HOLD_ASK = 801_000  # the worst case of ASK (micro-dollars) at the prices below
CHEAP = {
    "model": "fast",
    "messages": [{"role": "user", "content": "hello budget"}],
    "max_tokens": 5,
}
LIMIT_USD = 3 * HOLD_ASK / 1e6  # three asks fit, no more


def _cfg(url: str, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "approve.yaml").write_text(POLICY)
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
    return {
        "model_list": [{**dep, "model_name": "fast", "model": "sim"}],
        "routes": {"safe": {"mode": "pinned", "target": "fast"}},
        "enforce": {"policy": str(tmp_path / "approve.yaml"), "approval_timeout": 3600},
        "budgets": [{"name": "solo", "limit": LIMIT_USD}],
        "server": {"master_key": "sk-admin"},
    }


async def test_a_long_approval_never_overspends_the_budget(
    mock: MockServer, tmp_path: Path
) -> None:
    gw = Gateway.from_config(_cfg(mock.url, tmp_path))
    assert gw.budget is not None
    backend: Any = gw.budget.backend
    skew = skewed_clock(backend)
    key, _ = gw.keys.create(KeySpec(team="solo"))
    app = create_app(gw)
    (queue,) = gw.approval_queues()
    submitted = 0
    all_waiting = asyncio.Event()

    def on_submit(_: Any) -> None:
        nonlocal submitted
        submitted += 1
        if submitted == 3:
            all_waiting.set()

    queue.on_submit = on_submit
    scope = post_scope("/v1/chat/completions", key)
    receive = body_of(ASK)
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    try:
        asks = [asyncio.create_task(app(dict(scope), receive, send)) for _ in range(3)]
        await all_waiting.wait()  # the three answers wait for an operator
        skew[0] = 700.0  # the operator takes longer than the hold's TTL (600 s here)
        served = 0
        while True:
            try:
                await gw.chat_result(dict(CHEAP), accounts=["solo"])
            except BudgetExceeded:
                break
            served += 1
        for _ in range(3):
            _, listed = admin.handle(gw.keys, "GET", "/admin/approvals", None,
                                     gw.approval_queues())  # fmt: skip
            rid = listed["data"][0]["id"]
            admin.handle(gw.keys, "POST", f"/admin/approvals/{rid}/approve", {"by": "ops"},
                         gw.approval_queues())  # fmt: skip
        await asyncio.gather(*asks)
        assert statuses == [200, 200, 200]

        spent = await backend.spent("solo")
        assert spent <= usd_to_micros(LIMIT_USD), (
            f"spent {spent} micro-USD of a {usd_to_micros(LIMIT_USD)} limit ({served} cheap "
            "requests admitted while the asks' holds had expired awaiting approval)"
        )
    finally:
        await gw.aclose()
