"""The learned router's score as a probability: P(the cheap answer is as good as the strong one's).

Data flow: out-of-fold router scores of labelled prompts (scores the model gave prompts it did
not train on) and each prompt's observed "cheap as good" outcome (0/1, or a share over several
cheap models) -> a monotone map score -> probability (:func:`fit_calibration`, isotonic
regression by pool-adjacent-violators, or Platt's logistic fit), kept as a few hundred knots
and interpolated linearly (:class:`ScoreCalibration`) -> stored in the model file beside the
weights. :func:`reliability` bins predicted against observed on held-out data (and the ECE).

The map is non-increasing (a higher score = more in need of the strong model = a lower
probability that the cheap answer will do), so a probability floor (``min_p_cheap``) is one
score threshold (:meth:`ScoreCalibration.score_threshold`) and routing by it ranks requests
exactly as routing by the score does.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

ISOTONIC = "isotonic"
PLATT = "platt"
_PLATT_KNOTS = 257
_MAX_KNOTS = 512


@dataclass(frozen=True)
class ScoreCalibration:
    """A non-increasing map from a router score to P(cheap answer as good), by linear
    interpolation between knots (flat beyond the first and last)."""

    x: F64  # knot scores, strictly increasing
    y: F64  # probabilities at the knots, non-increasing
    method: str = ISOTONIC

    def __post_init__(self) -> None:
        if self.x.ndim != 1 or self.x.shape != self.y.shape or self.x.size == 0:
            raise ValueError("calibration knots: x and y must be one-dimensional, same length")
        if np.any(np.diff(self.x) <= 0) or np.any(np.diff(self.y) > 1e-12):
            raise ValueError("calibration knots: x must increase and y must not increase")
        object.__setattr__(self, "_xs", self.x.tolist())
        object.__setattr__(self, "_ys", self.y.tolist())

    def __call__(self, scores: npt.ArrayLike) -> F64:
        """P(cheap answer as good) of each score."""
        out: F64 = np.interp(np.asarray(scores, dtype=np.float64), self.x, self.y)
        return out

    def one(self, score: float) -> float:
        """:meth:`__call__` of one score without numpy (the request path: about a microsecond)."""
        xs: list[float] = self._xs  # type: ignore[attr-defined]
        ys: list[float] = self._ys  # type: ignore[attr-defined]
        i = bisect.bisect_right(xs, score)
        if i == 0:
            return ys[0]
        if i == len(xs):
            return ys[-1]
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (score - x0) * (y1 - y0) / (x1 - x0)

    def score_threshold(self, min_p: float) -> float:
        """The least score whose probability is below ``min_p`` (strong model when ``score >=``
        it): 2.0 when no score is (always cheap), -1.0 when every score is (always strong)."""
        if not 0.0 <= min_p <= 1.0:
            raise ValueError(f"min_p_cheap must be in [0, 1], got {min_p}")
        xs, ys = self.x, self.y
        if ys[0] < min_p:
            return -1.0
        if ys[-1] >= min_p:
            return 2.0  # above any score (scores are in [-1, 1])
        # the first knot below min_p; the crossing is on the segment before it
        j = int(np.flatnonzero(ys < min_p)[0])
        x0, x1, y0, y1 = float(xs[j - 1]), float(xs[j]), float(ys[j - 1]), float(ys[j])
        t = x0 + (y0 - min_p) / (y0 - y1) * (x1 - x0)
        # strictly past the crossing: at t itself the probability equals min_p (cheap)
        return float(np.nextafter(t, np.inf))


def _pav_nonincreasing(x: F64, y: F64, w: F64) -> tuple[F64, F64]:
    """Weighted isotonic (non-increasing) regression of ``y`` on sorted, distinct ``x``:
    block centres (weighted mean x) and block values."""
    # fit non-decreasing on -y, a stack of blocks merged while they violate the order
    vals: list[float] = []
    wts: list[float] = []
    xw: list[float] = []
    for xi, yi, wi in zip(x.tolist(), (-y).tolist(), w.tolist(), strict=True):
        vals.append(yi)
        wts.append(wi)
        xw.append(xi * wi)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            v1, w1, x1 = vals.pop(), wts.pop(), xw.pop()
            wsum = wts[-1] + w1
            vals[-1] = (vals[-1] * wts[-1] + v1 * w1) / wsum
            wts[-1] = wsum
            xw[-1] += x1
    centres = np.array(xw) / np.array(wts)
    return centres, -np.array(vals)


def _thin(x: F64, y: F64, keep: int) -> tuple[F64, F64]:
    """At most ``keep`` knots, evenly spaced by index (ends kept): the file stays small."""
    if x.size <= keep:
        return x, y
    idx = np.unique(np.rint(np.linspace(0, x.size - 1, keep)).astype(np.intp))
    return x[idx], y[idx]


def fit_isotonic(scores: F64, outcomes: F64, weights: F64 | None = None) -> ScoreCalibration:
    """Isotonic regression of outcomes (P(cheap as good), 0/1 or soft) on scores."""
    s, y, w = _inputs(scores, outcomes, weights)
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    # merge equal scores first: PAV needs distinct x
    uniq, start = np.unique(s, return_index=True)
    wsum = np.add.reduceat(w, start)
    ymean = np.add.reduceat(w * y, start) / wsum
    cx, cy = _pav_nonincreasing(uniq, ymean, wsum)
    cx, cy = _thin(cx, cy, _MAX_KNOTS)
    cy = np.clip(cy, 0.0, 1.0)
    return ScoreCalibration(cx, np.minimum.accumulate(cy), ISOTONIC)


def fit_platt(scores: F64, outcomes: F64, weights: F64 | None = None) -> ScoreCalibration:
    """Platt scaling: ``sigmoid(a * score + b)`` by Newton's method, sampled as knots over
    the scores' range (the map must not increase: a fit with ``a > 0`` becomes the base rate)."""
    s, y, w = _inputs(scores, outcomes, weights)
    w = w / w.mean()
    a = b = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(a * s + b)))
        r = w * (p - y)
        h = w * p * (1.0 - p) + 1e-9
        grad = np.array([(r * s).sum(), r.sum()]) + 1e-6 * np.array([a, b])
        hess = np.array([[(h * s * s).sum(), (h * s).sum()], [(h * s).sum(), h.sum()]])
        step = np.linalg.solve(hess + 1e-6 * np.eye(2), grad)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-10:
            break
    if a > 0.0:  # the scores rank the wrong way here: the flat map at the base rate
        a = 0.0
        m = float(np.clip((w * y).sum() / w.sum(), 1e-9, 1.0 - 1e-9))
        b = float(np.log(m / (1.0 - m)))
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        hi = lo + 1e-6
    x = np.linspace(lo, hi, _PLATT_KNOTS)
    return ScoreCalibration(x, 1.0 / (1.0 + np.exp(-(a * x + b))), PLATT)


def fit_calibration(
    scores: F64, outcomes: F64, weights: F64 | None = None, method: str = ISOTONIC
) -> ScoreCalibration:
    """A calibration of ``scores`` to ``outcomes`` by ``method`` (``isotonic`` or ``platt``)."""
    if method == ISOTONIC:
        return fit_isotonic(scores, outcomes, weights)
    if method == PLATT:
        return fit_platt(scores, outcomes, weights)
    raise ValueError(f"calibration method must be {ISOTONIC!r} or {PLATT!r}, got {method!r}")


def _inputs(scores: F64, outcomes: F64, weights: F64 | None) -> tuple[F64, F64, F64]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not (s.shape == y.shape == w.shape) or s.size < 2:
        raise ValueError("calibration needs at least two scores, one outcome and weight each")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("calibration weights must be non-negative, not all zero")
    return s, y, w


@dataclass(frozen=True)
class Reliability:
    """Predicted against observed in equal-width probability bins, and the expected
    calibration error (the count-weighted mean gap over bins)."""

    edges: F64  # bins + 1 edges over [0, 1]
    count: npt.NDArray[np.int64]
    predicted: F64  # mean predicted probability per bin (nan when empty)
    observed: F64  # mean outcome per bin (nan when empty)
    ece: float
    n: int


def reliability(predicted: npt.ArrayLike, observed: npt.ArrayLike, bins: int = 10) -> Reliability:
    """Bin ``predicted`` probabilities (equal width over [0, 1]) against ``observed`` outcomes."""
    p = np.asarray(predicted, dtype=np.float64).ravel()
    y = np.asarray(observed, dtype=np.float64).ravel()
    if p.shape != y.shape or p.size == 0:
        raise ValueError("reliability needs as many outcomes as predictions, at least one")
    edges = np.linspace(0.0, 1.0, bins + 1)
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    count = np.bincount(b, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = np.bincount(b, p, bins) / count
        obs = np.bincount(b, y, bins) / count
    full = count > 0
    ece = float((count[full] * np.abs(pred[full] - obs[full])).sum() / p.size)
    return Reliability(edges, count, pred, obs, ece, int(p.size))
