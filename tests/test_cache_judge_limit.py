"""The cap on a cache judge model's calls (``cache.judge_max_per_minute``,
``cache.judge_max_share``): counted exactly when many comparisons run at once, a refused
comparison gives no evidence and no call, a slot whose call was never made is given back,
and ``GET /admin/cache/stats`` reports the judge calls and the capped comparisons."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from embedders import WordsEmbedder
from routeguard import config
from routeguard.cache.judge_limit import WINDOW, JudgeLimiter
from routeguard.cache.layer import CacheLayer, Ticket
from routeguard.cache.semantic import CacheHit
from routeguard.errors import ConfigError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer


def _cfg(url: str, **cache: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    return {
        "model_list": [
            {**dep, "model_name": "qa", "model": "sim-qa"},
            {**dep, "model_name": "judge", "model": "sim-judge"},
        ],
        "cache": {"enabled": True, "max_error_rate": 0.05, "judge": "judge", **cache},
    }


def _answer(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def _ticket(layer: CacheLayer, i: int) -> Ticket:
    """A miss whose candidate's answer differs from the fresh one (so the judge is asked)."""
    settings = layer.config.cache_for("qa")
    layer.bound_for("qa", settings)
    bound = layer.bounds["qa"]
    ticket = Ticket(f"question {i}", "ns", [], settings, alias="qa",
                    request={"model": "qa", "messages": []})  # fmt: skip
    ticket.candidate = CacheHit(_answer(f"cached {i}"), 0.9, f"k{i}", False, "q", {})
    ticket.decision = bound.decide(0.9)
    return ticket


async def test_concurrent_comparisons_make_exactly_the_capped_number_of_calls() -> None:
    with MockServer() as mock:
        gw = Gateway.from_config(_cfg(mock.url, judge_max_per_minute=3), embedder=WordsEmbedder())
        calls: list[str] = []
        layer = gw.cache
        assert layer is not None and layer.judge_call is not None
        inner = layer.judge_call

        async def counted(alias: str, request: dict[str, Any], ticket: Ticket) -> Any:
            calls.append(alias)
            await asyncio.sleep(0.01)  # every comparison is in flight at once
            return await inner(alias, request, ticket)

        layer.judge_call = counted
        try:
            tickets = [_ticket(layer, i) for i in range(12)]
            verdicts = await asyncio.gather(
                *(layer.compare(t, _answer(f"fresh {i}")) for i, t in enumerate(tickets))
            )
            assert len(calls) == 3
            assert sum(v is not None for v in verdicts) == 3
            outcomes = {k[2]: n for k, n in layer.checks.items()}
            assert outcomes.get("capped") == 9
            assert sum(outcomes.values()) == 12
            row = layer.stats()["routes"]["qa"]
            assert (row["judge_calls"], row["judge_capped"]) == (3, 9)
            # the capped comparisons are no evidence: only three comparisons were recorded
            ev = layer.bounds["qa"].evidence
            assert sum(v for k, v in ev.values.items() if k.split(".")[-1].startswith("n")) == 3
        finally:
            await gw.aclose()


def test_the_window_slides_and_the_share_follows_lookups() -> None:
    now = [0.0]
    lim = JudgeLimiter(per_minute=2, clock=lambda: now[0])
    assert lim.acquire() is not None and lim.acquire() is not None
    assert lim.acquire() is None
    now[0] = WINDOW - 1e-3
    assert lim.acquire() is None
    now[0] = WINDOW + 1e-3  # the first two calls left the window
    assert lim.acquire() is not None
    assert (lim.calls, lim.capped) == (3, 2)

    share = JudgeLimiter(share=0.25)
    assert share.acquire() is None  # no lookup yet: nothing to take a share of
    for _ in range(8):
        share.note_lookup()
    assert share.acquire() is not None and share.acquire() is not None
    assert share.acquire() is None
    assert (share.calls, share.capped) == (2, 2)


def test_a_slot_whose_call_was_not_made_is_given_back() -> None:
    lim = JudgeLimiter(per_minute=1)
    token = lim.acquire()
    assert token is not None and lim.acquire() is None
    lim.release(token)
    assert lim.calls == 0
    assert lim.acquire() is not None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("judge_max_per_minute", -1, "must be >= 0"), ("judge_max_share", 1.5, "must be in [0, 1]")],
)
def test_bad_caps_are_named(key: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(_cfg("http://127.0.0.1:9", **{key: value}))
    assert f"cache.{key}" in str(info.value) and message in str(info.value)
