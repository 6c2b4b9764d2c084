"""Load balancing across the deployments of one alias.

The fallback loop asks ``Balancer.pick`` for a deployment, excluding the ones that are
cooling down or already failed in this request; the balancer chooses by strategy:

- ``weighted``: random, proportional to each deployment's ``weight``;
- ``least-busy``: fewest requests in flight (ties broken at random);
- ``lowest-latency``: lowest moving average of time to response, trying every deployment
  at least once first so a new one is never starved;
- ``usage-based``: fewest tokens used in the current minute (ties: fewest requests, then
  random), LiteLLM's ``usage-based-routing(-v2)``;
- ``lowest-cost``: lowest price per token (input plus output; ties at random).

A deployment with ``rpm``/``tpm`` set is not picked once the current minute's requests reach
its rpm, or its tokens would pass its tpm with this request's estimated prompt (a fresh
minute always admits one request, however large). Minutes are fixed windows of wall-clock
time, so instances sharing the counters (:mod:`routeguard.routing.shared`) agree on them.

The call site reports ``begin``/``end`` and ``record_tokens``: ``begin`` counts the request
and its estimated prompt tokens and returns a :class:`Charge`; a failed call gives its
estimate back in ``end``; ``record_tokens`` replaces the estimate with the real total, so a
request that fell back is counted once, on the deployment that answered it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from routeguard.config.settings import Strategy
from routeguard.deployment import Deployment

_EWMA_ALPHA = 0.2


class UsageCounter(Protocol):
    """Requests and tokens per deployment and minute: this process's (:class:`LocalUsage`)
    or every instance's (:class:`routeguard.routing.shared.SharedRouterState`)."""

    def add(self, dep_id: str, minute: int, requests: int, tokens: int) -> None:
        """Count ``requests`` and ``tokens`` (either may be negative) in ``minute``."""
        ...

    def get(self, dep_id: str, minute: int) -> tuple[int, int]:
        """The requests and tokens counted for ``dep_id`` in ``minute``."""
        ...


class LocalUsage:
    """Per-minute counters of this process alone (only the current minute is kept)."""

    def __init__(self) -> None:
        self._windows: dict[str, list[int]] = {}  # dep id -> [minute, requests, tokens]

    def add(self, dep_id: str, minute: int, requests: int, tokens: int) -> None:
        """Count in ``minute`` (a correction for an earlier minute is dropped)."""
        w = self._windows.get(dep_id)
        if w is None or w[0] < minute:
            w = self._windows[dep_id] = [minute, 0, 0]
        elif w[0] > minute:
            return
        w[1] += requests
        w[2] += tokens

    def get(self, dep_id: str, minute: int) -> tuple[int, int]:
        """The counts of ``minute`` (zeros for any other)."""
        w = self._windows.get(dep_id)
        if w is None or w[0] != minute:
            return 0, 0
        return max(0, w[1]), max(0, w[2])


@dataclass(slots=True)
class Charge:
    """What one call has counted against its deployment: the minute, and the tokens (its
    estimate until the real total is known)."""

    dep_id: str
    minute: int
    tokens: int


@dataclass(slots=True)
class DeploymentStats:
    """Live numbers of one deployment, kept per process."""

    in_flight: int = 0
    latency: float | None = None  # EWMA of seconds to response / first chunk
    calls: int = 0


def _room(dep: Deployment, used: tuple[int, int], tokens: int) -> bool:
    """Whether ``dep``, having served ``used`` (requests, tokens) this minute, can take one
    more request of ``tokens`` estimated prompt tokens."""
    if dep.rpm is not None and used[0] >= dep.rpm:
        return False
    if dep.tpm is None:
        return True
    return used[1] < dep.tpm and (used[1] == 0 or used[1] + tokens <= dep.tpm)


class Balancer:
    """Picks one deployment of an alias according to a strategy."""

    def __init__(
        self,
        deployments: Sequence[Deployment],
        strategy: Strategy = "weighted",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        usage: UsageCounter | None = None,
    ) -> None:
        """``clock`` (unix seconds) numbers the minutes; ``usage`` holds the counters (a
        new :class:`LocalUsage` when None)."""
        if not deployments:
            raise ValueError("a balancer needs at least one deployment")
        self.deployments = list(deployments)
        self.strategy = strategy
        self.stats = {d.id: DeploymentStats() for d in self.deployments}
        self.usage: UsageCounter = usage if usage is not None else LocalUsage()
        self._rng = rng or random.Random()
        self._clock = clock
        self._limited = any(d.rpm is not None or d.tpm is not None for d in self.deployments)
        # Whether per-minute usage is counted (rpm/tpm limits or the usage-based strategy).
        self.counting = self._limited or strategy == "usage-based"

    def minute(self) -> int:
        """The number of the current one-minute window."""
        return int(self._clock() // 60)

    def retry_in(self) -> float:
        """Seconds until the current minute's counters start over."""
        return 60.0 - self._clock() % 60.0

    def has_capacity(self, dep: Deployment, tokens: int = 0) -> bool:
        """Whether ``dep`` can take one more request of ``tokens`` estimated prompt tokens
        within its rpm/tpm this minute."""
        if not self._limited:
            return True
        return _room(dep, self.usage.get(dep.id, self.minute()), tokens)

    def pick(self, allowed: Callable[[Deployment], bool], tokens: int = 0) -> Deployment | None:
        """Choose a deployment among those ``allowed`` accepts and with capacity for a
        request of ``tokens`` estimated prompt tokens; None when there is none."""
        if len(self.deployments) == 1 and not self._limited:
            only = self.deployments[0]
            return only if allowed(only) else None
        used: dict[str, tuple[int, int]] = {}
        if self.counting:  # one read of the counters per deployment, for limits and strategy
            minute, usage = self.minute(), self.usage
            candidates = []
            for d in self.deployments:
                if allowed(d):
                    u = used[d.id] = usage.get(d.id, minute)
                    if _room(d, u, tokens):
                        candidates.append(d)
        else:
            candidates = [d for d in self.deployments if allowed(d)]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        if self.strategy == "least-busy":
            return self._least(candidates, lambda d: float(self.stats[d.id].in_flight))
        if self.strategy == "lowest-latency":
            untried = [d for d in candidates if self.stats[d.id].latency is None]
            if untried:
                return self._weighted(untried)
            return self._least(candidates, lambda d: self.stats[d.id].latency or 0.0)
        if self.strategy == "usage-based":
            least = min(used[d.id][1] for d in candidates)
            fewest = [d for d in candidates if used[d.id][1] == least]
            return self._least(fewest, lambda d: float(used[d.id][0]))
        if self.strategy == "lowest-cost":
            return self._least(candidates, lambda d: d.input_cost_per_mtok + d.output_cost_per_mtok)
        return self._weighted(candidates)

    def begin(self, dep: Deployment, tokens: int = 0) -> Charge | None:
        """A call to ``dep`` starts, with ``tokens`` estimated prompt tokens: counted now,
        corrected by :meth:`end` or :meth:`record_tokens` (None when nothing is counted)."""
        self.stats[dep.id].in_flight += 1
        if not self.counting:
            return None
        minute = self.minute()
        self.usage.add(dep.id, minute, 1, tokens)
        return Charge(dep.id, minute, tokens)

    def record_tokens(self, dep: Deployment, tokens: int, charge: Charge | None = None) -> None:
        """The call's real token total so far (``charge`` from :meth:`begin`: only the
        difference from what it already counted is added, so repeated reports of a growing
        total count once)."""
        if not self.counting:
            return
        minute = self.minute()
        if charge is None:
            self.usage.add(dep.id, minute, 0, tokens)
            return
        counted = charge.tokens if charge.minute == minute else 0
        if tokens != counted:
            self.usage.add(dep.id, minute, 0, tokens - counted)
        charge.minute, charge.tokens = minute, tokens

    def end(self, dep: Deployment, latency: float | None, charge: Charge | None = None) -> None:
        """A call to ``dep`` ended; ``latency`` is None when it failed, and then its
        estimated tokens are given back (the request itself stays counted against rpm)."""
        s = self.stats[dep.id]
        s.in_flight -= 1
        s.calls += 1
        if latency is not None:
            s.latency = (
                latency if s.latency is None else s.latency + _EWMA_ALPHA * (latency - s.latency)
            )
        elif charge is not None and charge.tokens:
            self.usage.add(dep.id, charge.minute, 0, -charge.tokens)
            charge.tokens = 0

    def _weighted(self, candidates: list[Deployment]) -> Deployment:
        total = sum(d.weight for d in candidates)
        r = self._rng.random() * total
        for d in candidates:
            r -= d.weight
            if r < 0:
                return d
        return candidates[-1]

    def _least(
        self, candidates: list[Deployment], key: Callable[[Deployment], float]
    ) -> Deployment:
        best = min(key(d) for d in candidates)
        ties = [d for d in candidates if key(d) == best]
        return ties[0] if len(ties) == 1 else self._rng.choice(ties)
