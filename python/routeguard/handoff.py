"""Handoff: items passed from the request path to one writer thread, taken in batches.

The budget spend log, the request spend records and the request log each write on a thread
of their own so the event loop never waits on a disk. Handing an item over takes one
uncontended lock (no notify: the append and the look at the length as one step among the
threads that queue) and wakes the thread only for the first item of a batch; the thread
then lets items gather for ``linger`` seconds (cut short by a flush or a stop), so a
steady stream of requests costs one wake-up and one write per batch, not per item. Flush
markers and the stop travel in the same deque, so a flush returns once every item queued
before it has been written. A writer works through a batch in chunks of
:data:`PAUSE_EVERY` items with a :func:`pause` between two: on a CPU it shares with the
event loop, a writer that ran through a whole batch at once kept a request arriving
meanwhile waiting for the rest of it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("routeguard")
_STOP = object()


@dataclass
class Batch(Generic[T]):
    """What the writer took in one go: the items, the flushes waiting on them, and whether a
    stop came after them."""

    items: list[T] = field(default_factory=list)
    flushes: list[threading.Event] = field(default_factory=list)
    stop: bool = False

    def done(self) -> None:
        """Tell the flushes waiting on this batch that it is written (or given up)."""
        for event in self.flushes:
            event.set()


class Handoff(Generic[T]):
    """The queue between the request path and one writer thread (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        linger: float,
        cap: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """``name`` (and ``logger``) for the warning a full queue logs; ``cap``: items held
        at most before :meth:`put` drops (None: no bound, for items that must not be
        dropped)."""
        self.name = name
        self._log = logger or log
        self.linger = linger
        """Seconds items gather after the first one wakes the writer."""
        self.cap = cap
        self.dropped = 0
        """Items :meth:`put` dropped because the queue was full."""
        self.stopping = False
        """:meth:`stop` was called: a writer that cannot write should give up, not retry."""
        self._items: deque[T | threading.Event | object] = deque()
        self._wake = threading.Event()
        self._hurry = threading.Event()  # a flush or stop is waiting: cut the linger short
        self._put_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue ``item`` (never blocks); False when the queue was full and it was dropped."""
        items = self._items
        if self.cap is not None and len(items) >= self.cap:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                self._log.warning(
                    "%s queue full: %d item(s) dropped so far", self.name, self.dropped
                )
            return False
        self._append(item)
        return True

    def flush(self, writer: threading.Thread, timeout: float) -> bool:
        """Wait until every item queued so far is written by ``writer``; False if ``timeout``
        passed first, or the writer has stopped with items still queued."""
        if not writer.is_alive():
            return not any(not isinstance(i, threading.Event) and i is not _STOP
                           for i in self._items)  # fmt: skip
        done = threading.Event()
        self._append(done)
        self._hurry.set()
        return done.wait(timeout)

    def stop(self, writer: threading.Thread, timeout: float | None = 10.0) -> None:
        """Have ``writer`` write what is queued and return; wait for it up to ``timeout``."""
        self.stopping = True
        if writer.is_alive():
            self._append(_STOP)
            self._hurry.set()
            writer.join(timeout)

    def wait(self, timeout: float) -> bool:
        """Writer thread: wait up to ``timeout`` for an item, then let items gather for
        :attr:`linger`; False when nothing came (the thread's time for periodic work)."""
        if not self._wake.wait(timeout):
            return False
        # Cleared before items are taken: one queued after the last taken finds itself
        # alone in the deque, and its append sets the event again.
        self._wake.clear()
        if self.linger > 0:
            self._hurry.wait(self.linger)
        self._hurry.clear()
        return True

    def take(self, limit: int) -> Batch[T]:
        """Writer thread: up to ``limit`` items from the front, the flushes among them, and
        whether the stop was reached (items queued after it are left)."""
        batch: Batch[T] = Batch()
        items = self._items
        while items and len(batch.items) < limit:
            item = items.popleft()
            if item is _STOP:
                batch.stop = True
                break
            if isinstance(item, threading.Event):
                batch.flushes.append(item)
            else:
                batch.items.append(item)  # type: ignore[arg-type]
        return batch

    def put_back(self, batch: Batch[T]) -> None:
        """Writer thread: return a batch that could not be written to the front, in order
        (its flushes keep waiting); the next wake-up takes it again."""
        back: list[T | threading.Event | object] = [*batch.items, *batch.flushes]
        if batch.stop:
            back.append(_STOP)
        self._items.extendleft(reversed(back))

    def _append(self, item: T | threading.Event | object) -> None:
        items = self._items
        # Append and look at the length as one step among the threads that queue: another
        # thread's item landing between the two left both finding two items and neither
        # waking the writer (the writer's takes need no lock: it only shortens the deque).
        with self._put_lock:
            items.append(item)
            first = len(items) == 1
        if first:
            self._wake.set()


PAUSE_EVERY = 16
"""Items a writer thread handles between two :func:`pause` calls."""
_yield = getattr(os, "sched_yield", None) or (lambda: None)


def pause() -> None:
    """Writer thread: let a thread that is waiting (the event loop's) have the GIL and the
    CPU now, between two chunks of a batch."""
    # Both, as each covers the other's miss. The zero sleep lets the GIL go for long
    # enough that a thread woken on another CPU takes it (sched_yield alone returns at once
    # there, and the writer took the GIL back: the loop then waited up to the 5 ms switch
    # interval). sched_yield gives this CPU to a thread that shares it.
    time.sleep(0)
    _yield()


def drain(handoff: Handoff[T], limit: int) -> Iterable[Batch[T]]:
    """Writer thread: the batches of up to ``limit`` items queued now, until the queue is
    empty or a stop is reached."""
    while len(handoff):
        batch = handoff.take(limit)
        yield batch
        if batch.stop:
            return
