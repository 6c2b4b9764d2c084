"""A priced deployment on the simulated upstream, for the budget tests: ``priced_config``
(alias ``m`` at $1000/$2000 per million tokens, no retries, more sections added) and
``micros`` (what a served request was charged, as the ledger rounds it)."""

from __future__ import annotations

from typing import Any

from routeguard.budget.accounts import usd_to_micros
from routeguard.result import ChatResult


def priced_config(url: str, **extra: Any) -> dict[str, Any]:
    """A config serving ``m`` on the simulated upstream at ``url``, with ``extra`` sections."""
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
    return {"model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
            "router_settings": {"num_retries": 0}, **extra}  # fmt: skip


def micros(result: ChatResult) -> int:
    """The micro-dollars ``result`` was charged (rounded up, as holds settle)."""
    return usd_to_micros(result.cost, round_up=True)
