"""A priced deployment on the simulated upstream, for the budget tests: ``priced_config``
(alias ``m`` at $1000/$2000 per million tokens, no retries, more sections added),
``micros`` (what a served request was charged, as the ledger rounds it) and
``skewed_clock`` (an in-memory budget's clock a test can move past a hold's TTL)."""

from __future__ import annotations

import time
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


def skewed_clock(backend: Any) -> list[float]:
    """Make the in-memory budget ``backend`` read ``time.time()`` plus the returned list's
    only value (0 until the test sets it)."""
    skew = [0.0]
    backend._clock = lambda: time.time() + skew[0]
    return skew
