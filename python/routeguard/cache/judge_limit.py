"""The cap on a route's judge-model calls (``cache.judge_max_per_minute``,
``cache.judge_max_share``).

A comparison judged by a model alias costs a call; under a wrong-hit bound every miss with
a candidate is compared, so without a cap those calls follow the traffic. Each comparison
asks :meth:`JudgeLimiter.acquire` for a slot right before the judge's call: granted while
fewer than ``per_minute`` calls were made in the last 60 s and the calls stay within
``share`` of the route's semantic lookups seen here. A refused comparison gives no evidence
(counted as ``capped``); a slot whose call was never made (the payer could not afford it)
is given back. Counts are per instance and exact: the check and the count happen under one
lock, with no await between them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW = 60.0  # seconds of the per-minute cap (a sliding window)


class JudgeLimiter:
    """Grants judge calls within a per-minute cap and a share of semantic lookups."""

    def __init__(
        self,
        per_minute: int | None = None,
        share: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute is not None and per_minute < 0:
            raise ValueError(f"judge_max_per_minute must be >= 0, got {per_minute}")
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"judge_max_share must be in [0, 1], got {share}")
        self.per_minute = per_minute
        self.share = share
        self.clock = clock
        self.lookups = 0  # semantic lookups of the route seen here (the share's base)
        self.calls = 0  # slots granted and not given back: judge calls made
        self.capped = 0  # comparisons refused a slot
        self._recent: deque[float] = deque()  # when the calls of the last WINDOW s began
        self._lock = threading.Lock()

    def note_lookup(self) -> None:
        """Count one semantic lookup of the route (what ``share`` is a share of)."""
        with self._lock:
            self.lookups += 1

    def acquire(self) -> float | None:
        """Take a slot for one judge call: its token (pass it to :meth:`release` if the
        call is not made), or None (counted as capped) when either cap is reached."""
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
            return now

    def release(self, token: float) -> None:
        """Give back a slot :meth:`acquire` granted, its call not made."""
        with self._lock:
            self.calls -= 1
            with contextlib.suppress(ValueError):  # already out of the window
                self._recent.remove(token)


class JudgeCapped(Exception):
    """A comparison's judge call was refused by the route's cap (no evidence from it)."""
