"""The hand-off between the request path and a writer thread: order, batches, flushes, the
stop, a full queue, a batch put back, and no item left behind without a wake-up."""

from __future__ import annotations

import threading
from collections import deque

from routeguard.handoff import _STOP, Batch, Handoff, drain


def _writer(h: Handoff[int], out: list[int], limit: int = 3) -> threading.Thread:
    def run() -> None:
        while True:
            h.wait(5.0)
            for batch in drain(h, limit):
                out.extend(batch.items)
                batch.done()
                if batch.stop:
                    return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_items_arrive_in_order_and_flush_waits_for_them() -> None:
    h: Handoff[int] = Handoff("t", linger=0.001)
    out: list[int] = []
    t = _writer(h, out)
    for i in range(100):
        assert h.put(i)
    assert h.flush(t, 10.0)
    assert out == list(range(100))
    h.stop(t)
    assert not t.is_alive()
    assert h.flush(t, 0.1)  # stopped with nothing queued


def test_flush_cuts_the_linger_short_and_stop_writes_what_is_queued() -> None:
    h: Handoff[int] = Handoff("t", linger=60.0)
    out: list[int] = []
    t = _writer(h, out)
    h.put(1)
    assert h.flush(t, 10.0) and out == [1]  # not after the minute's linger
    h.put(2)
    h.put(3)
    h.stop(t)
    assert out == [1, 2, 3] and not t.is_alive()
    h.put(4)  # after the stop: never written, and a flush says so
    assert not h.flush(t, 0.1)


def test_a_full_queue_drops_and_counts() -> None:
    h: Handoff[int] = Handoff("t", linger=0.0, cap=2)
    assert [h.put(i) for i in range(5)] == [True, True, False, False, False]
    assert h.dropped == 3 and len(h) == 2


def test_take_splits_batches_and_stops_at_the_stop() -> None:
    h: Handoff[int] = Handoff("t", linger=0.0)
    for i in range(5):
        h.put(i)
    done = threading.Event()
    h._append(done)
    h._append(_STOP)
    h.put(5)  # after the stop: left queued
    batches = list(drain(h, 2))
    assert [b.items for b in batches] == [[0, 1], [2, 3], [4]]
    assert [b.flushes for b in batches] == [[], [], [done]]
    assert [b.stop for b in batches] == [False, False, True]
    assert h.take(10).items == [5]


def test_a_batch_put_back_comes_first_again_with_its_flush() -> None:
    h: Handoff[int] = Handoff("t", linger=0.0)
    for i in range(3):
        h.put(i)
    first = h.take(2)
    waiting = threading.Event()
    first.flushes.append(waiting)
    h.put_back(first)
    again = h.take(10)
    assert again.items == [0, 1, 2] and again.flushes == [waiting]
    assert not waiting.is_set()
    again.done()
    assert waiting.is_set()


def test_an_item_queued_after_the_last_take_wakes_the_writer() -> None:
    """The writer clears its wake-up before taking items, and an item that is alone in the
    queue once appended sets it again: one queued after the writer took the last one never
    waits for the writer's timeout; one queued behind another sets nothing."""
    h: Handoff[int] = Handoff("t", linger=0.0)
    h.put(1)
    assert h.wait(0.0)  # woken, and the wake-up cleared
    assert h.take(10).items == [1]
    h.put(2)  # alone now
    assert h.wait(0.0)  # set again: does not wait
    h.put(3)  # not alone (2 still queued): no second wake-up is needed
    assert h.take(10).items == [2, 3]
    assert not h.wait(0.0)


def test_a_batch_tells_its_flushes() -> None:
    b: Batch[int] = Batch(items=[1], flushes=[threading.Event(), threading.Event()])
    b.done()
    assert all(e.is_set() for e in b.flushes)


def test_two_threads_queueing_at_once_still_wake_the_writer() -> None:
    """Appending and then looking at the length are two steps: when a second thread's item
    lands between them (a settlement and a flush, or two event loops), both threads found
    two items and neither woke the writer, so the items, and a flush or stop queued behind
    them, waited for the writer's timeout (a minute for the budget spend log)."""
    h: Handoff[int] = Handoff("t", linger=0.0)
    first_in = threading.Event()
    second_done = threading.Event()

    class Interleaved(deque[object]):
        def append(self, item: object) -> None:
            super().append(item)
            if item == 1:  # the first thread, between its append and its look at the length
                first_in.set()
                second_done.wait(0.5)  # the second thread's put lands here, unless kept out

    h._items = Interleaved()

    def second() -> None:
        h.put(2)
        second_done.set()

    first = threading.Thread(target=h.put, args=(1,))
    first.start()
    first_in.wait()
    other = threading.Thread(target=second)
    other.start()
    first.join()
    other.join()
    assert h.wait(0.0)  # the writer is woken
    assert h.take(10).items == [1, 2]
