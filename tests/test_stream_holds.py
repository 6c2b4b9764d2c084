"""Streams and their budget holds: every path settles or releases (a stream closed or
dropped before its first read too, in the library and in the proxy); a hold lives as long
as its stream; a stream has a maximum duration; an aborted stream is charged what it sent,
never more than the complete answer costs."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from routeguard.budget.accounts import usd_to_micros
from routeguard.errors import MidStreamError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.relay import Relay
from routeguard.result import ChatResult
from routeguard.server import create_app

MSG: Any = [{"role": "user", "content": "tell me a story about streams"}]


def _cfg(url: str, **extra: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 1000.0}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "m", "model": "sim-m"},
            # The same answer, paced at 10 tokens a second (~2 s for the whole answer).
            {**dep, "model_name": "slow", "model": "sim-m",
             "headers": {"x-mock-tokens-per-s": "10"}},
        ],
        "router_settings": {"num_retries": 0},
        "budgets": [{"name": "t", "limit": 100.0}],
        **extra,
    }  # fmt: skip


async def _usage(gw: Gateway) -> tuple[int, int]:
    assert gw.budget is not None
    return await gw.budget.backend.spent("t"), await gw.budget.backend.reserved("t")


async def _open(gw: Gateway, model: str = "m", **extra: Any) -> ChatResult:
    request = {"model": model, "messages": MSG, "stream": True, **extra}
    result = await gw.chat_result(request, accounts=["t"])
    assert result.stream is not None
    assert (await _usage(gw))[1] > 0  # held while it streams
    return result


async def _settled(gw: Gateway) -> tuple[int, int]:
    """:func:`_usage` once nothing is held, or after a second (a dropped stream is settled
    on the loop, once collected)."""
    for _ in range(100):
        gc.collect()
        await asyncio.sleep(0.01)
        if (await _usage(gw))[1] == 0:
            break
    return await _usage(gw)


async def _full_price(gw: Gateway) -> int:
    """What the complete answer costs (from the provider's usage)."""
    result = await gw.chat_result({"model": "m", "messages": MSG}, accounts=["t"])
    return usd_to_micros(result.cost, round_up=True)


async def test_a_stream_closed_before_its_first_read_settles(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        full = await _full_price(gw)
        result = await _open(gw)
        assert result.stream is not None
        await result.stream.aclose()  # type: ignore[attr-defined]
        spent, held = await _usage(gw)
        assert held == 0
        assert full < spent <= 2 * full  # the prompt was sent: charged, not more than asked
    finally:
        await gw.aclose()


async def test_a_stream_dropped_unread_settles(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        result = await _open(gw)
        del result
        spent, held = await _settled(gw)
        assert held == 0 and spent > 0
    finally:
        await gw.aclose()


async def test_the_proxy_settles_a_stream_whose_client_left_before_the_first_frame(
    mock: MockServer,
) -> None:
    gw = Gateway.from_config(_cfg(mock.url, budget_settings={"default_account": "t"}))
    app = create_app(gw)
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    received = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if received:
            return received.pop()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        raise OSError("client went away")  # the socket is gone before the headers

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    try:
        await app(scope, receive, send)  # a lost client is logged, not raised to the host
        spent, held = await _usage(gw)
        assert held == 0 and spent > 0
    finally:
        await gw.aclose()


async def test_a_stream_is_cut_at_its_maximum_duration(mock: MockServer) -> None:
    cfg = _cfg(mock.url)
    cfg["router_settings"]["max_stream_duration"] = 0.5
    gw = Gateway.from_config(cfg)
    try:
        full = await _full_price(gw)
        result = await _open(gw, "slow")
        assert result.stream is not None
        chunks = []
        with pytest.raises(MidStreamError) as caught:
            async for c in result.stream:
                chunks.append(c)
        assert "max_stream_duration" in caught.value.message
        spent, held = await _usage(gw)
        assert held == 0
        assert full < spent < 2 * full  # part of the answer: charged for that part only
    finally:
        await gw.aclose()


async def test_the_deadline_passing_between_chunks_cuts_the_next_wait(mock: MockServer) -> None:
    cfg = _cfg(mock.url)
    cfg["router_settings"]["max_stream_duration"] = 0.3
    gw = Gateway.from_config(cfg)
    try:
        result = await _open(gw, "m")
        stream = result.stream
        assert stream is not None
        await anext(stream)
        await asyncio.sleep(0.5)  # the client is busy: no wait for upstream is in progress
        began = time.monotonic()
        with pytest.raises(MidStreamError, match="max_stream_duration"):
            async for _ in stream:
                pass
        assert time.monotonic() - began < 0.25  # refused at once, not after another chunk
        assert (await _usage(gw))[1] == 0
    finally:
        await gw.aclose()


async def test_a_cancelled_reader_stays_cancelled_whatever_the_deadline_does(
    mock: MockServer,
) -> None:
    """The caller's own cancellation of a read is passed on as CancelledError: alone, and
    when the stream's deadline cancels the same wait in the same turn of the loop."""
    cfg = _cfg(mock.url)
    cfg["router_settings"]["max_stream_duration"] = 30.0
    gw = Gateway.from_config(cfg)
    try:
        for also_deadline in (False, True):
            result = await _open(gw, "slow")
            stream: Any = result.stream
            await anext(stream)
            await anext(stream)  # the first two chunks come at once
            reader = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.02)  # waiting for the slow upstream's next chunk
            if also_deadline:
                stream._expire()  # the deadline's cancel first, the caller's on top
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
            assert reader.cancelled()
            await stream.aclose()
        assert (await _usage(gw))[1] == 0
        # This task was never cancelled: no cancel request leaked onto it.
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
    finally:
        await gw.aclose()


async def test_a_hold_lives_as_long_as_its_stream(mock: MockServer) -> None:
    # Holds of crashed instances expire after 0.5 s; a live stream's must not.
    gw = Gateway.from_config(_cfg(mock.url, budget_settings={"reservation_ttl": 0.5}))
    try:
        result = await _open(gw, "slow", stream_options={"include_usage": True})
        assert result.stream is not None
        began = time.monotonic()
        held_late = None
        async for _ in result.stream:
            if held_late is None and time.monotonic() - began > 1.0:
                held_late = (await _usage(gw))[1]
        assert held_late is not None and held_late > 0
        spent, held = await _usage(gw)
        assert held == 0 and spent == usd_to_micros(result.cost, round_up=True)
    finally:
        await gw.aclose()


async def test_an_aborted_stream_costs_what_it_sent_never_more_than_the_answer(
    mock: MockServer,
) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        full = await _full_price(gw)
        before = (await _usage(gw))[0]
        # Every chunk of the answer, then the client leaves before the usage chunk.
        result = await _open(gw, stream_options={"include_usage": True})
        assert result.stream is not None
        async for c in result.stream:
            if c.get("choices") and c["choices"][0].get("finish_reason"):
                break
        await result.stream.aclose()  # type: ignore[attr-defined]
        spent, held = await _usage(gw)
        whole = spent - before
        assert held == 0 and 0.8 * full <= whole <= 1.05 * full
        # A few chunks only: a part of the price.
        result = await _open(gw)
        assert result.stream is not None
        n = 0
        async for _ in result.stream:
            n += 1
            if n == 4:
                break
        await result.stream.aclose()  # type: ignore[attr-defined]
        part = (await _usage(gw))[0] - spent
        assert (await _usage(gw))[1] == 0 and 0 < part < 0.6 * full
    finally:
        await gw.aclose()


async def test_the_proxy_ends_a_stream_whose_client_stalls(mock: MockServer) -> None:
    cfg = _cfg(mock.url, budget_settings={"default_account": "t"})
    cfg["router_settings"]["max_stream_duration"] = 0.3
    gw = Gateway.from_config(cfg)
    app = create_app(gw)
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    received = [{"type": "http.request", "body": body, "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if received:
            return received.pop()
        await never.wait()  # the client neither reads nor leaves
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            await never.wait()  # its socket buffer is full: every write blocks

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    try:
        await asyncio.wait_for(app(scope, receive, send), 20)
        spent, held = await _usage(gw)
        assert held == 0 and spent > 0
    finally:
        await gw.aclose()


async def test_a_stream_dropped_after_some_reads_settles_before_its_deadline(
    mock: MockServer,
) -> None:
    """The armed deadline timer (loop -> TimerHandle -> Relay._expire -> Relay) keeps a
    dropped relay alive, so its hold is settled (and its upstream closed) only at
    max_stream_duration (default 1800 s), not when it is collected."""
    cfg = _cfg(mock.url)
    cfg["router_settings"]["max_stream_duration"] = 30.0
    gw = Gateway.from_config(cfg)
    try:
        result = await _open(gw, "slow")
        stream: Any = result.stream
        await anext(stream)
        await anext(stream)  # a wait for upstream: the deadline timer is armed
        del stream, result
        spent, held = await _settled(gw)
        assert held == 0 and spent > 0
    finally:
        await gw.aclose()


class _SpyTimer:
    def __init__(self, real: asyncio.TimerHandle, threads: list[int]) -> None:
        self._real = real
        self._threads = threads

    def cancel(self) -> None:
        self._threads.append(threading.get_ident())
        self._real.cancel()


async def _upstream() -> Any:
    for i in range(100):
        yield {"choices": [{"delta": {"content": str(i)}}]}


def test_a_dropped_relays_timer_is_cancelled_on_the_loop_thread() -> None:
    threads: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        dep = SimpleNamespace(provider="openai", model="m")
        result = SimpleNamespace(deployment=dep, usage={"prompt_tokens": 1, "completion_tokens": 1},
                                 charge=None, billed=None)  # fmt: skip
        settings = SimpleNamespace(budget=SimpleNamespace(default_max_tokens=10),
                                   router=SimpleNamespace(max_stream_duration=30.0))  # fmt: skip
        relay = Relay({"choices": []}, _upstream(), result=result, request={},  # type: ignore[arg-type]
                      want_usage=False, ends_at=loop.time() + 30.0, hold=None, budget=None,
                      balancer=None, cache=None, ticket=None, settings=settings)  # type: ignore[arg-type]  # fmt: skip
        await anext(relay)
        await anext(relay)  # a wait for upstream: the deadline timer is armed
        assert relay._timer is not None
        relay._timer = _SpyTimer(relay._timer, threads)  # type: ignore[assignment]
        gc.disable()  # the collection below is the only one
        try:
            del relay
            collector = threading.Thread(target=gc.collect)  # as any thread that allocates
            collector.start()
            collector.join()
        finally:
            gc.enable()
        for _ in range(20):
            await asyncio.sleep(0)  # the settlement scheduled by __del__ runs

    loop_thread = threading.get_ident()
    asyncio.run(main())
    assert threads, "the timer was never cancelled"
    assert all(t == loop_thread for t in threads), (
        f"cancel() ran on {len([t for t in threads if t != loop_thread])} foreign thread call(s)"
    )
