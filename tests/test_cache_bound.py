"""The wrong-hit bound's arithmetic (:mod:`routeguard.cache.bound`): the exact binomial test
and confidence bounds, the cold start, the threshold it certifies on seeded synthetic streams
with a known wrong rate per similarity (and one with a floor of wrong answers that no
threshold gets under), the importance-weighted served-rate estimate, the adaptive shadow
share, and the bookkeeping of evidence shared between instances."""

from __future__ import annotations

import math
import random

import pytest

from routeguard.cache.bound import (
    BINS,
    FLOOR,
    MAX_SAMPLE,
    ErrorBound,
    Evidence,
    bin_edge,
    bin_of,
    binomial_cdf,
    binomial_upper,
    wilson_lower,
    wilson_upper,
    z_of,
)


def test_bins_cover_floor_to_one() -> None:
    assert bin_of(FLOOR - 1e-6) is None
    assert bin_of(FLOOR) == 0
    assert bin_of(1.0) == BINS - 1
    assert bin_of(0.905) == bin_of(0.9)
    assert bin_edge(bin_of(0.9) or 0) == pytest.approx(0.9)


def test_wilson_bounds_bracket_the_estimate_and_narrow_with_n() -> None:
    z = z_of(0.95)
    assert z == pytest.approx(1.645, abs=1e-3)
    for p in (0.0, 0.01, 0.2):
        lo10, hi10 = wilson_lower(p, 10, z), wilson_upper(p, 10, z)
        lo1k, hi1k = wilson_lower(p, 1000, z), wilson_upper(p, 1000, z)
        assert lo10 <= lo1k <= p <= hi1k <= hi10
    assert wilson_upper(0.0, 0, z) == 1.0 and wilson_lower(0.3, 0, z) == 0.0
    # 0 wrong of 100: the one-sided 95% Wilson bound is z^2 / (n + z^2)
    assert wilson_upper(0.0, 100, z) == pytest.approx(z * z / (100 + z * z), rel=1e-9)


def test_wilson_upper_covers_the_true_rate() -> None:
    """A seeded coverage check: the one-sided 95% bound is below the true rate in about 5%
    of samples (binomial, n=200, p=0.02), not much more."""
    rng = random.Random(3)
    z = z_of(0.95)
    misses = 0
    for _ in range(2000):
        k = sum(rng.random() < 0.02 for _ in range(200))
        misses += wilson_upper(k / 200, 200, z) < 0.02
    assert misses / 2000 < 0.08


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 10, 0.1), (3, 50, 0.02), (20, 300, 0.1), (100, 1000, 0.08), (5, 5000, 0.001),
     (49, 50, 0.9), (0, 1, 0.5), (7, 7, 0.3), (-1, 5, 0.2), (2, 40, 0.0), (2, 40, 1.0)],
)  # fmt: skip
def test_binomial_cdf_is_the_sum_of_the_terms(k: int, n: int, p: float) -> None:
    direct = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(0, k + 1))
    assert binomial_cdf(k, n, p) == pytest.approx(direct, abs=1e-12)
    assert binomial_cdf(float(k), float(n), p) == pytest.approx(direct, abs=1e-12)


def test_clopper_pearson_upper_bound() -> None:
    # 0 of n: the upper bound solves (1 - p)^n = alpha
    assert binomial_upper(0, 100, 0.95) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)
    for k, n in ((1, 20), (8, 100), (80, 1000)):
        hi = binomial_upper(k, n, 0.95)
        assert binomial_cdf(k, n, hi) == pytest.approx(0.05, abs=1e-9)
        assert k / n < hi < binomial_upper(k, n, 0.99)
    assert binomial_upper(0, 0, 0.95) == 1.0 and binomial_upper(5, 5, 0.95) == 1.0


def test_clopper_pearson_covers_the_true_rate() -> None:
    """Seeded coverage: the one-sided 95% bound is below the true rate in at most about 5%
    of samples (binomial, n=200, p=0.02)."""
    rng = random.Random(3)
    misses = 0
    for _ in range(2000):
        k = sum(rng.random() < 0.02 for _ in range(200))
        misses += binomial_upper(k, 200, 0.95) < 0.02
    assert misses / 2000 <= 0.06


def test_cold_start_serves_nothing_semantic_then_follows_evidence() -> None:
    eb = ErrorBound(0.05, rng=random.Random(1))
    est = eb.estimate()
    assert est.threshold is None and est.sample == MAX_SAMPLE
    d = eb.decide(0.999)
    assert not d.serve and not d.shadow and d.compare  # a miss, compared for free
    # right answers down to 0.9, wrong below: a threshold at 0.9 once the evidence is in
    rng = random.Random(2)
    for _ in range(3000):
        s = rng.uniform(0.8, 1.0)
        d = eb.decide(s)
        if d.compare:
            eb.record(s, s < 0.9, d)
    est = eb.estimate(fresh=True)
    assert est.threshold == pytest.approx(0.9)
    assert est.bound <= 0.05
    assert eb.decide(0.95).serve or eb.decide(0.95).serve  # at most two shadow draws
    assert not eb.decide(0.89).serve


def test_wrong_answers_at_the_top_certify_nothing() -> None:
    eb = ErrorBound(0.02, rng=random.Random(1))
    for _ in range(500):
        d = eb.decide(0.99)
        eb.record(0.99, True, d)
    assert eb.estimate(fresh=True).threshold is None
    assert not any(eb.decide(0.995).serve for _ in range(50))


def _stream(delta: float, seed: int, n: int, wrong_at: float, steep: float) -> dict[str, float]:
    """Feed ``n`` candidates whose wrong probability is a logistic of the score (50% at
    ``wrong_at``); return the served hits' true wrong share and the estimate."""
    rng = random.Random(seed)
    eb = ErrorBound(delta, verify_sample=0.05, rng=random.Random(seed + 100))
    served = wrong = 0
    for _ in range(n):
        s = min(1.0, max(0.6, rng.gauss(0.86, 0.07)))
        y = rng.random() < 1 / (1 + math.exp(steep * (s - wrong_at)))
        d = eb.decide(s)
        if d.serve:
            served += 1
            wrong += y
        if d.compare:
            eb.record(s, y, d)
    stats = eb.stats()
    return {
        "served": served,
        "rate": wrong / max(served, 1),
        "hit_share": served / n,
        "estimate": float(stats["error_rate"] or 0),
        "high": float(stats["error_rate_high"] or 0),
    }


@pytest.mark.parametrize("delta", [0.01, 0.02, 0.05])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_served_wrong_rate_stays_under_delta(delta: float, seed: int) -> None:
    out = _stream(delta, seed, 20_000, wrong_at=0.85, steep=60.0)
    assert out["served"] > 200  # it does certify a threshold and serve
    # the realised wrong share of served hits (cold start included), with a small tolerance
    # for the sampling noise of a few thousand hits
    tol = 2.0 * math.sqrt(delta * (1 - delta) / out["served"])
    assert out["rate"] <= delta + tol
    assert out["estimate"] <= out["high"]


def test_a_looser_bound_serves_more() -> None:
    tight = _stream(0.01, 5, 20_000, wrong_at=0.85, steep=60.0)
    loose = _stream(0.05, 5, 20_000, wrong_at=0.85, steep=60.0)
    assert loose["hit_share"] > tight["hit_share"]


def test_traffic_that_is_always_wrong_is_never_certified() -> None:
    out = _stream(0.05, 9, 5_000, wrong_at=2.0, steep=10.0)  # wrong everywhere
    assert out["served"] == 0
    eb = ErrorBound(0.05, rng=random.Random(0))
    for _ in range(2000):
        s = random.Random(_).uniform(0.7, 1.0)
        d = eb.decide(s)
        if d.compare:
            eb.record(s, True, d)
    assert eb.estimate(fresh=True).threshold is None


@pytest.mark.parametrize(("delta", "certified"), [(0.05, False), (0.1, True), (0.2, True)])
def test_a_floor_of_wrong_answers_is_never_certified_below_it(
    delta: float, certified: bool
) -> None:
    """Wrong 7% of the time however close (label noise, as in QQP's cluster truth), more
    below 0.9: no threshold for delta under the floor; above it the bound serves, and the
    served share stays within delta."""
    rng = random.Random(21)
    eb = ErrorBound(delta, rng=random.Random(22))
    served = wrong = 0
    for _ in range(30_000):
        s = rng.uniform(0.75, 1.0)
        y = rng.random() < (0.07 if s >= 0.9 else 0.07 + 3 * (0.9 - s))
        d = eb.decide(s)
        served += d.serve
        wrong += d.serve and y
        if d.compare:
            eb.record(s, y, d)
    assert (served > 0) is certified
    if served:
        assert wrong / served <= delta + 2 * math.sqrt(delta * (1 - delta) / served)


def test_importance_weighted_estimate_recovers_a_known_rate() -> None:
    """Would-be hits that are wrong 3% of the time, shadow-checked at varying shares: the
    weighted estimate's 90% interval holds 3% in most of eight seeded runs."""
    covered = 0
    for seed in range(8):
        rng = random.Random(11 + seed)
        eb = ErrorBound(0.05, verify_sample=0.2, rng=random.Random(100 + seed))
        for b in range(BINS):  # evidence everywhere, wrong at the same 3%
            for _ in range(200):
                d = eb.decide(bin_edge(b) + 0.001)
                if d.compare:
                    eb.record(bin_edge(b) + 0.001, rng.random() < 0.03, d)
        for _ in range(10_000):
            d = eb.decide(0.99)
            if d.compare:
                eb.record(0.99, rng.random() < 0.03, d)
        stats = eb.stats()
        assert stats["shadow_checks"] and stats["effective_checks"]
        low, high = float(stats["error_rate_low"] or 0), float(stats["error_rate_high"] or 0)
        covered += low <= 0.03 <= high
    assert covered >= 6


def test_shadow_share_falls_to_verify_sample_with_evidence() -> None:
    eb = ErrorBound(0.05, verify_sample=0.05, rng=random.Random(2))
    assert eb.estimate().sample == MAX_SAMPLE
    for _ in range(30_000):
        s = 0.9 + random.Random(_).random() * 0.1
        d = eb.decide(s)
        if d.compare:
            eb.record(s, False, d)
    est = eb.estimate(fresh=True)
    assert est.threshold is not None and est.threshold <= 0.9 + 1e-9
    assert est.sample == pytest.approx(0.05)


def test_feedback_raises_the_estimate_it_contradicts() -> None:
    eb = ErrorBound(0.05, rng=random.Random(0))
    for _ in range(400):
        d = eb.decide(0.99)
        if d.compare:
            eb.record(0.99, False, d)
    assert eb.stats()["error_rate"] == 0.0
    served = int(eb.stats()["served_hits"] or 0)
    assert served > 0
    for _ in range(served):
        eb.feedback(True)
    assert eb.stats()["error_rate"] == pytest.approx(1.0)
    assert eb.stats()["feedback_wrong"] == served


def test_shared_evidence_is_not_counted_twice() -> None:
    eb = ErrorBound(0.05)
    eb.local.add("T5", 3)
    sent = eb.take_local()
    eb.local.add("T5", 2)  # observed while the sync was in flight
    eb.replace_shared(Evidence({"T5": 10}), sent)  # the store's sum includes what was sent
    assert eb.local.get("T5") == 2
    assert eb.evidence.get("T5") == 12


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="max_error_rate"):
        ErrorBound(0.0)
    with pytest.raises(ValueError, match="verify_sample"):
        ErrorBound(0.02, verify_sample=1.5)
