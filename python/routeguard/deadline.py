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
import weakref
from types import TracebackType

SWEEP_S = 0.05  # how late a swept deadline may fire at most
PRECISE_S = 1.0  # deadlines shorter than this keep a timer of their own


class _Sweep:
    """The swept deadlines of one event loop, and the timer that checks them."""

    __slots__ = ("__weakref__", "due", "handle", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # a strong one would keep the registry's key alive
        self.due: set[Deadline] = set()
        self.handle: asyncio.TimerHandle | None = None

    def add(self, deadline: Deadline, loop: asyncio.AbstractEventLoop) -> None:
        """Check ``deadline`` from now on (until :meth:`Deadline.__aexit__` drops it)."""
        self.due.add(deadline)
        if self.handle is None:
            self.handle = loop.call_later(SWEEP_S, self.tick)

    def tick(self) -> None:
        """Expire every deadline passed; run again while any is left."""
        self.handle = None
        loop = self.loop()
        if loop is None or loop.is_closed():
            return
        now = loop.time()
        for deadline in [d for d in self.due if d.when <= now]:
            self.due.discard(deadline)
            deadline.expire()
        if self.due:
            self.handle = loop.call_later(SWEEP_S, self.tick)


# Values are weak too: a sweep's timer handle and its deadlines' tasks hold the loop, so a
# strong value would keep every loop that closed with a tick pending (or a deadline armed)
# alive for good. A sweep lives while its tick is scheduled or a deadline holds it.
_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[_Sweep]] = (
    weakref.WeakKeyDictionary()
)


def _sweep_of(loop: asyncio.AbstractEventLoop) -> _Sweep | None:
    """The sweep of ``loop``, if one is alive."""
    ref = _sweeps.get(loop)
    return ref() if ref is not None else None


class Deadline:
    """``async with Deadline(seconds):`` (see the module docstring); one use each."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_sweep", "_task", "delay", "when")

    def __init__(self, delay: float) -> None:
        """A deadline ``delay`` seconds after the block begins."""
        self.delay = delay
        self.when = 0.0
        """The loop time it passes (set on entry)."""
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None
        self._sweep: _Sweep | None = None
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
        self.when = loop.time() + self.delay
        if self.delay < PRECISE_S:
            self._handle = loop.call_at(self.when, self.expire)
        else:
            sweep = _sweep_of(loop)
            if sweep is None:
                sweep = _Sweep(loop)
                _sweeps[loop] = weakref.ref(sweep)
            sweep.add(self, loop)
            self._sweep = sweep
        return self

    def expire(self) -> None:
        """The deadline passed: cancel the block's task (once)."""
        if not self._expired and self._task is not None:
            self._expired = True
            self._task.cancel()

    @property
    def expired(self) -> bool:
        """Whether the deadline passed while the block ran."""
        return self._expired

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
            self._sweep.due.discard(self)
            self._sweep = None
        task = self._task
        if (
            self._expired
            and task is not None
            and task.uncancel() <= self._cancelling  # called whenever it expired
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
