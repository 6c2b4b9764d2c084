"""``/v1/embeddings`` costs money, so it is admitted, held and settled like chat: budgets
refuse it, RPM/TPM count it, and its spend is recorded (library and proxy alike)."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from routeguard.budget.accounts import usd_to_micros
from routeguard.budget.keys import KeySpec
from routeguard.errors import BudgetExceeded
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

PRICE = 20.0  # dollars per million input tokens
BIG = "lorem ipsum " * 8_000  # ~96 KB, ~24k tokens: ~$0.48 a call


def _cfg(url: str) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    return {
        "model_list": [{**dep, "model_name": "emb", "model": "text-embedding-3-small",
                        "input_cost_per_mtok": PRICE}],
        "router_settings": {"num_retries": 0},
        "server": {"master_key": "sk-admin"},
    }  # fmt: skip


def _cost(response: Any) -> int:
    return usd_to_micros(response["usage"]["prompt_tokens"] * PRICE / 1e6, round_up=True)


def test_a_zero_budget_key_gets_no_embeddings_and_an_rpm_limit_counts_them(
    mock: MockServer,
) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    broke, broke_rec = gw.keys.create(KeySpec(max_budget=0.0))
    limited, _ = gw.keys.create(KeySpec(rpm=2))
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=broke, max_retries=0) as client,
    ):
        refused = 0
        for _ in range(20):
            with pytest.raises(openai.RateLimitError) as caught:
                client.embeddings.create(model="emb", input=BIG)
            refused += "budget" in caught.value.message
        assert refused == 20
        with openai.OpenAI(base_url=srv.url + "/v1", api_key=limited, max_retries=0) as rpm:
            rpm.embeddings.create(model="emb", input="one")
            rpm.embeddings.create(model="emb", input="two")
            with pytest.raises(openai.RateLimitError):
                rpm.embeddings.create(model="emb", input="three")
    assert gw.budget is not None
    assert asyncio.run(gw.budget.backend.spent(broke_rec.key_id)) == 0


async def test_embeddings_spend_is_recorded_and_never_overspends(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    assert gw.budget is not None
    try:
        _, key = gw.keys.create(KeySpec(max_budget=2.0))
        outcomes = await asyncio.gather(
            *(gw.embeddings({"model": "emb", "input": BIG}, key=key) for _ in range(20)),
            return_exceptions=True,
        )
        served = [o for o in outcomes if isinstance(o, dict)]
        refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
        assert served and len(served) + len(refused) == 20
        spent = await gw.budget.backend.spent(key.key_id)
        assert spent == sum(_cost(r) for r in served) > 0
        assert spent <= usd_to_micros(2.0)
        assert await gw.budget.backend.reserved(key.key_id) == 0
        # Sequential calls keep going until the limit, and are all charged.
        more = 0
        while True:
            try:
                r = await gw.embeddings({"model": "emb", "input": [BIG[:4_000]] * 5}, key=key)
            except BudgetExceeded:
                break
            spent += _cost(r)
            more += 1
            assert more < 1_000
        assert await gw.budget.backend.spent(key.key_id) == spent <= usd_to_micros(2.0)
    finally:
        await gw.aclose()
