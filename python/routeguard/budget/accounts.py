"""Budget accounts: their config, their periods, and the chains they form.

Flow: raw config (a list of mappings, or :class:`BudgetAccountConfig` structs) ->
:func:`load_accounts` validates every entry (collecting each problem with its key path,
e.g. ``budgets[2].period``) and builds :class:`Accounts`: one :class:`Account` per name
with its limits in integer micro-dollars, its :class:`Period` and its *chain* (itself
then its ancestors, key -> user -> team -> org). Both backends take an ``Accounts``; a
reservation on an account always covers its whole chain, so a caller cannot bypass a
parent's budget by naming only the child.

Periods: ``daily``, ``weekly`` (Monday-start), ``monthly`` in the account's IANA time zone,
``rolling:<seconds>``, or ``total`` (never resets). A calendar window's id is an integer
that grows by one per window (days since 0001-01-01, weeks since then, months since year
0), computed with :mod:`zoneinfo`, so DST transitions move the boundaries correctly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from routeguard.config.budgets import (
    ACCOUNT_NAME,
    NAME_RULE,
    BudgetAccountConfig,
    PeriodKind,
    check_accounts,
    check_numbers,
    parse_period,
)

MICROS_PER_USD = 1_000_000
ROLLING_BUCKETS = 60


def usd_to_micros(usd: float | int | str | Decimal, *, round_up: bool = False) -> int:
    """Dollars to integer micro-dollars, exactly for decimal input (``"12.40"``, ``12.4``).

    ``round_up`` rounds a fraction of a micro-dollar up (for worst-case reservations);
    otherwise half-up. A float (a computed cost) is first rounded to a thousandth of a
    micro-dollar, so float noise (``0.1 + 0.2``) never tips it to the next micro-dollar.
    """
    if type(usd) is float and math.isfinite(usd) and abs(usd) < 9e9:
        # What rounding to a thousandth and then up (or half-up) gives, from the fraction
        # (round(x, 3) formats the float to decimal digits: slow on every request's path).
        value_f = usd * MICROS_PER_USD
        whole = math.floor(value_f)
        frac = value_f - whole
        return whole + (frac >= (0.0005 if round_up else 0.4995))
    try:
        value = Decimal(str(usd)) * MICROS_PER_USD
    except InvalidOperation:
        raise ValueError(f"not an amount of dollars: {usd!r}") from None
    return int(value.to_integral_value(ROUND_CEILING if round_up else ROUND_HALF_UP))


def micros_to_usd(micros: int) -> Decimal:
    """Integer micro-dollars to exact dollars."""
    return Decimal(micros) / MICROS_PER_USD


@dataclass(frozen=True, slots=True)
class Window:
    """One calendar window: its id and its bounds in unix seconds."""

    id: int
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Period:
    """How an account's spend is windowed (see the module docstring)."""

    kind: PeriodKind
    tz: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    seconds: int = 0  # rolling windows only

    @staticmethod
    def parse(text: str, timezone: str = "UTC") -> Period:
        """``daily|weekly|monthly|total|rolling:<seconds>`` in ``timezone``; ValueError if bad."""
        kind, tz, seconds = parse_period(text, timezone)
        return Period(kind, tz, seconds)

    @property
    def is_calendar(self) -> bool:
        """Daily, weekly or monthly: windows that reset at a boundary."""
        return self.kind in ("daily", "weekly", "monthly")

    def window(self, now: float) -> Window:
        """The calendar window containing ``now`` (``total``: one endless window, id 0)."""
        if not self.is_calendar:
            return Window(0, float("-inf"), float("inf"))
        local = datetime.fromtimestamp(now, self.tz)
        if self.kind == "daily":
            wid = local.toordinal()
            start = _midnight(wid, self.tz)
            nxt = _midnight(wid + 1, self.tz)
        elif self.kind == "weekly":
            monday = local.toordinal() - local.weekday()
            start = _midnight(monday, self.tz)
            wid = (monday - 1) // 7  # ordinal 1 (0001-01-01) is a Monday
            nxt = _midnight(monday + 7, self.tz)
        else:
            start = datetime(local.year, local.month, 1, tzinfo=self.tz)
            wid = local.year * 12 + local.month - 1
            year, month = divmod(wid + 1, 12)
            nxt = datetime(year, month + 1, 1, tzinfo=self.tz)
        return Window(wid, start.timestamp(), nxt.timestamp())

    def resets_at(self, now: float) -> datetime | None:
        """When the window containing ``now`` ends (None: rolling or total)."""
        if not self.is_calendar:
            return None
        return datetime.fromtimestamp(self.window(now).end, self.tz)

    def describe(self) -> str:
        """The period as it reads in an error message: ``this month``, ``in the last 1 h``."""
        if self.kind == "rolling":
            return f"in the last {_duration(self.seconds)}"
        return {"daily": "today", "weekly": "this week", "monthly": "this month"}.get(
            self.kind, "in total"
        )

    @property
    def key(self) -> str:
        """Identifies the calendar (kind and zone) that accounts can share."""
        return f"{self.kind}@{self.tz}"


def _midnight(ordinal: int, tz: tzinfo) -> datetime:
    day = datetime.fromordinal(ordinal)
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@dataclass(frozen=True, slots=True)
class Account:
    """A validated account: limits in micro-dollars, its period and its chain."""

    name: str
    parent: str | None
    limit: int | None
    soft_limit: int | None
    period: Period
    rpm: int | None
    tpm: int | None
    chain: tuple[str, ...]  # itself, then each ancestor up to the root

    @property
    def root(self) -> str:
        """The top of the chain (the org): the Redis hash tag of every key of the chain."""
        return self.chain[-1]


class Accounts:
    """Every account by name, and the expansion of names into chains."""

    def __init__(self, accounts: Iterable[Account]) -> None:
        self.by_name: dict[str, Account] = {a.name: a for a in accounts}
        self._chains: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self.by_name)

    def __iter__(self) -> Iterator[Account]:
        return iter(self.by_name.values())

    def __getitem__(self, name: str) -> Account:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"unknown budget account {name!r}") from None

    def put(self, account: Account) -> None:
        """Add or replace one account at run time (a virtual key's, a team's budget).

        Its parent must already be here. Replacing an account with a new parent (a team
        moved to another organization) gives every account below it its new chain.
        """
        if account.parent is not None and account.parent not in self.by_name:
            raise ValueError(f"no budget account named {account.parent!r}")
        if account.name in account.chain[1:]:
            raise ValueError(f"account {account.name!r} cannot be its own ancestor")
        old = self.by_name.get(account.name)
        self.by_name[account.name] = account
        if old is not None and old.chain != account.chain:  # a new one is in no chain yet
            self._chains.clear()
            self._rechain(account)

    def remove(self, names: Iterable[str]) -> None:
        """Drop leaf accounts (transient ones: nothing may name them as its parent), and
        every cached chain through them."""
        gone = {n for n in names if self.by_name.pop(n, None) is not None}
        if gone:
            self._chains = {k: v for k, v in self._chains.items() if gone.isdisjoint(v)}

    def _rechain(self, top: Account) -> None:
        """Give every account below ``top`` the chain through ``top``'s new one."""
        below = [a for a in self.by_name.values() if a.parent == top.name]
        for child in below:
            moved = replace(child, chain=(child.name, *top.chain))
            self.by_name[child.name] = moved
            self._rechain(moved)

    def build(self, cfg: BudgetAccountConfig) -> Account:
        """An :class:`Account` for ``cfg`` under this set's existing accounts (not added).

        ValueError names what is wrong (bad name, period, time zone, amount or parent).
        """
        if not ACCOUNT_NAME.match(cfg.name):
            raise ValueError(f"budget account name {cfg.name!r}: {NAME_RULE}")
        problems = check_numbers("budget", cfg)
        if problems:
            raise ValueError("; ".join(f"{p.path}: {p.message}" for p in problems))
        period = Period.parse(cfg.period, cfg.timezone)
        chain: tuple[str, ...] = (cfg.name,)
        if cfg.parent is not None:
            chain += self[cfg.parent].chain
        if len(chain) > 8:
            raise ValueError(f"account {cfg.name!r}: a chain holds at most 8 accounts")
        return _account(cfg, period, chain)

    def chain(self, names: Sequence[str]) -> tuple[str, ...]:
        """``names`` and all their ancestors, each once, leaf first; they must share a root.

        Cached: the same chain is expanded once.
        """
        key = tuple(names)
        cached = self._chains.get(key)
        if cached is not None:
            return cached
        out: list[str] = []
        for name in key:
            for member in self[name].chain:
                if member not in out:
                    out.append(member)
        if not out:
            raise ValueError("a budget chain needs at least one account")
        roots = {self.by_name[n].root for n in out}
        if len(roots) > 1:
            raise ValueError(
                f"accounts {', '.join(out)} have different roots ({', '.join(sorted(roots))}): "
                "one reservation stays under one root account"
            )
        result = tuple(out)
        if len(self._chains) < 100_000:
            self._chains[key] = result
        return result


def load_accounts(
    raw: Sequence[BudgetAccountConfig | Mapping[str, Any]], *, source: str = "budgets"
) -> Accounts:
    """Validate raw account configs into :class:`Accounts`; ConfigError lists every problem."""
    configs = {cfg.name: cfg for cfg in check_accounts(raw, source=source)}
    accounts = []
    for name, cfg in configs.items():
        chain = [name]
        while (parent := configs[chain[-1]].parent) is not None:
            chain.append(parent)
        accounts.append(_account(cfg, Period.parse(cfg.period, cfg.timezone), tuple(chain)))
    return Accounts(accounts)


def _account(cfg: BudgetAccountConfig, period: Period, chain: tuple[str, ...]) -> Account:
    """The validated account of ``cfg`` (dollars to micro-dollars)."""
    return Account(
        name=cfg.name,
        parent=cfg.parent,
        limit=None if cfg.limit is None else usd_to_micros(cfg.limit),
        soft_limit=None if cfg.soft_limit is None else usd_to_micros(cfg.soft_limit),
        period=period,
        rpm=cfg.rpm,
        tpm=cfg.tpm,
        chain=chain,
    )
