"""routeguard.deadline: TimeoutError when a block overruns (swept and precise deadlines),
a cancellation from elsewhere passing through unchanged, nothing left armed after the
block, under asyncio's loop and uvloop alike."""

from __future__ import annotations

import asyncio
import gc
import warnings
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from routeguard import deadline
from routeguard.deadline import Deadline

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
RUNNERS: list[Runner] = [asyncio.run, uvloop.run]


@pytest.fixture(params=["swept", "precise"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every deadline of the test swept (every 10 ms) or on a timer of its own."""
    if request.param == "swept":
        monkeypatch.setattr(deadline, "PRECISE_S", 0.0)
        monkeypatch.setattr(deadline, "SWEEP_S", 0.01)
    else:
        monkeypatch.setattr(deadline, "PRECISE_S", 1e9)
    return str(request.param)


@pytest.mark.parametrize("run", RUNNERS)
def test_an_overrunning_block_raises_timeout_error(run: Runner, kind: str) -> None:
    async def main() -> tuple[bool, int]:
        d = Deadline(0.02)
        with pytest.raises(TimeoutError):
            async with d:
                await asyncio.sleep(30)
        task = asyncio.current_task()
        assert task is not None
        await asyncio.sleep(0)  # no cancellation left pending on the task
        return d.passed, task.cancelling()

    assert run(main()) == (True, 0)


@pytest.mark.parametrize("run", RUNNERS)
def test_a_block_within_its_deadline_leaves_nothing_armed(run: Runner, kind: str) -> None:
    async def main() -> tuple[bool, int]:
        d = Deadline(0.05)
        async with d:
            await asyncio.sleep(0)
        await asyncio.sleep(0.15)  # well past the deadline: nothing fires now
        sweep = deadline._alive(asyncio.get_running_loop(), deadline.SWEEP_S)
        return d.passed, len(sweep.watched) if sweep is not None else 0

    assert run(main()) == (False, 0)


@pytest.mark.parametrize("run", RUNNERS)
def test_a_cancellation_from_elsewhere_passes_through(run: Runner, kind: str) -> None:
    async def inner(started: asyncio.Event) -> None:
        async with Deadline(30.0):
            started.set()
            await asyncio.sleep(30)

    async def main() -> bool:
        started = asyncio.Event()
        task = asyncio.create_task(inner(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert run(main()) is True


@pytest.mark.parametrize("run", RUNNERS)
def test_a_cancel_request_after_the_deadline_is_not_swallowed(run: Runner, kind: str) -> None:
    """As asyncio.timeout: a cancel request made after the deadline passed, before the block
    ended, wins (CancelledError, not TimeoutError)."""

    async def inner(d: Deadline) -> None:
        async with d:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()  # somebody else asks too, meanwhile
                raise

    async def main() -> None:
        task = asyncio.create_task(inner(Deadline(0.02)))
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


def test_nested_deadlines_each_raise_for_their_own() -> None:
    async def main() -> str:
        try:
            async with Deadline(30.0):
                try:
                    async with Deadline(0.02):
                        await asyncio.sleep(30)
                except TimeoutError:
                    return "inner"
        except TimeoutError:
            return "outer"
        return "none"

    assert uvloop.run(main()) == "inner"


@pytest.mark.parametrize("run", RUNNERS)
def test_a_closed_loop_is_not_kept_alive(run: Runner, kind: str) -> None:
    """A loop closed with a sweep's tick still pending, or with a task stopped inside a
    deadline, is freed (the registry holds neither it nor its sweep)."""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with Deadline(30.0):
            await asyncio.sleep(0)
        asyncio.get_running_loop().create_task(stuck())  # never finished
        await asyncio.sleep(0)

    async def stuck() -> None:
        async with Deadline(30.0):
            await asyncio.Event().wait()

    run(main())
    with warnings.catch_warnings():  # garbage other tests left (their sockets) is freed too
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert [r() for r in loops] == [None]


def test_a_deadline_is_used_once_and_inside_a_task() -> None:
    async def main() -> None:
        d = Deadline(1.0)
        async with d:
            pass
        with pytest.raises(RuntimeError, match="once"):
            async with d:
                pass

    asyncio.run(main())
