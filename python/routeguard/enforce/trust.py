"""Trust score: how far an agent has earned the benefit of the doubt, in [0, 1].

A score starts neutral (0.5). Each decided tool call feeds it an outcome
(:meth:`TrustScore.record`): a ``compliant`` call (allowed) raises it a little, a ``denied``
call (the policy said no) lowers it more, a ``violation`` (a call outside the sandbox, or
carrying tainted data to a sensitive tool) lowers it most. Between outcomes it decays toward
neutral exponentially with a configurable half-life, so neither a good nor a bad streak lasts
forever. What callers read (:meth:`TrustScore.value`) is additionally capped by the ceiling the
delegation chain carries. The guard puts that value into ``Principal.trust``, so a policy rule
with ``min_trust`` takes effect.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Literal

from routeguard.errors import EnforcementError

__all__ = ["NEUTRAL", "Outcome", "TrustScore"]

NEUTRAL = 0.5

Outcome = Literal["compliant", "denied", "violation"]


def _unit(name: str, x: float) -> float:
    if not (isinstance(x, int | float) and math.isfinite(x) and 0.0 <= x <= 1.0):
        raise EnforcementError(f"trust {name} must be a number in [0, 1], got {x!r}")
    return float(x)


class TrustScore:
    """A decaying score in [0, 1], capped by ``ceiling``. Thread-safe."""

    def __init__(
        self,
        *,
        initial: float = NEUTRAL,
        neutral: float = NEUTRAL,
        reward: float = 0.02,
        penalty: float = 0.05,
        violation_penalty: float = 0.15,
        half_life: float = 3600.0,
        ceiling: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.neutral = _unit("neutral", neutral)
        self.reward = _unit("reward", reward)
        self.penalty = _unit("penalty", penalty)
        self.violation_penalty = _unit("violation_penalty", violation_penalty)
        if not (math.isfinite(half_life) and half_life > 0):
            raise EnforcementError(f"trust half_life must be positive seconds, got {half_life!r}")
        self.half_life = float(half_life)
        self._ceiling = _unit("ceiling", ceiling)
        self._clock = clock
        self._raw = _unit("initial", initial)
        self._at = clock()
        self._lock = threading.Lock()
        self.counts: dict[Outcome, int] = {"compliant": 0, "denied": 0, "violation": 0}

    @property
    def ceiling(self) -> float:
        """The cap a delegation chain puts on the score."""
        return self._ceiling

    @ceiling.setter
    def ceiling(self, value: float) -> None:
        self._ceiling = _unit("ceiling", value)

    def _decayed(self, now: float) -> float:
        dt = max(0.0, now - self._at)
        return self.neutral + (self._raw - self.neutral) * math.pow(0.5, dt / self.half_life)

    def value(self, now: float | None = None) -> float:
        """The score at ``now`` (default: the clock), decayed and capped by the ceiling."""
        t = self._clock() if now is None else now
        with self._lock:
            return min(self._decayed(t), self._ceiling)

    def record(self, outcome: Outcome, *, now: float | None = None) -> float:
        """Apply one outcome and return the new (capped) score."""
        t = self._clock() if now is None else now
        if outcome == "compliant":
            delta = self.reward
        elif outcome == "denied":
            delta = -self.penalty
        elif outcome == "violation":
            delta = -self.violation_penalty
        else:
            raise EnforcementError(
                f"unknown trust outcome {outcome!r}; expected compliant, denied or violation"
            )
        with self._lock:
            self._raw = min(1.0, max(0.0, self._decayed(t) + delta))
            self._at = max(self._at, t)
            self.counts[outcome] += 1
            return min(self._raw, self._ceiling)

    def __repr__(self) -> str:
        return f"TrustScore({self.value():.3f}, ceiling={self._ceiling})"
