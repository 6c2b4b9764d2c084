"""The wrong-hit bound of one route's semantic cache (``cache.max_error_rate``).

Per route, candidates fall in two *strata* (:data:`STRATA`): ``clear`` when the candidate's
similarity exceeds that of its nearest *rival* (the next entry holding another answer) by
at least :data:`MARGIN_CUT`, ``crowded`` otherwise. Each stratum keeps its own evidence and
threshold, tested at its share (:data:`SHARES`) of the error probability, so that with the
stated confidence every stratum's served wrong rate, hence the route's (their mixture),
stays within delta. Per stratum, evidence is kept per similarity *bin* (width
:data:`BIN_WIDTH` from :data:`FLOOR` to 1) of the best candidate the verifier accepted:

- ``T[b]``: lookups whose candidate fell in bin b (all of them: known without any check);
- ``n[b]``, ``k[b]``: comparisons of a candidate's cached answer with a fresh upstream answer
  for the same request, and how many the judge found different (wrong). They come from
  *shadow checks* (a sampled share of would-be hits is sent upstream instead) and, for free,
  from misses (the request went upstream anyway, its nearest candidate is compared).

The threshold is chosen by fixed-sequence testing over the bin edges, from the top down,
on the comparisons *pooled* at or above each edge (``k`` wrong of ``n``): the edge passes
when a test martingale against "the wrong rate at or above it is at least delta" (a mixture
of likelihood ratios, :func:`log_evidence`) reaches 1/(1 - confidence). Such a test stays
valid however often it is repeated as the counts grow, which the threshold's recomputation
every :data:`REFRESH` observations needs. The walk starts at the highest edge whose pooled
comparisons reach :func:`start_size` (fixed by sample sizes, never by outcomes) and stops
at the first failure; the threshold is the lowest edge that passed. Pooling is valid, and
conservative, when the wrong rate does not rise with similarity: comparisons over-sample the
low end of every served range (misses are all compared, would-be hits only at the shadow
share), so the pooled rate over-estimates the traffic's. Until a threshold is certified
only exact hits are served and every candidate is compared for free. The shadow-check
share adapts: ``verify_sample`` when the bound is tight, up to :data:`MAX_SAMPLE` while it
is wide.

The served wrong-hit rate is also estimated directly: every shadow-checked would-be hit
counts with weight 1/q (its sampling probability), giving an importance-weighted rate and a
Wilson interval at Kish's effective size. Client feedback marking a hit wrong is a lower
bound on wrong hits and raises the estimate when it exceeds it. Guarantee, assumptions and
costs: docs/cache.md ("Bounding wrong hits").

Pure arithmetic; the shared counters live in :class:`Evidence` (a flat dict of floats, so a
Redis hash can hold and sum them: :mod:`routeguard.cache.evidence`).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

FLOOR: Final = 0.70  # lowest similarity whose candidates are compared (and may ever be served)
BIN_WIDTH: Final = 0.01
BINS: Final = round((1.0 - FLOOR) / BIN_WIDTH)
MAX_SAMPLE: Final = 0.5  # the highest shadow-check share while the bound is uncertain
REFRESH: Final = 16  # observations between two computations of the threshold


MARGIN_CUT: Final = 0.08  # a candidate this far above its nearest rival stands "clear"
STRATA: Final = ("clear", "crowded")  # each with its own evidence and threshold
SHARES: Final = (0.75, 0.25)  # of the error probability (1 - confidence), per stratum

# Counter names per stratum and bin: traffic, comparisons, comparisons found wrong. (Named
# apart from the unstratified counters of earlier versions, which are not read: their
# evidence mixes both strata.)
_T = tuple(tuple(f"s{st}.T{b}" for b in range(BINS)) for st in range(len(STRATA)))
_N = tuple(tuple(f"s{st}.n{b}" for b in range(BINS)) for st in range(len(STRATA)))
_K = tuple(tuple(f"s{st}.k{b}" for b in range(BINS)) for st in range(len(STRATA)))


def stratum_of(margin: float | None) -> int:
    """The stratum of a candidate whose similarity exceeds the next entry's by ``margin``
    (None: unknown, counted as clear)."""
    return 0 if margin is None or margin >= MARGIN_CUT - 1e-9 else 1


def bin_of(score: float) -> int | None:
    """The bin of a similarity score (None below :data:`FLOOR`)."""
    if score < FLOOR:
        return None
    return min(BINS - 1, int((score - FLOOR) / BIN_WIDTH + 1e-9))


def bin_edge(b: int) -> float:
    """The lower edge of bin ``b`` (the threshold that serves it and every bin above)."""
    return round(FLOOR + b * BIN_WIDTH, 6)


def z_of(confidence: float) -> float:
    """The one-sided normal quantile of ``confidence`` (1.645 for 0.95)."""
    return NormalDist().inv_cdf(confidence)


def wilson_upper(p: float, n: float, z: float) -> float:
    """The Wilson score upper bound of a proportion ``p`` seen on ``n`` (effective) trials."""
    if n <= 0:
        return 1.0
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(max(0.0, p * (1 - p) / n + z2 / (4 * n * n)))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def wilson_lower(p: float, n: float, z: float) -> float:
    """The Wilson score lower bound of a proportion ``p`` seen on ``n`` (effective) trials."""
    if n <= 0:
        return 0.0
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(max(0.0, p * (1 - p) / n + z2 / (4 * n * n)))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def binomial_cdf(k: float, n: float, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)`` (counts may arrive as floats)."""
    k, n = math.floor(k + 1e-9), round(n)
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return _beta_regularized(1.0 - p, n - k, k + 1)


def binomial_upper(k: float, n: float, confidence: float) -> float:
    """The one-sided Clopper-Pearson upper bound of a proportion: ``k`` of ``n`` at
    ``confidence`` (1 with no trials)."""
    if n <= 0 or k >= n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = k / n, 1.0
    for _ in range(60):  # bisection: the CDF falls as p rises
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


ALTERNATIVES: Final = (0.1, 0.25, 0.5, 0.75)  # the mixture's wrong rates, as shares of delta
WALKS: Final = 4  # test walks, starting at 1, 4, 16 and 64 times the smallest start size


def log_evidence(k: float, n: float, delta: float) -> float:
    """The log of the test martingale against "the wrong rate is at least ``delta``" after
    ``k`` wrong of ``n``: the likelihood ratio of a rate ``c * delta`` to ``delta``, averaged
    over ``c`` in :data:`ALTERNATIVES`. Under that hypothesis its expectation stays <= 1 at
    every step, so (Ville) it ever reaches 1/alpha with probability <= alpha."""
    right = n - k
    terms = [
        k * math.log(c) + right * (math.log1p(-c * delta) - math.log1p(-delta))
        for c in ALTERNATIVES
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms) / len(terms))


def certifies(k: float, n: float, delta: float, confidence: float) -> bool:
    """Whether ``k`` wrong of ``n`` rejects "the wrong rate is at least ``delta``" at
    ``confidence``, validly however often the counts are tested as they grow."""
    return n > 0 and log_evidence(k, n, delta) >= -math.log(1.0 - confidence)


def anytime_upper(k: float, n: float, confidence: float) -> float:
    """The lowest rate the test of :func:`certifies` rejects at: an upper confidence bound
    of the wrong rate valid at every sample size at once (1 with no trials)."""
    if n <= 0 or k >= n or not certifies(k, n, 0.999999, confidence):
        return 1.0
    lo, hi = k / n, 0.999999
    for _ in range(50):  # rejecting gets easier as the tested rate rises
        mid = (lo + hi) / 2
        if certifies(k, n, mid, confidence):
            hi = mid
        else:
            lo = mid
    return hi


def start_size(delta: float, confidence: float) -> float:
    """The fewest comparisons, none of them wrong, that certify ``delta``: where the first
    test walk starts (the others start at 4, 16 and 64 times that)."""
    hi = 1.0
    while not certifies(0, hi, delta, confidence):
        hi *= 2
    lo = hi / 2
    while hi - lo > 1:
        mid = math.floor((lo + hi) / 2)
        if certifies(0, mid, delta, confidence):
            hi = mid
        else:
            lo = mid
    return hi


def _beta_regularized(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` (continued fraction, evaluated
    by the modified Lentz method on whichever side converges fast)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _beta_regularized(1.0 - x, b, a)
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    frac = d
    for m in range(1, 10_000):
        two_m = 2 * m
        for num in (
            m * (b - m) * x / ((a + two_m - 1) * (a + two_m)),
            -(a + m) * (a + b + m) * x / ((a + two_m) * (a + two_m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            frac *= c * d
        if abs(c * d - 1.0) < 1e-13:
            break
    return math.exp(log_front) * frac / a


# Counter names of an Evidence (also the fields of its Redis hash).
COUNTERS: Final = (
    "lookups",  # semantic lookups (the exact tier answered none of them)
    "would_hit",  # lookups whose candidate was at or above the threshold in force
    "served",  # ... served from the cache
    "shadow",  # ... sent upstream instead (shadow checks: the extra calls)
    "shadow_wrong",  # shadow checks the judge found wrong
    "free",  # misses whose candidate was compared (no extra call)
    "sw",  # sum of 1/q over judged shadow checks
    "sw2",  # sum of 1/q^2
    "swy",  # sum of 1/q over wrong ones
    "fb_wrong",  # hits a client marked wrong (POST /v1/feedback)
    "fb_right",  # hits a client marked right
)


class Evidence:
    """Additive counters: per-bin traffic and comparisons, and the route's totals."""

    __slots__ = ("values",)

    def __init__(self, values: Mapping[str, float] | None = None) -> None:
        self.values: dict[str, float] = dict(values or {})

    def get(self, name: str) -> float:
        """A counter (0 when never bumped)."""
        return self.values.get(name, 0.0)

    def add(self, name: str, amount: float = 1.0) -> None:
        """Bump a counter."""
        self.values[name] = self.values.get(name, 0.0) + amount

    def merged(self, other: Evidence) -> Evidence:
        """The sum of two sets of counters."""
        out = dict(self.values)
        for k, v in other.values.items():
            out[k] = out.get(k, 0.0) + v
        return Evidence(out)


@dataclass(frozen=True, slots=True)
class Decision:
    """What one lookup's candidate gets: served, sent upstream as a shadow check, or a miss
    (``compare``: its answer is compared with the fresh one either way, except when served)."""

    serve: bool
    shadow: bool
    compare: bool
    weight: float  # 1/q for a shadow check, 1 otherwise
    stratum: int = 0  # index into STRATA


@dataclass(frozen=True, slots=True)
class Estimate:
    """The route's bound as it stands: threshold, certified bound and served-rate estimate."""

    thresholds: tuple[float | None, ...]  # per stratum; None: no semantic hit served there
    bounds: tuple[float, ...]  # per stratum: upper confidence bound at its threshold
    samples: tuple[float, ...]  # per stratum: the shadow-check share in force
    rate: float  # importance-weighted wrong-hit rate of served hits (shadow checks)
    rate_low: float
    rate_high: float
    checks: float  # effective number of shadow checks behind ``rate``

    @property
    def threshold(self) -> float | None:
        """The lowest threshold in force in any stratum (None: exact hits only)."""
        live = [t for t in self.thresholds if t is not None]
        return min(live) if live else None

    @property
    def bound(self) -> float:
        """An upper confidence bound of the route's served wrong share: the largest of the
        serving strata's bounds (1 while none serves)."""
        live = [b for t, b in zip(self.thresholds, self.bounds, strict=True) if t is not None]
        return max(live) if live else 1.0

    @property
    def sample(self) -> float:
        """The shadow-check share of would-be hits: the largest among the serving strata
        (among all while none serves; a stratum that serves nothing has no would-be hit)."""
        live = [q for t, q in zip(self.thresholds, self.samples, strict=True) if t is not None]
        return max(live or self.samples)


class ErrorBound:
    """One route's evidence and the threshold it certifies for ``delta``.

    ``local`` holds what this process observed since it last synced; ``shared`` what every
    instance had summed at that sync (memory mode: nothing). Thread-safe.
    """

    def __init__(
        self,
        delta: float,
        *,
        verify_sample: float = 0.05,
        confidence: float = 0.95,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"max_error_rate must be in (0, 1), got {delta}")
        if not 0.0 <= verify_sample <= 1.0:
            raise ValueError(f"verify_sample must be in [0, 1], got {verify_sample}")
        self.delta = delta
        self.verify_sample = verify_sample
        if not 0.5 <= confidence < 1.0:
            raise ValueError(f"error_confidence must be in [0.5, 1), got {confidence}")
        self.confidence = confidence
        self.z = z_of(confidence)
        # Each stratum's walks test at the level split evenly between them all, and each
        # starts where the pooled comparisons reach its size (see the module docstring).
        self.levels = tuple(1.0 - (1.0 - confidence) * w / WALKS for w in SHARES)
        self.starts = tuple(
            tuple(start_size(delta, level) * 4.0**j for j in range(WALKS)) for level in self.levels
        )
        self.shared = Evidence()
        self.local = Evidence()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._estimate: Estimate | None = None
        self._changes = 0  # observations since the estimate was computed

    # ------------------------------------------------------------------ evidence

    @property
    def evidence(self) -> Evidence:
        """Every count known here: the shared sums plus what is not synced yet."""
        with self._lock:
            return self.shared.merged(self.local)

    def replace_shared(self, shared: Evidence, synced: Evidence) -> None:
        """After a sync: ``shared`` is the store's sum, which now includes ``synced`` (the
        local counts that were sent)."""
        with self._lock:
            for k, v in synced.values.items():
                left = self.local.values.get(k, 0.0) - v
                if abs(left) < 1e-12:
                    self.local.values.pop(k, None)
                else:
                    self.local.values[k] = left
            self.shared = shared
            self._estimate = None

    def take_local(self) -> Evidence:
        """A copy of the counts not yet synced (pass it back to :meth:`replace_shared`)."""
        with self._lock:
            return Evidence(self.local.values)

    def _bump(self, **counts: float) -> None:
        with self._lock:
            for k, v in counts.items():
                self.local.add(k, v)
            self._changes += 1
            if self._changes >= REFRESH:
                self._estimate = None

    # ------------------------------------------------------------------ decisions

    def decide(self, score: float, margin: float | None = None) -> Decision:
        """Serve, shadow-check or miss a candidate scoring ``score``, ``margin`` above the
        next entry (and count its traffic)."""
        b = bin_of(score)
        est = self.estimate()
        if b is None:
            self._bump(lookups=1)
            return Decision(False, False, False, 1.0)
        st = stratum_of(margin)
        t = est.thresholds[st]
        above = t is not None and score >= t
        counts = {"lookups": 1.0, _T[st][b]: 1.0}
        if not above:
            self._bump(**counts)
            return Decision(False, False, True, 1.0, st)
        counts["would_hit"] = 1.0
        q = est.samples[st]
        if q > 0 and self._rng.random() < q:
            counts["shadow"] = 1.0
            self._bump(**counts)
            return Decision(False, True, True, 1.0 / q, st)
        counts["served"] = 1.0
        self._bump(**counts)
        return Decision(True, False, False, 1.0, st)

    def no_candidate(self) -> None:
        """Count a semantic lookup that found no candidate at or above :data:`FLOOR`."""
        self._bump(lookups=1)

    def record(self, score: float, wrong: bool, decision: Decision) -> None:
        """The judge's verdict on a compared candidate."""
        b = bin_of(score)
        if b is None or not decision.compare:
            return
        st = decision.stratum
        counts = {_N[st][b]: 1.0, _K[st][b]: float(wrong)}
        if decision.shadow:
            w = decision.weight
            counts.update(sw=w, sw2=w * w, swy=w * float(wrong), shadow_wrong=float(wrong))
        else:
            counts["free"] = 1.0
        self._bump(**counts)

    def feedback(self, wrong: bool) -> None:
        """A client's verdict on a served hit (a lower bound on wrong hits, not a sample)."""
        self._bump(**{"fb_wrong" if wrong else "fb_right": 1.0})

    # ------------------------------------------------------------------ the bound

    def estimate(self, fresh: bool = False) -> Estimate:
        """The threshold in force, its bound, the shadow share and the served-rate estimate
        (recomputed every :data:`REFRESH` observations, or now with ``fresh``)."""
        with self._lock:
            if self._estimate is None or (fresh and self._changes):
                self._estimate = self._compute(_Sum(self.shared, self.local))
                self._changes = 0
            return self._estimate

    def _compute(self, ev: Evidence | _Sum) -> Estimate:
        thresholds: list[float | None] = []
        bounds: list[float] = []
        samples: list[float] = []
        for st in range(len(STRATA)):
            t, bound_at, sample = self._stratum(ev, st)
            thresholds.append(t)
            bounds.append(bound_at)
            samples.append(sample)
        rate, low, high, n_eff = self._served_rate(ev)
        return Estimate(tuple(thresholds), tuple(bounds), tuple(samples), rate, low, high, n_eff)

    def _stratum(self, ev: Evidence | _Sum, st: int) -> tuple[float | None, float, float]:
        """(threshold, its bound, shadow share) of one stratum."""
        # Pooled comparisons at or above each edge, from the top down.
        pooled: list[tuple[int, float, float]] = []
        seen = wrong = 0.0
        for b in range(BINS - 1, -1, -1):
            seen += ev.get(_N[st][b])
            wrong += ev.get(_K[st][b])
            pooled.append((b, seen, wrong))
        # Fixed-sequence walks (an order fixed by sample sizes, never by outcomes): each
        # starts where the pooled comparisons reach its size and ends at its first failure.
        passed: int | None = None
        point_at = 1.0
        level = self.levels[st]
        for start in self.starts[st]:
            for b, n, k in pooled:
                if n < start:
                    continue
                if not certifies(k, n, self.delta, level):
                    break
                if passed is None or b < passed:
                    passed, point_at = b, k / n
        threshold: float | None = None  # nothing certified (yet): exact hits only
        bound_at = 1.0
        if passed is not None:
            threshold = bin_edge(passed)
            k, n = self._pooled(ev, st, passed)
            bound_at = anytime_upper(k, n, level)
        width = bound_at - point_at if passed is not None else 1.0
        sample = min(MAX_SAMPLE, max(self.verify_sample, MAX_SAMPLE * (width / self.delta) ** 2))
        if self.verify_sample == 0:
            sample = 0.0
        return threshold, bound_at, sample

    @staticmethod
    def _pooled(ev: Evidence | _Sum, st: int, lowest: int) -> tuple[float, float]:
        """(wrong, compared) of stratum ``st`` over the bins from ``lowest`` up."""
        k = sum(ev.get(_K[st][b]) for b in range(lowest, BINS))
        n = sum(ev.get(_N[st][b]) for b in range(lowest, BINS))
        return k, n

    def _served_rate(self, ev: Evidence | _Sum) -> tuple[float, float, float, float]:
        """(rate, low, high, effective checks) of wrong served hits, importance-weighted;
        raised to the client-reported wrong share of served hits when that is higher."""
        sw, sw2, swy = ev.get("sw"), ev.get("sw2"), ev.get("swy")
        reported = ev.get("fb_wrong") / ev.get("served") if ev.get("served") else 0.0
        if sw <= 0:
            return reported, reported, 1.0, 0.0
        rate = swy / sw
        n_eff = sw * sw / sw2 if sw2 > 0 else 0.0
        low = wilson_lower(rate, n_eff, self.z)
        high = wilson_upper(rate, n_eff, self.z)
        if reported > rate:
            rate, low, high = reported, max(low, reported), max(high, reported)
        return rate, low, high, n_eff

    def stats(self) -> dict[str, float | int | dict[str, float | None] | None]:
        """The route's counters and estimate, for ``GET /admin/cache/stats`` and metrics."""
        ev = self.evidence
        est = self.estimate(fresh=True)
        lookups = ev.get("lookups")
        would = ev.get("would_hit")
        return {
            "max_error_rate": self.delta,
            "threshold": est.threshold,
            "thresholds": dict(zip(STRATA, est.thresholds, strict=True)),
            "bound": est.bound,
            "verify_sample": est.sample,
            "semantic_lookups": int(lookups),
            "would_hit": int(would),
            "served_hits": int(ev.get("served")),
            "semantic_hit_rate": ev.get("served") / lookups if lookups else 0.0,
            "shadow_checks": int(ev.get("shadow")),
            "shadow_share": ev.get("shadow") / would if would else 0.0,
            "shadow_wrong": int(ev.get("shadow_wrong")),
            "free_checks": int(ev.get("free")),
            "error_rate": est.rate,
            "error_rate_low": est.rate_low,
            "error_rate_high": est.rate_high,
            "effective_checks": est.checks,
            "feedback_wrong": int(ev.get("fb_wrong")),
            "feedback_right": int(ev.get("fb_right")),
        }


class _Sum:
    """Two Evidences read as their sum, without building it."""

    __slots__ = ("a", "b")

    def __init__(self, a: Evidence, b: Evidence) -> None:
        self.a, self.b = a, b

    def get(self, name: str) -> float:
        """The summed counter."""
        return self.a.values.get(name, 0.0) + self.b.values.get(name, 0.0)
