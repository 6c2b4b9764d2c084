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
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from routeguard.errors import ConfigError, ConfigProblem

MICROS_PER_USD = 1_000_000
# Account names end up inside Redis keys (`{rg:<root>}:held:<name>`): no braces (they
# would change the Cluster hash tag) and no colons (they separate key parts).
_NAME = re.compile(r"^[^\s{}:]{1,200}$")
PeriodKind = Literal["daily", "weekly", "monthly", "rolling", "total"]
ROLLING_BUCKETS = 60
_CALENDAR_KINDS: dict[str, PeriodKind] = {
    "daily": "daily",
    "weekly": "weekly",
    "monthly": "monthly",
    "total": "total",
}


def usd_to_micros(usd: float | int | str | Decimal, *, round_up: bool = False) -> int:
    """Dollars to integer micro-dollars, exactly for decimal input (``"12.40"``, ``12.4``).

    ``round_up`` rounds a fraction of a micro-dollar up (for worst-case reservations);
    otherwise half-up. A float (a computed cost) is first rounded to a thousandth of a
    micro-dollar, so float noise (``0.1 + 0.2``) never tips it to the next micro-dollar.
    """
    if type(usd) is float and math.isfinite(usd) and abs(usd) < 9e9:
        value_f = round(usd * MICROS_PER_USD, 3)
        return math.ceil(value_f) if round_up else math.floor(value_f + 0.5)
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
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {timezone!r}: use an IANA name like 'Europe/Paris' or 'UTC'"
            ) from None
        kind = _CALENDAR_KINDS.get(text)
        if kind is not None:
            return Period(kind, tz)
        if text.startswith("rolling:"):
            raw = text.removeprefix("rolling:")
            if raw.isdigit() and int(raw) > 0:
                return Period("rolling", tz, int(raw))
        raise ValueError(
            f"unknown period {text!r}: expected daily, weekly, monthly, total or "
            "rolling:<seconds> (e.g. rolling:3600)"
        )

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
        """Add or replace one account at run time (a virtual key's own budget).

        Its parent must already be here, and replacing an account must not change the
        chain of any account below it: only leaves (keys) are put at run time.
        """
        if account.parent is not None and account.parent not in self.by_name:
            raise ValueError(f"no budget account named {account.parent!r}")
        old = self.by_name.get(account.name)
        if (
            old is not None
            and old.chain != account.chain
            and any(a.parent == account.name for a in self.by_name.values())
        ):
            raise ValueError(f"account {account.name!r} has children: its parent is fixed")
        self.by_name[account.name] = account
        if old is None or old.chain != account.chain:
            self._chains.clear()

    def build(self, cfg: BudgetAccountConfig) -> Account:
        """An :class:`Account` for ``cfg`` under this set's existing accounts (not added).

        ValueError names what is wrong (bad name, period, time zone, amount or parent).
        """
        if not _NAME.match(cfg.name):
            raise ValueError(
                f"budget account name {cfg.name!r}: use 1-200 characters without spaces, "
                "braces or colons"
            )
        problems = _check_numbers("budget", cfg)
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
    built: dict[str, tuple[str, BudgetAccountConfig, Period | None]] = {}
    for path, cfg in configs:
        if not _NAME.match(cfg.name):
            rule = "use 1-200 characters without spaces, braces or colons"
            problems.append(ConfigProblem(f"{path}.name", f"{cfg.name!r}: {rule}"))
        if cfg.name in seen:
            problems.append(ConfigProblem(f"{path}.name", f"duplicate of {seen[cfg.name]}"))
        seen.setdefault(cfg.name, path)
        period: Period | None = None
        try:
            period = Period.parse(cfg.period, cfg.timezone)
        except ValueError as exc:
            where = "timezone" if "time zone" in str(exc) else "period"
            problems.append(ConfigProblem(f"{path}.{where}", str(exc)))
        problems.extend(_check_numbers(path, cfg))
        built[cfg.name] = (path, cfg, period)
    for name, (path, cfg, _) in built.items():
        if cfg.parent is not None and cfg.parent not in built:
            problems.append(ConfigProblem(f"{path}.parent", f"no account named {cfg.parent!r}"))
        elif _has_cycle(name, built):
            problems.append(ConfigProblem(f"{path}.parent", "parents form a cycle"))
    if problems:
        raise ConfigError(problems, source=source)
    accounts = []
    for name, (_, cfg, period) in built.items():
        assert period is not None  # every bad period was reported above
        chain = [name]
        while (parent := built[chain[-1]][1].parent) is not None:
            chain.append(parent)
        accounts.append(_account(cfg, period, tuple(chain)))
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


def _check_numbers(path: str, cfg: BudgetAccountConfig) -> list[ConfigProblem]:
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


def _has_cycle(name: str, built: Mapping[str, tuple[str, BudgetAccountConfig, Any]]) -> bool:
    seen = {name}
    parent = built[name][1].parent
    while parent is not None and parent in built:
        if parent in seen:
            return True
        seen.add(parent)
        parent = built[parent][1].parent
    return False
