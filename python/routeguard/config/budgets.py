"""Budget accounts as written in the config, and their validation: names, periods and time
zones, amounts, parents. :mod:`routeguard.budget.accounts` builds the runtime accounts from
these checked structs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from routeguard.errors import ConfigError, ConfigProblem

# Account names end up inside Redis keys (`{rg:<root>}:held:<name>`): no braces (they
# would change the Cluster hash tag) and no colons (they separate key parts).
ACCOUNT_NAME = re.compile(r"^[^\s{}:]{1,200}$")
NAME_RULE = "use 1-200 characters without spaces, braces or colons"
PeriodKind = Literal["daily", "weekly", "monthly", "rolling", "total"]
_CALENDAR_KINDS: dict[str, PeriodKind] = {
    "daily": "daily",
    "weekly": "weekly",
    "monthly": "monthly",
    "total": "total",
}


class BudgetLimits(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An account's limits as written in the config (money in dollars): the part a named
    account and ``budget_settings.end_user`` (every end user's account) share."""

    limit: float | None = None
    soft_limit: float | None = None
    period: str = "monthly"
    timezone: str = "UTC"
    rpm: int | None = None
    tpm: int | None = None


class BudgetAccountConfig(BudgetLimits, frozen=True, kw_only=True):
    """One budget account as written in the config: its name, parent and limits."""

    name: str
    parent: str | None = None


def parse_period(text: str, timezone: str = "UTC") -> tuple[PeriodKind, ZoneInfo, int]:
    """``(kind, zone, rolling seconds)`` of ``daily|weekly|monthly|total|rolling:<seconds>``
    in ``timezone``; ValueError says what is wrong."""
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {timezone!r}: use an IANA name like 'Europe/Paris' or 'UTC'"
        ) from None
    kind = _CALENDAR_KINDS.get(text)
    if kind is not None:
        return kind, tz, 0
    if text.startswith("rolling:"):
        raw = text.removeprefix("rolling:")
        if raw.isdigit() and int(raw) > 0:
            return "rolling", tz, int(raw)
    raise ValueError(
        f"unknown period {text!r}: expected daily, weekly, monthly, total or "
        "rolling:<seconds> (e.g. rolling:3600)"
    )


def check_numbers(path: str, cfg: BudgetLimits) -> list[ConfigProblem]:
    """Problems with the amounts and rates of ``cfg`` (dollars 0..9e9, soft <= hard, rates > 0)."""
    problems = []
    for key in ("limit", "soft_limit"):
        value = getattr(cfg, key)
        if value is not None and not 0 <= value <= 9e9:
            problems.append(ConfigProblem(f"{path}.{key}", f"{value}: expected 0 to 9e9 dollars"))
    if cfg.limit is not None and cfg.soft_limit is not None and cfg.soft_limit > cfg.limit:
        problems.append(ConfigProblem(f"{path}.soft_limit", "is above the hard limit"))
    for key in ("rpm", "tpm"):
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            problems.append(ConfigProblem(f"{path}.{key}", f"{value}: expected a positive int"))
    return problems


def check_limits(path: str, cfg: BudgetLimits) -> list[ConfigProblem]:
    """Problems with the period, time zone, amounts and rates of ``cfg``."""
    problems = []
    try:
        parse_period(cfg.period, cfg.timezone)
    except ValueError as exc:
        where = "timezone" if "time zone" in str(exc) else "period"
        problems.append(ConfigProblem(f"{path}.{where}", str(exc)))
    return problems + check_numbers(path, cfg)


def check_accounts(
    raw: Sequence[BudgetAccountConfig | Mapping[str, Any]], *, source: str = "budgets"
) -> tuple[BudgetAccountConfig, ...]:
    """The accounts of ``raw``, checked as a whole; ConfigError lists every problem."""
    problems: list[ConfigProblem] = []
    configs: list[tuple[str, BudgetAccountConfig]] = []
    for i, item in enumerate(raw):
        path = f"{source}[{i}]"
        if isinstance(item, BudgetAccountConfig):
            configs.append((path, item))
            continue
        try:
            configs.append((path, msgspec.convert(item, BudgetAccountConfig)))
        except msgspec.ValidationError as exc:
            problems.append(ConfigProblem(path, str(exc)))
    seen: dict[str, str] = {}
    by_name: dict[str, tuple[str, BudgetAccountConfig]] = {}
    for path, cfg in configs:
        if not ACCOUNT_NAME.match(cfg.name):
            problems.append(ConfigProblem(f"{path}.name", f"{cfg.name!r}: {NAME_RULE}"))
        if cfg.name in seen:
            problems.append(ConfigProblem(f"{path}.name", f"duplicate of {seen[cfg.name]}"))
        seen.setdefault(cfg.name, path)
        problems.extend(check_limits(path, cfg))
        by_name[cfg.name] = (path, cfg)
    for name, (path, cfg) in by_name.items():
        if cfg.parent is not None and cfg.parent not in by_name:
            problems.append(ConfigProblem(f"{path}.parent", f"no account named {cfg.parent!r}"))
        elif _has_cycle(name, by_name):
            problems.append(ConfigProblem(f"{path}.parent", "parents form a cycle"))
    if problems:
        raise ConfigError(problems, source=source)
    return tuple(cfg for _, (_, cfg) in by_name.items())


def _has_cycle(name: str, by_name: Mapping[str, tuple[str, BudgetAccountConfig]]) -> bool:
    seen = {name}
    parent = by_name[name][1].parent
    while parent is not None and parent in by_name:
        if parent in seen:
            return True
        seen.add(parent)
        parent = by_name[parent][1].parent
    return False


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*(mo|s|m|h|d|w)\s*$")
# LiteLLM's usual budget durations read as the calendar periods they are meant as.
_CALENDAR_DURATIONS = {86400: "daily", 7 * 86400: "weekly", 30 * 86400: "monthly"}


def period_from_duration(text: str) -> str:
    """A LiteLLM ``budget_duration`` (``"30s"``, ``"1h"``, ``"1d"``, ``"7d"``, ``"30d"``,
    ``"1mo"``) as one of our periods: one day, week or 30 days are ``daily``, ``weekly``,
    ``monthly`` (UTC calendar windows); any other length is ``rolling:<seconds>``.
    ValueError says what is wrong."""
    seconds = duration_seconds(text)
    return _CALENDAR_DURATIONS.get(seconds, f"rolling:{seconds}")


def duration_seconds(text: str) -> int:
    """A LiteLLM duration (``"30d"``, ``"1h"``...) in seconds; ValueError if bad."""
    m = _DURATION.match(str(text))
    if m is None or int(m.group(1)) == 0:
        raise ValueError(
            f"unknown duration {text!r}: expected a number and a unit, s, m, h, d, w or mo "
            "(e.g. 30d, 1h, 7d)"
        )
    return int(m.group(1)) * _DURATION_UNITS[m.group(2)]
