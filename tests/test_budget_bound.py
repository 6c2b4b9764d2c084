"""Budget holds are an upper bound: every input source, ``n`` choices and the dearest
deployment reachable are held, so concurrent requests never overspend (in process and
through Redis); a settlement above its hold is charged, logged as an error and counted;
admission comes before the cache (a $0 key costs no embedding)."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedders import WordsEmbedder
from routeguard.budget import MemoryBudget
from routeguard.budget.accounts import usd_to_micros
from routeguard.budget.keys import KeyRecord, KeySpec
from routeguard.errors import BudgetExceeded
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.result import ChatResult


def _cfg(url: str, input_cost: float, output_cost: float, **extra: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": input_cost, "output_cost_per_mtok": output_cost}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "m", "model": "sim-m"},
            # A dearer fallback: the hold must price the request there.
            {**dep, "model_name": "dear", "model": "sim-dear",
             "input_cost_per_mtok": 2 * input_cost, "output_cost_per_mtok": 2 * output_cost},
        ],
        "fallbacks": {"m": ["dear"]},
        "router_settings": {"num_retries": 0},
        "server": {"key_hash_secret": "s3cret"},
        **extra,
    }  # fmt: skip


def _micros(result: ChatResult) -> int:
    return usd_to_micros(result.cost, round_up=True)


async def _burst(
    gws: list[Gateway], key: KeyRecord, request: dict[str, Any], n: int
) -> tuple[list[ChatResult], list[BaseException]]:
    outcomes = await asyncio.gather(
        *(gws[i % len(gws)].chat_result(dict(request), key=key) for i in range(n)),
        return_exceptions=True,
    )
    served = [o for o in outcomes if isinstance(o, ChatResult)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return served, errors


async def _never_overspends(
    gws: list[Gateway], request: dict[str, Any], limit: float, n: int
) -> None:
    a = gws[0]
    _, key = a.keys.create(KeySpec(max_budget=limit))
    served, errors = await _burst(gws, key, request, n)
    assert a.budget is not None
    spent = await a.budget.backend.spent(key.key_id)
    assert spent <= usd_to_micros(limit), f"spent ${spent / 1e6:.2f} of ${limit:.2f}"
    assert spent == sum(_micros(r) for r in served)
    assert served and errors, (len(served), errors[:1])
    assert all(isinstance(e, BudgetExceeded) for e in errors), errors[0]
    assert await a.budget.backend.reserved(key.key_id) == 0
    assert all(g.budget is not None and g.budget.overages == 0 for g in gws)


# n=128 choices: the answer costs 128 times one choice.
N_REQUEST = {"model": "m", "messages": [{"role": "user", "content": "many choices"}],
             "n": 128, "max_tokens": 21}  # fmt: skip

# 40 KB of arguments in an earlier assistant tool call: input the hold must count.
_ARGS = '{"blob": "' + "x" * 40_000 + '"}'
TOOL_REQUEST = {
    "model": "m",
    "max_tokens": 5,
    "messages": [
        {"role": "user", "content": "store it"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "store", "arguments": _ARGS}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "stored"},
    ],
}  # fmt: skip


async def test_n_choices_never_overspend_in_memory(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url, 1.0, 1000.0))
    try:
        await _never_overspends([gw], N_REQUEST, 10.0, 40)
    finally:
        await gw.aclose()


async def test_tool_call_arguments_never_overspend_in_memory(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url, 10.0, 10.0))
    try:
        await _never_overspends([gw], TOOL_REQUEST, 1.0, 30)
    finally:
        await gw.aclose()


@pytest.mark.parametrize("request_", [N_REQUEST, TOOL_REQUEST], ids=["n128", "tool_args"])
async def test_three_instances_on_redis_never_overspend(
    mock: MockServer, redis_server: str, request_: dict[str, Any]
) -> None:
    prices = (1.0, 1000.0) if "n" in request_ else (10.0, 10.0)
    limit = 10.0 if "n" in request_ else 1.0
    settings = {"backend": "redis", "redis_url": redis_server}
    cfg = _cfg(mock.url, *prices, budget_settings=settings)
    gws = [Gateway.from_config(cfg) for _ in range(3)]
    try:
        await _never_overspends(gws, request_, limit, 45)
    finally:
        for g in gws:
            await g.aclose()


def test_the_bound_covers_every_input_source() -> None:
    from routeguard.budget.bound import completion_bound, image_tokens, measure

    base = measure({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    system = "s" * 5_000
    tools = [{"type": "function", "function": {"name": "f", "description": "d" * 3_000,
                                               "parameters": {"type": "object"}}}]  # fmt: skip
    image = {"url": "data:image/png;base64," + "A" * 500_000}
    parts = [{"type": "text", "text": "t" * 2_000}, {"type": "image_url", "image_url": image}]
    big = measure(
        {
            "model": "m",
            "tools": tools,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": parts},
                TOOL_REQUEST["messages"][1],
                {"role": "tool", "tool_call_id": "call_1", "content": "r" * 7_000},
            ],
        }
    )
    text = 5_000 + 3_000 + 2_000 + len(_ARGS) + 7_000
    assert big.tokens("openai", "gpt-4o") >= text + image_tokens("openai", "gpt-4o")
    # An image costs its provider's rate, not its base64 size.
    assert big.tokens("openai", "gpt-4o") < text + 20_000
    assert big.tokens("anthropic", "claude") - big.tokens("gemini", "gemini-2.5") == (
        image_tokens("anthropic") - image_tokens("gemini")
    )
    assert big.images == 1 and base.tokens() < 100
    assert completion_bound({"n": 128, "max_tokens": 21}, 4096) == 128 * 21
    assert completion_bound({}, 4096) == 4096


async def test_a_settlement_above_its_hold_is_charged_logged_counted_and_blocks(
    mock: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    gw = Gateway.from_config(_cfg(mock.url, 1000.0, 1000.0))
    assert gw.budget is not None
    layer = gw.budget
    try:
        _, key = gw.keys.create(KeySpec(max_budget=0.5))
        chain = layer.chain_for((), key)
        dep = gw.config.deployments["m"][0]
        request = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
        hold = await layer.admit(chain, request, [dep])
        assert hold.amount < usd_to_micros(0.5)
        with caplog.at_level(logging.WARNING, logger="routeguard.budget"):
            # The provider reports far more than any bound (a misbehaving upstream).
            await layer.settle(hold, dep, {"prompt_tokens": 400, "completion_tokens": 400})
        assert await layer.backend.spent(key.key_id) == usd_to_micros(0.8)  # all of it
        assert layer.overages == 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert errors and "more than its hold" in errors[0].getMessage()
        with pytest.raises(BudgetExceeded):  # over its limit: the next request is refused
            await gw.chat_result(dict(request), key=key)
    finally:
        await gw.aclose()


async def test_a_zero_budget_key_is_refused_before_any_embedding(mock: MockServer) -> None:
    emb = WordsEmbedder()
    cfg = _cfg(mock.url, 1.0, 1.0, routes={"m": {"cache": {"enabled": True}}})
    gw = Gateway.from_config(cfg, embedder=emb)
    try:
        _, key = gw.keys.create(KeySpec(max_budget=0.0))
        request = {"model": "m", "messages": [{"role": "user", "content": "word " * 50_000}]}
        with pytest.raises(BudgetExceeded):
            await gw.chat_result(request, key=key)
        assert emb.calls == 0
    finally:
        await gw.aclose()


async def test_the_hold_prices_each_distinct_price_once(mock: MockServer) -> None:
    """An alias of many deployments at one price is priced once per request, not once per
    deployment, and the hold is the same as over all of them: the dearest reachable
    price."""
    from routeguard.budget.bound import completion_bound, measure

    cfg = _cfg(mock.url, 1.0, 2.0)
    m = cfg["model_list"][0]
    cfg["model_list"] += [{**m, "model": f"sim-m{i}"} for i in range(40)]  # 41 x m, one price
    gw = Gateway.from_config(cfg)
    try:
        assert len(gw.balancers["m"].deployments) == 41
        priced: list[int] = []
        holds: list[int] = []
        backend = gw.budget.backend
        assert isinstance(backend, MemoryBudget)
        table, hold = gw.budget._price_table, backend.admit_sync

        def counted(deployments: Any) -> Any:
            priced.append(len(deployments))
            return table(deployments)

        def held(chain: Any, amount: int, *args: Any) -> Any:
            holds.append(amount)
            return hold(chain, amount, *args)

        gw.budget._price_table = counted  # type: ignore[method-assign]
        backend.admit_sync = held  # type: ignore[method-assign]
        _, key = gw.keys.create(KeySpec(max_budget=100.0))
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
        for _ in range(3):
            assert (await gw.chat_result(dict(request), key=key)).alias == "m"
        assert priced == [2, 2, 2]  # m's one price, then its dearer fallback's
        every = [*gw.balancers["m"].deployments, *gw.balancers["dear"].deployments]
        size, completion = measure(request), completion_bound(request, 4096)
        assert holds == [gw.budget.worst_case(size, completion, every)] * 3
    finally:
        await gw.aclose()


_TEXT = st.text(st.characters() | st.sampled_from(["é", "漢", "🙂", '"', "\\", "\n", "\ud800"]))
_SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "x"]) | _TEXT
_PART = (
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["text", "image_url", "image", "input_image", "file"]) | _JSON,
            "text": _JSON,
            "image_url": _JSON,
            "image": _JSON,
        },
    )
    | _JSON
)
_MESSAGE = (
    st.dictionaries(_KEYS, _JSON, max_size=4)
    | st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(_PART, max_size=4)})
    | _JSON
)
_FIELDS = st.sampled_from(["tools", "functions", "system", "response_format", "user", "stop",
                           "temperature", "metadata", "stream", "n"]) | _TEXT  # fmt: skip
_REQUEST = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(_MESSAGE, max_size=4) | _JSON},
) | st.dictionaries(_FIELDS, _JSON, max_size=4)


@settings(max_examples=600, deadline=None)
@given(_REQUEST, st.dictionaries(_FIELDS, _JSON, max_size=3))
def test_the_native_walk_counts_as_the_python_one(request_: Any, extra: dict[str, Any]) -> None:
    """``measure``'s native walk (the common requests) gives what the Python walk gives,
    lone surrogates, image parts, nested tool calls and unread fields included."""
    from routeguard.budget.bound import _measure, _native_measure, measure

    request_ = {**request_, **extra} if isinstance(request_, dict) else request_
    native = _native_measure(request_)
    expected = _measure(request_)
    assert measure(request_) == expected
    if native is not None:
        assert native == tuple(expected)


def test_the_native_walk_takes_the_usual_request_and_leaves_the_odd_ones() -> None:
    """Plain and multimodal chat requests are walked natively; a lone surrogate, a message
    that is not a dict, or a key that is not a ``str`` go to the Python walk."""
    from routeguard.budget.bound import _native_measure

    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "u"}}]
    usual = {"model": "m", "messages": [{"role": "user", "content": parts}], "tools": [{}]}
    assert _native_measure(usual) is not None
    assert _native_measure(TOOL_REQUEST) is not None
    for odd in (
        {"model": "m", "messages": [{"role": "user", "content": "\ud800"}]},
        {"model": "m", "messages": ["just text"]},
        {"model": "m", "messages": [{1: "x"}]},
    ):
        assert _native_measure(odd) is None


_PROVIDERS = st.sampled_from(["openai", "anthropic", "gemini", "bedrock", "ollama"])
_MODELS = st.sampled_from(["gpt-4o-mini", "gpt-4.1", "o4-mini-high", "claude-x", "m"])
_PRICE = st.floats(min_value=0.0, max_value=1e4) | st.sampled_from([0.0, 0.15, 0.6, 2.5, 1e-9])
_LIMIT = st.integers(-5, 1 << 40) | st.sampled_from([1 << 63, 1 << 64, -(1 << 64)])
_LIMIT_VALUE = _LIMIT | st.booleans() | st.floats(allow_nan=False) | st.none() | _TEXT


@settings(max_examples=600, deadline=None)
@given(
    _REQUEST,
    st.dictionaries(st.sampled_from(["max_tokens", "max_completion_tokens", "n"]), _LIMIT_VALUE),
    st.lists(st.tuples(_PROVIDERS, _MODELS, _PRICE, _PRICE), max_size=3),
    st.integers(1, 1 << 20),
)
def test_the_native_quote_holds_what_python_works_out(
    request_: Any, limits: dict[str, Any], prices: list[Any], default_max_tokens: int
) -> None:
    """``quote`` (one native call) gives the amount ``BudgetLayer.worst_case`` holds and the
    tokens ``InputSize.estimate`` counts, to the micro-dollar, whenever it answers: images
    at each provider's rate, tools, ``n`` choices, huge or odd completion limits."""
    from routeguard._native import core
    from routeguard.budget.bound import (
        completion_bound,
        image_tokens,
        measure,
        quote,
    )
    from routeguard.budget.layer import BudgetLayer
    from routeguard.deployment import Deployment

    request_ = {**request_, **limits} if isinstance(request_, dict) else request_
    deployments = [
        Deployment(f"d{i}", "m", p, m, "", None, input_cost_per_mtok=i_, output_cost_per_mtok=o)
        for i, (p, m, i_, o) in enumerate(prices)
    ]
    table = core.PriceTable(
        [(d.input_cost_per_mtok, d.output_cost_per_mtok, image_tokens(d.provider, d.model))
         for d in deployments]
    )  # fmt: skip
    got = quote(request_, table, default_max_tokens)
    if got is None:
        return
    size = measure(request_)
    completion = completion_bound(request_, default_max_tokens)
    amount = BudgetLayer.worst_case(None, size, completion, deployments)  # type: ignore[arg-type]
    assert got == (amount, size.estimate())


def test_the_native_quote_takes_the_usual_request_and_leaves_the_odd_ones() -> None:
    """Chat requests with images, tools and limits are quoted natively; a completion limit
    past an i64, a cost past the float rounding's range or a request the walk leaves to
    Python are worked out in Python; prices that are not finite or are negative make no
    table."""
    from routeguard._native import core
    from routeguard.budget.bound import quote

    table = core.PriceTable([(2.5, 10.0, 1_445), (3.0, 15.0, 1_650)])
    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "u"}}]
    usual = {"model": "m", "messages": [{"role": "user", "content": parts}], "tools": [{}],
             "max_tokens": 100, "n": 2}  # fmt: skip
    amount, tokens = quote(usual, table, 4096) or (0, 0)
    assert amount > 0 and tokens > 0
    assert quote({**usual, "max_tokens": 1 << 70}, table, 4096) is None
    assert quote({**usual, "max_tokens": 1 << 62, "n": 1 << 62}, table, 4096) is None
    assert quote({**usual, "max_tokens": 1 << 52}, table, 4096) is None  # past 9e9 dollars
    assert quote({"model": "m", "messages": ["just text"]}, table, 4096) is None
    for bad in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError):
            core.PriceTable([(bad, 1.0, 1)])


def test_a_limiter_plan_names_the_limit_that_refused() -> None:
    """``check_units`` charges each limiter a request or the tokens by its unit, skips the
    free ones, takes all or none, and names the refusing limiter by its place in the plan."""
    from routeguard._native import core

    limiter = core.RateLimiter()
    rpm, tpm = limiter.add(2, 60_000_000_000), limiter.add(100, 60_000_000_000)
    plan = [(rpm, False), (tpm, True)]
    assert limiter.check_units(plan, 1, 60, 0) is None
    refused = limiter.check_units(plan, 1, 60, 0)  # the tokens do not fit: nothing taken
    assert refused is not None and refused[0] == 1 and refused[1] is not None
    assert limiter.check_units(plan, 1, 0, 0) is None  # the request still fits: none was taken
    refused = limiter.check_units(plan, 1, 0, 0)
    assert refused is not None and refused[0] == 0
    assert limiter.check_units([(tpm, True)], 5, 0, 0) is None  # costs nothing: skipped
    assert limiter.check_units([(rpm, False)], 0, 7, 0) is None
