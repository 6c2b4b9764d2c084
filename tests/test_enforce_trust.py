"""Trust score: neutral start, rewards and penalties, decay toward neutral, delegation cap."""

from __future__ import annotations

import pytest

from routeguard.enforce.trust import NEUTRAL, TrustScore
from routeguard.errors import EnforcementError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_starts_neutral_rises_and_falls() -> None:
    clock = Clock()
    s = TrustScore(clock=clock)
    assert s.value() == NEUTRAL
    up = s.record("compliant")
    assert up > NEUTRAL
    down = s.record("denied")
    assert down < up
    after_denial = NEUTRAL - s.record("violation")
    # A violation costs more than a denial, which costs more than a compliant call earns.
    s2 = TrustScore(clock=clock)
    d = NEUTRAL - s2.record("denied")
    s3 = TrustScore(clock=clock)
    v = NEUTRAL - s3.record("violation")
    assert v > d > s.reward
    assert after_denial > 0
    assert s.counts == {"compliant": 1, "denied": 1, "violation": 1}


def test_stays_in_unit_interval() -> None:
    s = TrustScore(clock=Clock())
    for _ in range(100):
        s.record("compliant")
    assert s.value() == 1.0
    for _ in range(100):
        s.record("violation")
    assert s.value() == 0.0


def test_decays_toward_neutral_with_half_life() -> None:
    clock = Clock()
    s = TrustScore(initial=0.9, half_life=100.0, clock=clock)
    clock.t = 100.0
    assert s.value() == pytest.approx(NEUTRAL + 0.4 / 2)
    clock.t = 200.0
    assert s.value() == pytest.approx(NEUTRAL + 0.4 / 4)
    low = TrustScore(initial=0.1, half_life=100.0, clock=clock)
    clock.t = 300.0
    assert low.value() == pytest.approx(NEUTRAL - 0.4 / 2)


def test_capped_by_ceiling() -> None:
    s = TrustScore(initial=0.9, ceiling=0.6, clock=Clock())
    assert s.value() == 0.6
    s.ceiling = 0.3
    assert s.record("compliant") == 0.3


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(EnforcementError, match="half_life"):
        TrustScore(half_life=0)
    with pytest.raises(EnforcementError, match="initial"):
        TrustScore(initial=1.5)
    with pytest.raises(EnforcementError, match="outcome"):
        TrustScore().record("great")  # type: ignore[arg-type]
