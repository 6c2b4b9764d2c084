"""Deadlines on blocks of async code: ``async with Deadline(seconds)`` raises TimeoutError
when the block overruns, as ``asyncio.timeout`` does, for less on every use.

``asyncio.timeout`` arms a timer handle of its own each time (under uvloop a libuv timer
made, started and stopped). An upstream attempt runs under a deadline of seconds to
minutes, every request, where a tenth of a second's precision is plenty: such deadlines
join one set per event loop, swept by a single timer every :data:`SWEEP_S` while any is
set. A deadline shorter than :data:`PRECISE_S` keeps a timer of its own.

Cancellation follows ``asyncio.timeout`` (Python 3.11): once the deadline passes the
block's task is cancelled, and leaving the block with that cancellation, when no other
cancel request came since the block began, raises TimeoutError; any other cancellation
passes through unchanged.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from types import TracebackType
from typing import Any

SWEEP_S = 0.05  # how late a swept deadline may fire at most
PRECISE_S = 1.0  # deadlines shorter than this keep a timer of their own


class Sweep:
    """Timed items of one event loop, checked every ``period`` seconds while any is watched:
    each whose ``deadline`` (``time.monotonic()`` seconds, or None) has passed is told by its
    ``expired()`` (which may :meth:`drop` it). Upstream attempts' deadlines and the server
    protocol's connection deadlines each have one per loop (:func:`sweep_of`)."""

    __slots__ = ("__weakref__", "handle", "loop", "period", "watched")

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        self.loop = weakref.ref(loop)  # a strong one would keep the registry's key alive
        self.period = period
        self.watched: set[Any] = set()
        self.handle: asyncio.TimerHandle | None = None

    def watch(self, item: Any) -> None:
        """Check ``item``'s deadline from now on (until it is dropped)."""
        self.watched.add(item)
        if self.handle is None:
            self._schedule()

    def drop(self, item: Any) -> None:
        """Stop checking ``item``."""
        self.watched.discard(item)

    def tick(self) -> None:
        """Tell every item past its deadline; run again while any is watched."""
        self.handle = None
        now = time.monotonic()
        for item in [i for i in self.watched if i.deadline is not None and i.deadline <= now]:
            item.expired()
        if self.watched:
            self._schedule()

    def _schedule(self) -> None:
        loop = self.loop()
        if loop is not None and not loop.is_closed():
            self.handle = loop.call_later(self.period, self.tick)


# Values are weak too: a sweep's timer handle (and what it watches) holds the loop, so a
# strong value would keep every loop that closed with a tick pending alive for good. A
# sweep lives while its tick is scheduled, that is while it watches anything.
_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, weakref.ref[Sweep]]] = (
    weakref.WeakKeyDictionary()
)


def _alive(loop: asyncio.AbstractEventLoop, period: float) -> Sweep | None:
    """The sweep of ``loop`` checking every ``period`` seconds, if one is alive."""
    ref = _sweeps.get(loop, {}).get(period)
    return ref() if ref is not None else None


def sweep_of(loop: asyncio.AbstractEventLoop, period: float) -> Sweep:
    """The sweep of ``loop`` checking every ``period`` seconds (made on first use)."""
    sweep = _alive(loop, period)
    if sweep is None:
        sweep = Sweep(loop, period)
        _sweeps.setdefault(loop, {})[period] = weakref.ref(sweep)
    return sweep


class Deadline:
    """``async with Deadline(seconds):`` (see the module docstring); one use each."""

    __slots__ = ("_cancelling", "_handle", "_passed", "_sweep", "_task", "deadline", "delay")

    def __init__(self, delay: float) -> None:
        """A deadline ``delay`` seconds after the block begins."""
        self.delay = delay
        self.deadline: float | None = None
        """When it passes, in ``time.monotonic()`` seconds (set on entry)."""
        self._passed = False
        self._handle: asyncio.TimerHandle | None = None
        self._sweep: Sweep | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> Deadline:
        """Begin the block: its task is cancelled once the deadline passes."""
        if self._task is not None:
            raise RuntimeError("a Deadline is used once")
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a Deadline needs a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.deadline = time.monotonic() + self.delay
        if self.delay < PRECISE_S:
            self._handle = loop.call_later(self.delay, self.expired)
        else:
            self._sweep = sweep_of(loop, SWEEP_S)
            self._sweep.watch(self)
        return self

    def expired(self) -> None:
        """The deadline passed (its timer or sweep says so): cancel the block's task, once."""
        if self._sweep is not None:
            self._sweep.drop(self)
        if not self._passed and self._task is not None:
            self._passed = True
            self._task.cancel()

    @property
    def passed(self) -> bool:
        """Whether the deadline passed while the block ran."""
        return self._passed

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the block: TimeoutError for the deadline's own cancellation."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        elif self._sweep is not None:
            self._sweep.drop(self)
            self._sweep = None
        task = self._task
        if (
            self._passed
            and task is not None
            and task.uncancel() <= self._cancelling  # called whenever it expired
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
