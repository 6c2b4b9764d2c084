"""Transient budget accounts: made on use (an end user's), dropped again once idle.

Every distinct ``user`` a caller sends makes an end-user account; kept for ever, they let
any key holder grow the proxy without bound. A backend keeps them in a
:class:`Transients` registry: least recently held first, each with its reservations in
flight (settled or released ones no longer count; an expired hold still does, until its
late settlement). Past ``keep`` accounts the backend drops the oldest that are *idle*:
none in flight and, as the backend judges, nothing it would lose (full rate allowances; any
spend kept where the account is made again from: Redis, or the in-process backend's dormant
records), so dropping one and making it again on its next use changes nothing a budget
decides. Accounts in use are passed over, never dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

DEFAULT_KEEP = 10_000
"""How many transient accounts a backend keeps before it drops idle ones."""


class Transients:
    """Transient accounts by name, least recently held first, with their holds in flight."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        """``keep``: how many may stay before idle ones are dropped (at least 1)."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.keep = keep
        self.live: OrderedDict[str, int] = OrderedDict()
        """Each transient account's reservations in flight, least recently held first (read
        it; change it through the methods). Empty is the common case, checked per request."""
        self._wait = 0  # additions before the next sweep may run

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, name: object) -> bool:
        return name in self.live

    def add(self, name: str) -> None:
        """Register ``name`` (newest; nothing in flight)."""
        self.live.setdefault(name, 0)

    def discard(self, name: str) -> None:
        """Forget ``name`` (it was made permanent)."""
        self.live.pop(name, None)

    def held(self, names: Iterable[str]) -> None:
        """A reservation on ``names`` was taken: each transient among them is in use."""
        live = self.live
        for name in names:
            count = live.get(name)
            if count is not None:
                live[name] = count + 1
                live.move_to_end(name)

    def done(self, names: Iterable[str]) -> None:
        """A reservation on ``names`` was settled or released."""
        live = self.live
        for name in names:
            count = live.get(name)
            if count:
                live[name] = count - 1

    def in_flight(self, name: str) -> int:
        """Reservations on ``name`` not yet settled or released."""
        return self.live.get(name, 0)

    def sweep(self, idle: Callable[[str], bool]) -> list[str]:
        """Called after each addition: once more than ``keep`` are registered, drop the
        oldest that have nothing in flight and that ``idle`` accepts, down to ``keep`` less
        a step (1/16 of it); the others, and those ``idle`` refuses, move to the back. The
        work is bounded: after a sweep the next waits for a step of additions, and one
        looks at no more than 8 steps of accounts, never at the newest (just added, about
        to be used). Returns the dropped names (the caller cleans up after them)."""
        live = self.live
        if len(live) <= self.keep:
            return []
        if self._wait > 0:
            self._wait -= 1
            return []
        step = max(1, self.keep // 16)
        self._wait = step
        target = self.keep - step
        budget = min(len(live) - 1, 8 * step + 16)
        dropped: list[str] = []
        while len(live) > target and budget > 0:
            budget -= 1
            name, count = next(iter(live.items()))
            if count == 0 and idle(name):
                del live[name]
                dropped.append(name)
            else:
                live.move_to_end(name)
        return dropped
