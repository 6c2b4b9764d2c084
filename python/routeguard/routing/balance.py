"""Load balancing across the deployments of one alias.

The fallback loop asks ``Balancer.pick`` for a deployment, excluding the ones that are
cooling down or already failed in this request; the balancer chooses by strategy:

- ``weighted``: random, proportional to each deployment's ``weight``;
- ``least-busy``: fewest requests in flight (ties broken at random);
- ``lowest-latency``: lowest moving average of time to response, trying every deployment
  at least once first so a new one is never starved.

The call site reports ``begin``/``end`` so in-flight counts and latencies stay current.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routeguard.config import Deployment, Strategy

_EWMA_ALPHA = 0.2


@dataclass(slots=True)
class DeploymentStats:
    """Live numbers of one deployment, kept per process."""

    in_flight: int = 0
    latency: float | None = None  # EWMA of seconds to response / first chunk
    calls: int = 0


class Balancer:
    """Picks one deployment of an alias according to a strategy."""

    def __init__(
        self,
        deployments: Sequence[Deployment],
        strategy: Strategy = "weighted",
        rng: random.Random | None = None,
    ) -> None:
        if not deployments:
            raise ValueError("a balancer needs at least one deployment")
        self.deployments = list(deployments)
        self.strategy = strategy
        self.stats = {d.id: DeploymentStats() for d in self.deployments}
        self._rng = rng or random.Random()

    def pick(self, allowed: Callable[[Deployment], bool]) -> Deployment | None:
        """Choose a deployment among those ``allowed`` accepts; None when there is none."""
        if len(self.deployments) == 1:
            only = self.deployments[0]
            return only if allowed(only) else None
        candidates = [d for d in self.deployments if allowed(d)]
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
        self.stats[dep.id].in_flight += 1

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
