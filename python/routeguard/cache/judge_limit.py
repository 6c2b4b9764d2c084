"""The cap on a route's judge-model calls (``cache.judge_max_per_minute``,
``cache.judge_max_share``).

A comparison judged by a model alias costs a call; under a wrong-hit bound every miss with
a candidate is compared, so without a cap those calls follow the traffic. Each comparison
asks :meth:`JudgeLimiter.take` for a slot right before the judge's call: granted while
fewer than ``per_minute`` calls were made in the last 60 s and the calls stay within
``share`` of the route's semantic lookups seen here. A refused comparison gives no evidence
(counted as ``capped``); a slot whose call was never made (the payer could not afford it)
is given back. This instance's counts are exact: the check and the count happen under one
lock, with no await between them.

With ``cache.backend: redis`` the per-minute cap is the cluster's: a slot this instance
grants must also be granted by the route's shared window
(:class:`~routeguard.cache.judge_window.RedisJudgeWindow`, one atomic check-and-add in
Redis), so N instances make at most ``per_minute`` calls together; when Redis does not
answer, the per-instance cap alone decides (counted in ``unshared``), never more calls than
it allows. The share cap needs no sharing: each instance keeps its calls within ``share``
of its own lookups, so the instances' calls together stay within ``share`` of their lookups
together.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routeguard.cache.judge_window import RedisJudgeWindow

WINDOW = 60.0  # seconds of the per-minute cap (a sliding window)


@dataclass(frozen=True, slots=True)
class Slot:
    """One granted judge call: when it began on this instance's clock, and its entry in the
    shared window (None: not in it)."""

    at: float
    member: str | None = None


class JudgeLimiter:
    """Grants judge calls within a per-minute cap and a share of semantic lookups."""

    def __init__(
        self,
        per_minute: int | None = None,
        share: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: RedisJudgeWindow | None = None,
        route: str = "",
        wall: Callable[[], float] = time.time,
    ) -> None:
        if per_minute is not None and per_minute < 0:
            raise ValueError(f"judge_max_per_minute must be >= 0, got {per_minute}")
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"judge_max_share must be in [0, 1], got {share}")
        self.per_minute = per_minute
        self.share = share
        self.clock = clock  # this instance's window
        self.shared = shared if per_minute is not None else None
        self.route = route
        self.wall = wall  # the shared window's clock (every instance's: wall time)
        self.lookups = 0  # semantic lookups of the route seen here (the share's base)
        self.calls = 0  # slots granted and not given back: judge calls made
        self.capped = 0  # comparisons refused a slot
        self.unshared = 0  # slots granted by this instance's cap alone (Redis did not answer)
        self._recent: deque[float] = deque()  # when the calls of the last WINDOW s began
        self._lock = threading.Lock()

    def note_lookup(self) -> None:
        """Count one semantic lookup of the route (what ``share`` is a share of)."""
        with self._lock:
            self.lookups += 1

    def acquire(self) -> Slot | None:
        """Take a slot of this instance's caps for one judge call (pass it to
        :meth:`release` if the call is not made), or None (counted as capped) when either
        cap is reached. :meth:`take` adds the shared window."""
        with self._lock:
            now = self.clock()
            recent = self._recent
            while recent and recent[0] <= now - WINDOW:
                recent.popleft()
            over_rate = self.per_minute is not None and len(recent) >= self.per_minute
            over_share = self.share is not None and self.calls + 1 > self.share * self.lookups
            if over_rate or over_share:
                self.capped += 1
                return None
            recent.append(now)
            self.calls += 1
            return Slot(now)

    async def take(self) -> Slot | None:
        """:meth:`acquire`, then (with a shared window) the cluster's per-minute cap: the
        slot (give it back with :meth:`give_back`), or None (counted as capped)."""
        slot = self.acquire()
        if slot is None or self.shared is None or self.per_minute is None:
            return slot
        member = uuid.uuid4().hex
        granted = await self.shared.take(self.route, self.per_minute, self.wall(), WINDOW, member)
        if granted is None:  # Redis away: this instance's cap alone, already checked
            with self._lock:
                self.unshared += 1
            return slot
        if not granted:  # the instances together made their per-minute calls
            self.release(slot)
            with self._lock:
                self.capped += 1
            return None
        return Slot(slot.at, member)

    def release(self, slot: Slot) -> None:
        """Give back a slot of this instance's caps, its call not made."""
        with self._lock:
            self.calls -= 1
            with contextlib.suppress(ValueError):  # already out of the window
                self._recent.remove(slot.at)

    async def give_back(self, slot: Slot) -> None:
        """Give back a slot :meth:`take` granted, its call not made (here and shared)."""
        self.release(slot)
        if slot.member is not None and self.shared is not None:
            await self.shared.give_back(self.route, slot.member)


class JudgeCapped(Exception):
    """A comparison's judge call was refused by the route's cap (no evidence from it)."""
