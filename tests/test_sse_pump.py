"""The proxy's SSE pump (``server.app._pump_sse``) ends a stream for each of its stops: the
client leaving, the drain deadline's cut, the stream's time running out; and a cancel that
comes from elsewhere still cancels the request. The pump runs in the request's own task,
which those stops cancel; none may leave a cancellation behind for the code that follows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, MutableMapping
from typing import Any

from routeguard.deployment import Deployment
from routeguard.observe.requestlog import Trace
from routeguard.result import ChatResult
from routeguard.server.app import _pump_sse
from routeguard.server.lifecycle import Cut


def _result() -> ChatResult:
    dep = Deployment(id="m-0", alias="m", provider="openai", model="m",
                     api_base="http://127.0.0.1:9/v1", api_key=None)  # fmt: skip
    return ChatResult(alias="m", deployment=dep, attempts=1, upstream_s=0.0,
                      started=time.perf_counter())  # fmt: skip


class Upstream:
    """Frames as a stream would give them: ``ready`` at once, then a wait for more (until
    ``more`` is set), noting whether it was closed (the upstream released); ``cleanup``:
    closing it waits that long first (as a relay's end awaits the upstream's close and the
    budget's settlement)."""

    def __init__(self, ready: int, more: asyncio.Event | None = None, cleanup: float = 0) -> None:
        self.ready = ready
        self.more = more or asyncio.Event()
        self.cleanup = cleanup
        self.cleaning = asyncio.Event()
        self.closed = False
        self.sent = 0

    async def frames(self) -> AsyncGenerator[bytes, None]:
        try:
            for i in range(self.ready):
                self.sent += 1
                yield b"data: %d\n\n" % i
            await self.more.wait()
            yield b"data: late\n\n"
        finally:
            self.cleaning.set()
            if self.cleanup:
                await asyncio.sleep(self.cleanup)
            self.closed = True


class Client:
    """The ASGI side: what was sent, and a disconnect once ``leave`` is set."""

    def __init__(self) -> None:
        self.sent: list[MutableMapping[str, Any]] = []
        self.leave = asyncio.Event()
        self.block = asyncio.Event()  # set: sends of body parts wait (a stalled client)

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.block.is_set() and message["type"] == "http.response.body":
            await asyncio.Event().wait()
        self.sent.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def ended(self) -> bool:
        last = self.sent[-1] if self.sent else {}
        return last.get("type") == "http.response.body" and not last.get("more_body", False)


async def _pump(
    client: Client, upstream: Upstream, scope: dict[str, Any], max_s: float | None = 30.0
) -> None:
    frames = upstream.frames()
    try:
        await _pump_sse(scope, client.receive, client.send, _result(), frames,
                        anthropic=False, max_s=max_s)  # fmt: skip
    finally:
        await frames.aclose()


async def _ends_cancelled(task: asyncio.Future[None]) -> None:
    """Wait for ``task``, which must end cancelled (the host's cancel not swallowed)."""
    try:
        await task
    except asyncio.CancelledError:
        return
    raise AssertionError("the request's cancel was swallowed")


async def _after(seconds: float, event: asyncio.Event) -> None:
    await asyncio.sleep(seconds)
    event.set()


def test_a_stream_that_ends_is_sent_whole_and_leaves_no_cancel_behind() -> None:
    async def main() -> None:
        client, upstream = Client(), Upstream(3)
        upstream.more.set()
        await _pump(client, upstream, {})
        await asyncio.sleep(0)  # a cancel left behind would land here
        assert client.ended and client.body.count(b"data: ") == 4

    asyncio.run(main())


def test_a_client_that_leaves_stops_the_upstream_and_is_noted_as_gone() -> None:
    async def main() -> None:
        client, upstream = Client(), Upstream(2)
        trace = Trace("req_1", time.time(), time.perf_counter())
        leaving = asyncio.ensure_future(_after(0.05, client.leave))
        await _pump(client, upstream, {"routeguard.trace": trace})
        await asyncio.sleep(0)
        await leaving
        assert upstream.closed and upstream.sent == 2
        assert trace.error is not None and trace.error.code == "client_closed_request"
        assert not client.ended  # nothing more is written to a client that left

    asyncio.run(main())


def test_the_drain_cut_ends_the_stream_with_an_in_band_error() -> None:
    async def main() -> None:
        client, upstream, cut = Client(), Upstream(1), Cut()
        cutting = asyncio.ensure_future(_after(0.05, cut))
        await _pump(client, upstream, {"routeguard.cut": cut})
        await asyncio.sleep(0)
        await cutting
        assert upstream.closed
        assert b"draining" in client.body and client.ended

    asyncio.run(main())


def test_a_cut_already_made_ends_a_stream_that_starts_after_it() -> None:
    async def main() -> None:
        client, upstream, cut = Client(), Upstream(1), Cut()
        cut.set()
        await _pump(client, upstream, {"routeguard.cut": cut})
        await asyncio.sleep(0)
        assert b"draining" in client.body and client.ended

    asyncio.run(main())


def test_a_stalled_client_is_let_go_once_the_streams_time_is_up() -> None:
    async def main() -> None:
        client, upstream = Client(), Upstream(5)
        upstream.more.set()
        client.block.set()  # it never takes a body part
        await _pump(client, upstream, {}, max_s=0.0)  # let go a second past max_s
        await asyncio.sleep(0)
        assert upstream.closed and not client.ended

    asyncio.run(main())


def test_a_cancel_from_elsewhere_still_cancels_the_request() -> None:
    async def main() -> None:
        client, upstream, cut = Client(), Upstream(1), Cut()
        task = asyncio.ensure_future(_pump(client, upstream, {"routeguard.cut": cut}))
        await asyncio.sleep(0.02)
        task.cancel()
        await _ends_cancelled(task)
        assert upstream.closed
        cut.set()  # a stop after the pump is over does nothing
        await asyncio.sleep(0)

    asyncio.run(main())


def test_a_cancel_from_elsewhere_with_a_stop_in_the_same_turn_still_cancels() -> None:
    async def main() -> None:
        client, upstream, cut = Client(), Upstream(1), Cut()
        task = asyncio.ensure_future(_pump(client, upstream, {"routeguard.cut": cut}))
        await asyncio.sleep(0.02)
        cut.set()  # the pump's own stop ...
        task.cancel()  # ... and the host's, before the task runs again
        await _ends_cancelled(task)

    asyncio.run(main())


def test_no_stop_cancels_the_cleanup_of_a_stream_another_cancel_unwinds() -> None:
    """A stop that comes while a cancel from elsewhere (shutdown) unwinds the stream would
    cancel the task again and cut its cleanup (the upstream's close, the settlement) short:
    found by review; fails before the fix."""

    async def main() -> None:
        for stop in ("cut", "client"):
            client, upstream, cut = Client(), Upstream(1, cleanup=0.05), Cut()
            task = asyncio.ensure_future(_pump(client, upstream, {"routeguard.cut": cut}))
            await asyncio.sleep(0.02)
            task.cancel()  # the host's
            await upstream.cleaning.wait()
            (cut if stop == "cut" else client.leave).set()
            await _ends_cancelled(task)
            assert upstream.closed, f"the {stop}'s stop cut the stream's cleanup short"

    asyncio.run(main())
