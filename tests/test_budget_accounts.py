"""Budget account config, periods and money conversions."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from routeguard import ConfigError
from routeguard.budget import Period, load_accounts, micros_to_usd, usd_to_micros


def test_money_is_exact_integer_micro_dollars() -> None:
    assert usd_to_micros(12.4) == 12_400_000
    assert usd_to_micros("0.1") + usd_to_micros("0.2") == usd_to_micros("0.3")
    assert usd_to_micros("0.0000001") == 0
    assert usd_to_micros("0.0000001", round_up=True) == 1
    assert micros_to_usd(12_400_000) == Decimal("12.4")
    with pytest.raises(ValueError, match="not an amount"):
        usd_to_micros("lots")


@given(
    st.floats(min_value=-1e4, max_value=1e4) | st.integers(-(10**9), 10**9).map(lambda n: n / 1e6)
)
def test_a_float_is_rounded_to_a_thousandth_of_a_micro_dollar_first(usd: float) -> None:
    """A computed cost is rounded to a thousandth of a micro-dollar, then up (a hold) or
    half-up: float noise never tips it to the next micro-dollar (away from a thousandth's
    exact tie, which either side may take)."""
    value = usd * 1_000_000
    thousandths = value * 1000
    assume(abs(thousandths - math.floor(thousandths) - 0.5) > 1e-3)
    assert usd_to_micros(usd, round_up=True) == math.ceil(round(value, 3))
    assert usd_to_micros(usd) == math.floor(round(value, 3) + 0.5)
    assert usd_to_micros(0.1 + 0.2, round_up=True) == 300_000


def test_chains_expand_to_every_ancestor_once() -> None:
    accounts = load_accounts(
        [
            {"name": "org", "limit": 100},
            {"name": "team", "parent": "org"},
            {"name": "key", "parent": "team", "limit": 1.5, "soft_limit": 1.0},
            {"name": "other-org"},
        ]
    )
    assert accounts["key"].chain == ("key", "team", "org")
    assert accounts["key"].root == "org"
    assert (accounts["key"].limit, accounts["key"].soft_limit) == (1_500_000, 1_000_000)
    assert accounts.chain(["key", "team"]) == ("key", "team", "org")
    assert accounts.chain(["team", "key"]) == ("team", "org", "key")
    with pytest.raises(ValueError, match="different roots"):
        accounts.chain(["key", "other-org"])
    with pytest.raises(KeyError, match="unknown budget account"):
        accounts.chain(["ghost"])


def test_every_config_problem_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        load_accounts(
            [
                {"name": "a", "period": "hourly"},
                {"name": "a", "timezone": "Mars/Olympus"},
                {"name": "b", "parent": "nobody", "limit": 1, "soft_limit": 2},
                {"name": "c:d", "rpm": 0},
                {"name": "e", "parent": "f"},
                {"name": "f", "parent": "e"},
                {"name": "g", "colour": "red"},
            ]
        )
    paths = {p.path for p in caught.value.problems}
    assert paths == {
        "budgets[0].period",
        "budgets[1].name",
        "budgets[1].timezone",
        "budgets[2].parent",
        "budgets[2].soft_limit",
        "budgets[3].name",
        "budgets[3].rpm",
        "budgets[4].parent",
        "budgets[5].parent",
        "budgets[6]",
    }
    assert "rolling:<seconds>" in str(caught.value)


def test_calendar_windows_follow_the_time_zone_across_dst() -> None:
    paris = Period.parse("daily", "Europe/Paris")
    # 2026-03-29: Paris moves from UTC+1 to UTC+2; that day lasts 23 hours.
    noon = datetime(2026, 3, 29, 10, 0, tzinfo=UTC).timestamp()
    window = paris.window(noon)
    assert window.end - window.start == 23 * 3600
    assert paris.window(window.end).id == window.id + 1
    assert paris.window(window.end - 0.001).id == window.id
    resets = paris.resets_at(noon)
    assert resets is not None and resets.isoformat() == "2026-03-30T00:00:00+02:00"


def test_weekly_and_monthly_ids_increase_by_one() -> None:
    weekly, monthly = Period.parse("weekly"), Period.parse("monthly", "Asia/Tokyo")
    sunday = datetime(2026, 11, 29, 23, 0, tzinfo=UTC).timestamp()  # Monday 08:00 in Tokyo
    w = weekly.window(sunday)
    assert datetime.fromtimestamp(w.start, UTC).strftime("%a %H:%M") == "Mon 00:00"
    assert weekly.window(w.end).id == w.id + 1
    m = monthly.window(sunday)
    assert monthly.window(m.end).id == m.id + 1
    end = datetime.fromtimestamp(m.end, UTC)
    assert end.isoformat() == "2026-11-30T15:00:00+00:00", "midnight Dec 1 in Tokyo"
    assert monthly.describe() == "this month"
    assert Period.parse("rolling:5400").describe() == "in the last 90 min"
    assert Period.parse("total").window(sunday).id == 0
