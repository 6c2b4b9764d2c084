"""Thresholds for the learned router's score, set from real traffic rather than training data.

A score means little on its own: the share of requests above a threshold depends on the
traffic. Two ways to pin it down:

- :func:`calibrate`, offline: scores of a sample of traffic -> the threshold for a target share
  of strong calls, or for a mean cost per request not to exceed (greedily sending the
  highest-scoring prompts to the strong model while the budget allows);
- :class:`LiveShare`, online: the router records every score in a window of the last
  ``window`` decisions and, every ``refresh`` decisions, moves the threshold to the window's
  quantile for the target share, so ``strong_share: 0.3`` holds on the traffic actually
  served. Until ``warmup`` scores are in, it uses the threshold it started with (the
  training distribution's, :meth:`LearnedRouter.threshold_for_share`).

The window is a fixed numpy ring buffer; a refresh sorts it (about 20 us for 1,024 scores),
so the amortised cost per decision is well under a microsecond.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import numpy.typing as npt


def calibrate(
    scores: npt.ArrayLike,
    *,
    strong_share: float | None = None,
    cost_ceiling: float | None = None,
    cheap_cost: npt.ArrayLike | float | None = None,
    strong_cost: npt.ArrayLike | float | None = None,
) -> float:
    """A threshold (strong model when ``score >= threshold``) for a sample of traffic's scores.

    Give ``strong_share`` (the share of calls to send to the strong model), or
    ``cost_ceiling`` (the mean cost per request not to exceed) with ``cheap_cost`` and
    ``strong_cost`` (each a number, or one per prompt). The threshold falls midway between the
    last score sent to the strong model and the next, so nearby unseen scores split evenly.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())[::-1]
    n = s.size
    if n == 0:
        raise ValueError("calibrate needs at least one score")
    if (strong_share is None) == (cost_ceiling is None):
        raise ValueError("give exactly one of strong_share and cost_ceiling")
    if strong_share is not None:
        if not 0.0 <= strong_share <= 1.0:
            raise ValueError(f"strong_share must be in [0, 1], got {strong_share}")
        k = round(strong_share * n)
    else:
        assert cost_ceiling is not None
        if cheap_cost is None or strong_cost is None:
            raise ValueError("a cost ceiling needs cheap_cost and strong_cost")
        order = np.argsort(-np.asarray(scores, dtype=np.float64).ravel(), kind="stable")
        c = np.broadcast_to(np.asarray(cheap_cost, dtype=np.float64), (n,))[order]
        g = np.broadcast_to(np.asarray(strong_cost, dtype=np.float64), (n,))[order]
        spent = (c.sum() + np.concatenate(([0.0], np.cumsum(g - c)))) / n
        within = np.flatnonzero(spent <= float(cost_ceiling) + 1e-12)
        if within.size == 0:
            raise ValueError(
                f"cost ceiling {cost_ceiling} is below the all-cheap cost "
                f"{spent[0]:.6g} per request"
            )
        k = int(within.max())
    # All or nothing: past every score the model can give (its range is [-1, 1]), and past
    # every score of the sample whatever its scale.
    if k <= 0:
        return max(1.0, float(np.nextafter(s[0], np.inf)))
    if k >= n:
        return min(-1.0, float(s[-1]))
    return float((s[k - 1] + s[k]) / 2.0)


class LiveShare:
    """Keeps a threshold at the score quantile that sends ``share`` of recent traffic to the
    strong model (see the module docstring). Safe to share between threads: a refresh takes
    a lock; recording a score does not (a lost slot under a race only ages the window)."""

    def __init__(
        self,
        share: float,
        initial: float,
        *,
        window: int = 1024,
        refresh: int = 64,
        warmup: int = 128,
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        if window < 1 or refresh < 1 or not 1 <= warmup <= window:
            raise ValueError("need window >= 1, refresh >= 1 and 1 <= warmup <= window")
        self.share = share
        self.threshold = initial
        self._scores = np.zeros(window, dtype=np.float64)
        self._window = window
        self._refresh = refresh
        self._warmup = warmup
        self._count = itertools.count()
        self._lock = threading.Lock()

    def observe(self, score: float) -> float:
        """Record one decision's score; returns the threshold to decide it with."""
        threshold = self.threshold
        i = next(self._count)
        self._scores[i % self._window] = score
        seen = i + 1
        if seen >= self._warmup and seen % self._refresh == 0:
            with self._lock:
                self.threshold = calibrate(
                    self._scores[: min(seen, self._window)], strong_share=self.share
                )
        return threshold
