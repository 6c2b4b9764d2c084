"""Thresholds for the learned router's score, set from real traffic rather than training data.

A score means little on its own: the share of requests above a threshold depends on the
traffic. Two ways to pin it down:

- :func:`calibrate`, offline: scores of a sample of traffic -> the threshold for a target share
  of strong calls, or for a mean cost per request not to exceed (greedily sending the
  highest-scoring prompts to the strong model while the budget allows);
- :class:`LiveShare`, online, from the first request: every decision's score goes into a
  sliding window of the last ``window`` scores (a ring buffer, plus the same scores kept
  sorted with :mod:`bisect`), and the decision compares the score with the window's exact
  quantile for the target share, so ``strong_share: 0.3`` holds on the traffic actually
  served, whatever the scale of its scores, and follows it when it drifts. The first
  ``cold_start`` decisions (8) use the threshold it started with (the training
  distribution's, :meth:`LearnedRouter.threshold_for_share`), as a window of a handful of
  scores says little. A feedback term keeps the realised share on target: the strong calls
  owed (target share x decisions - strong calls, both decayed over about one window) move
  the quantile, so a cold start or a lagging quantile is made up within a few dozen
  decisions; a run of equal scores at the quantile splits by the same count.

A decision costs a binary search and one list insert and delete (a ``memmove`` of at most
``window`` pointers): about a microsecond for 1,024 scores, with no array allocated.
"""

from __future__ import annotations

import bisect
import math
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
    """Keeps the share of strong calls at ``share`` on the traffic actually served, whatever
    the score's scale (see the module docstring). Safe to share between threads: each
    decision takes a short lock.

    ``initial`` decides the first ``cold_start`` decisions; ``window`` is how many recent
    scores the quantile is taken over (how fast it follows drift); ``feedback`` is how many
    owed strong calls move the target share by 100% (smaller: the realised share catches up
    faster, at the price of noisier choices of which prompts go strong).
    """

    def __init__(
        self,
        share: float,
        initial: float,
        *,
        window: int = 1024,
        cold_start: int = 8,
        feedback: float = 16.0,
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        if window < 2 or not 0 <= cold_start < window or feedback < 1.0:
            raise ValueError("need window >= 2, 0 <= cold_start < window and feedback >= 1")
        self.share = share
        self.initial = initial
        self.threshold = initial
        """The threshold the last decision was made with (for metrics and reports)."""
        self._ring = [0.0] * window
        self._sorted: list[float] = []
        self._window = window
        self._cold = cold_start
        self._feedback = feedback
        self._decay = 1.0 - 1.0 / window
        self._seen = 0
        self._owed = 0.0  # share x decisions - strong calls, both decayed: > 0 = too few strong
        self._lock = threading.Lock()

    @property
    def decisions(self) -> int:
        """How many decisions were made so far."""
        return self._seen

    @property
    def owed(self) -> float:
        """Strong calls owed to reach the target share on recent traffic (negative: too many)."""
        return self._owed

    def decide(self, score: float) -> bool:
        """Record one decision's score; True to call the strong model."""
        return self._decide(score)[0]

    def observe(self, score: float) -> float:
        """Record one decision's score; returns a threshold that decides it
        (strong model when ``score >= threshold``)."""
        strong, threshold = self._decide(score)
        s = float(score)
        if strong:
            return min(threshold, s)
        return max(threshold, float(np.nextafter(s, np.inf)))

    def _decide(self, score: float) -> tuple[bool, float]:
        s = float(score)
        if not math.isfinite(s):
            raise ValueError(f"LiveShare: score must be a finite number, got {s}")
        with self._lock:
            i = self._seen
            self._seen = i + 1
            window = self._sorted
            if i >= self._window:
                del window[bisect.bisect_left(window, self._ring[i % self._window])]
            self._ring[i % self._window] = s
            bisect.insort(window, s)
            if i < self._cold:
                threshold = self.initial
                strong = s >= threshold
            else:
                threshold, strong = self._quantile_decision(s)
            self.threshold = threshold
            self._owed = self._decay * self._owed + self.share - (1.0 if strong else 0.0)
            return strong, threshold

    def _quantile_decision(self, s: float) -> tuple[float, bool]:
        """Threshold at the window's quantile for the share, nudged by what is owed."""
        window = self._sorted
        m = len(window)
        target = min(1.0, max(0.0, self.share + self._owed / self._feedback))
        k = int(target * m + 0.5)  # the top k scores of the window go to the strong model
        if k <= 0:
            return float(np.nextafter(window[-1], np.inf)), False
        if k >= m:
            return window[0], True
        lo, hi = window[m - k - 1], window[m - k]
        if lo < hi:
            threshold = (lo + hi) / 2.0
            return threshold, s >= threshold
        # The quantile falls inside a run of equal scores: those split by what is owed, so
        # a stream of identical scores still gets its share.
        if s != hi:
            return hi, s > hi
        return hi, self._owed + self.share > 0.5
