"""Load balancing across the deployments of one alias.

The fallback loop asks ``Balancer.pick`` for a deployment, excluding the ones that are
cooling down or already failed in this request; the balancer chooses by strategy:

- ``weighted``: random, proportional to each deployment's ``weight``;
- ``least-busy``: fewest requests in flight (ties broken at random);
- ``lowest-latency``: lowest moving average of time to response, trying every deployment
  at least once first so a new one is never starved.

The call site reports ``begin``/``end`` (and ``record_tokens``) so in-flight counts,
latencies and per-minute usage stay current. A deployment with ``rpm``/``tpm`` set is not
picked once it has used them up in the current minute (fixed one-minute windows, per process).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routeguard.config.settings import Strategy
from routeguard.deployment import Deployment

_EWMA_ALPHA = 0.2


@dataclass(slots=True)
class DeploymentStats:
    """Live numbers of one deployment, kept per process."""

    in_flight: int = 0
    latency: float | None = None  # EWMA of seconds to response / first chunk
    calls: int = 0
    minute: int = 0  # the window the two counters below belong to
    minute_requests: int = 0
    minute_tokens: int = 0

    def roll(self, minute: int) -> None:
        """Start a new one-minute window if ``minute`` is a later one."""
        if minute != self.minute:
            self.minute, self.minute_requests, self.minute_tokens = minute, 0, 0


class Balancer:
    """Picks one deployment of an alias according to a strategy."""

    def __init__(
        self,
        deployments: Sequence[Deployment],
        strategy: Strategy = "weighted",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not deployments:
            raise ValueError("a balancer needs at least one deployment")
        self.deployments = list(deployments)
        self.strategy = strategy
        self.stats = {d.id: DeploymentStats() for d in self.deployments}
        self._rng = rng or random.Random()
        self._clock = clock
        self._limited = any(d.rpm is not None or d.tpm is not None for d in self.deployments)

    def has_capacity(self, dep: Deployment) -> bool:
        """Whether ``dep`` is under its rpm/tpm in the current minute."""
        if not self._limited:
            return True
        s = self.stats[dep.id]
        s.roll(int(self._clock() // 60))
        if dep.rpm is not None and s.minute_requests >= dep.rpm:
            return False
        return dep.tpm is None or s.minute_tokens < dep.tpm

    def pick(self, allowed: Callable[[Deployment], bool]) -> Deployment | None:
        """Choose a deployment among those ``allowed`` accepts; None when there is none."""
        if len(self.deployments) == 1:
            only = self.deployments[0]
            return only if allowed(only) and self.has_capacity(only) else None
        candidates = [d for d in self.deployments if allowed(d) and self.has_capacity(d)]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if self.strategy == "least-busy":
            return self._least(candidates, lambda d: float(self.stats[d.id].in_flight))
        if self.strategy == "lowest-latency":
            untried = [d for d in candidates if self.stats[d.id].latency is None]
            if untried:
                return self._weighted(untried)
            return self._least(candidates, lambda d: self.stats[d.id].latency or 0.0)
        return self._weighted(candidates)

    def begin(self, dep: Deployment) -> None:
        """A call to ``dep`` starts."""
        s = self.stats[dep.id]
        s.in_flight += 1
        if self._limited:
            s.roll(int(self._clock() // 60))
            s.minute_requests += 1

    def record_tokens(self, dep: Deployment, tokens: int) -> None:
        """Count the tokens a finished call used against ``dep``'s tpm."""
        if self._limited:
            s = self.stats[dep.id]
            s.roll(int(self._clock() // 60))
            s.minute_tokens += tokens

    def end(self, dep: Deployment, latency: float | None) -> None:
        """A call to ``dep`` ended; ``latency`` is None when it failed."""
        s = self.stats[dep.id]
        s.in_flight -= 1
        s.calls += 1
        if latency is not None:
            s.latency = (
                latency if s.latency is None else s.latency + _EWMA_ALPHA * (latency - s.latency)
            )

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
