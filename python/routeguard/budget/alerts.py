"""Budget alerts: a log line and a webhook POST when an account's spend crosses its soft
limit or a configured share of its limit, once per account, level and period.

Flow: ``BudgetLayer.settle`` -> :meth:`BudgetAlerter.notice` (no I/O: the chain's names join
a bounded pending set) -> the checker task reads each pending account's spend, finds the
levels crossed in the current period and claims each one (Redis ``SET NX`` on a key naming
account, period and level when the budget store is Redis, so one instance of many sends it;
a map in memory otherwise) -> a log line and the sender's bounded queue -> the sender task
POSTs JSON with retries (:func:`routeguard.backoff.backoff_delay`). Only :meth:`notice` runs
on a request's path; a failure is logged (never with the URL or header values: a Slack
webhook's path is its credential) and never reaches a request.

A period is the account's calendar window (daily, weekly, monthly: it ends at the reset
time), the whole life of a ``total`` account, or for a ``rolling:<s>`` account each
consecutive span of ``s`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import msgspec

from routeguard.backoff import backoff_delay
from routeguard.budget.accounts import Account, Accounts, micros_to_usd
from routeguard.config.settings import BudgetAlerts

log = logging.getLogger("routeguard.budget.alerts")

_SENT_MAX = 10_000  # alerts remembered as sent before those of ended periods are forgotten
_PENDING_MAX = 100_000  # accounts awaiting a check; past it notices are dropped (and counted)
_RETRY_BASE_S = 0.5
_RETRY_CAP_S = 30.0
_CLOSE_WAIT_S = 5.0  # at shutdown: how long queued alerts may still take to send
_enc = msgspec.json.Encoder()


class _Spend(Protocol):
    """What the alerter reads from a budget backend."""

    accounts: Accounts

    async def spent(self, account: str) -> int:
        """Committed micro-dollars of ``account`` in its current window."""
        ...


@dataclass(frozen=True, slots=True)
class Alert:
    """One crossed level of one account in one period: what is logged and POSTed."""

    account: str
    level: str  # "soft_limit", or the share of the limit ("0.8")
    threshold: float | None  # the share of the limit; None for the soft limit
    spend: int  # micro-dollars
    limit: int | None
    soft_limit: int | None
    period: str  # "monthly", "rolling:3600", ...
    period_id: str
    resets_at: datetime | None
    period_text: str = "in this period"  # "today", "this month", "in the last 1 h"

    def text(self) -> str:
        """The alert as one human line (Slack shows it; the log line is this)."""
        spent = f"${micros_to_usd(self.spend):.2f}"
        if self.threshold is None:
            assert self.soft_limit is not None
            what = f"passed its soft limit of ${micros_to_usd(self.soft_limit):.2f}"
        else:
            what = f"reached {self.threshold * 100:g}% of its limit"
        of = "" if self.limit is None else f" of ${micros_to_usd(self.limit):.2f}"
        resets = f" (resets {self.resets_at.isoformat()})" if self.resets_at else ""
        return f"budget '{self.account}' {what}: spent {spent}{of} {self.period_text}{resets}"

    def body(self) -> dict[str, Any]:
        """The webhook's JSON body (with Slack's ``text``, so a Slack webhook takes it)."""
        return {
            "type": "budget_alert",
            "text": self.text(),
            "account": self.account,
            "level": self.level,
            "threshold": self.threshold,
            "spend": float(micros_to_usd(self.spend)),
            "limit": _usd(self.limit),
            "soft_limit": _usd(self.soft_limit),
            "period": self.period,
            "period_id": self.period_id,
            "resets_at": None if self.resets_at is None else self.resets_at.isoformat(),
            "time": datetime.now(UTC).isoformat(),
        }


def period_of(account: Account, now: float) -> tuple[str, datetime | None, float | None]:
    """The id of the account's alert period containing ``now``, when it resets, and how
    long (seconds) a claim on it must live (None: for ever)."""
    period = account.period
    if period.is_calendar:
        window = period.window(now)
        return f"{period.kind}:{window.id}", period.resets_at(now), window.end - now + 86_400
    if period.kind == "rolling":
        span = period.seconds
        n = int(now // span)
        return f"rolling:{span}:{n}", datetime.fromtimestamp((n + 1) * span, UTC), 2.0 * span
    return "total", None, None


def _period_name(account: Account) -> str:
    p = account.period
    return f"rolling:{p.seconds}" if p.kind == "rolling" else p.kind


class BudgetAlerter:
    """Watches settled spend and sends budget alerts off the request path (see the module
    docstring). ``configure`` swaps the settings in place (a reload) and keeps what was sent."""

    def __init__(self, settings: BudgetAlerts, backend: _Spend, *, clock: Any = time.time) -> None:
        self.settings = settings
        self.backend = backend
        self._clock = clock
        # Accounts awaiting a check, in order, with the account as noticed (a transient one
        # may be dropped before its check).
        self._pending: dict[str, Account | None] = {}
        # (account, level) -> the period id it was sent in, and when that period ends.
        self._sent: dict[tuple[str, str], tuple[str, float]] = {}
        self._sent_cap = _SENT_MAX
        self._wake = asyncio.Event()
        self._checking = False
        self._checked = asyncio.Event()  # set each time the checker has emptied _pending
        self._queue: asyncio.Queue[Alert] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()
        self.dropped = 0
        """Notices or alerts dropped because a bounded queue was full (each logged)."""
        self.delivered = 0
        """Webhook POSTs answered with a 2xx."""
        self.failed = 0
        """Alerts given up after ``max_attempts`` POSTs (each logged)."""

    def configure(self, settings: BudgetAlerts, backend: _Spend) -> None:
        """New settings and backend (a config reload); alerts already sent stay sent."""
        self.settings = settings
        self.backend = backend

    # ------------------------------------------------------------------ request path

    def notice(self, chain: tuple[str, ...]) -> None:
        """Spend on ``chain`` changed: check its accounts soon (never waits, never raises)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # settled from a thread without a loop: the next settle on a loop checks
        if self._loop is not loop or not self._tasks:
            self._start(loop)
        known = self.backend.accounts.by_name
        for name in chain:
            if name not in self._pending:
                if len(self._pending) >= _PENDING_MAX:
                    self.dropped += 1
                    continue
                self._pending[name] = known.get(name)
        self._wake.set()

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wake = asyncio.Event()
        self._checked = asyncio.Event()
        self._queue = asyncio.Queue(self.settings.queue_size)
        self._session = None
        self._tasks = [
            loop.create_task(self._check_loop(), name="budget-alert-check"),
            loop.create_task(self._send_loop(self._queue), name="budget-alert-send"),
        ]

    # ------------------------------------------------------------------ checking

    async def _check_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._checking = True
            while self._pending:
                name, account = next(iter(self._pending.items()))
                del self._pending[name]
                try:
                    await self.check(name, account)
                except Exception as exc:  # a store error must not stop the checker
                    log.warning("budget alert check of '%s' failed: %s", name, type(exc).__name__)
            self._checking = False
            self._checked.set()

    async def check(self, name: str, noticed: Account | None = None) -> list[Alert]:
        """Check one account now: the alerts it raised (logged and queued for the webhook).
        ``noticed``: the account as it was at its settlement, for one dropped since (an
        idle end user's, whose spend the in-process backend still reads)."""
        account = self.backend.accounts.by_name.get(name) or noticed
        if account is None:
            return []
        levels = self._levels(account)
        if not levels:
            return []
        now = self._clock()
        period_id, resets_at, ttl = period_of(account, now)
        due = [lv for lv in levels if self._sent.get((name, lv[0]), ("",))[0] != period_id]
        if not due:
            return []
        try:
            spend = await self.backend.spent(name)  # in process, a dropped one's dormant spend
        except KeyError:
            if name in self.backend.accounts.by_name:
                raise
            log.info(
                "budget alert check of '%s' skipped: dropped meanwhile (its spend is in the "
                "shared store; checked again at its next settlement)",
                name,
            )
            return []
        raised = []
        for level, threshold, amount in due:
            if spend < amount:
                continue
            if len(self._sent) >= self._sent_cap:  # forget what belongs to periods that ended
                self._sent = {k: v for k, v in self._sent.items() if v[1] > now}
                self._sent_cap = max(_SENT_MAX, 2 * len(self._sent))  # amortised
            self._sent[(name, level)] = (
                period_id,
                math.inf if resets_at is None else resets_at.timestamp(),
            )
            if not await self._claim(f"{name}:{period_id}:{level}", ttl):
                continue  # another instance sent it
            alert = Alert(
                account=name, level=level, threshold=threshold, spend=spend,
                limit=account.limit, soft_limit=account.soft_limit,
                period=_period_name(account), period_id=period_id, resets_at=resets_at,
                period_text=account.period.describe(),
            )  # fmt: skip
            raised.append(alert)
            log.warning("budget alert: %s", alert.text())
            self._enqueue(alert)
        return raised

    def _levels(self, account: Account) -> list[tuple[str, float | None, int]]:
        """(level name, share or None, micro-dollars) of every level ``account`` alerts at."""
        out: list[tuple[str, float | None, int]] = []
        if self.settings.soft_limit and account.soft_limit is not None:
            out.append(("soft_limit", None, account.soft_limit))
        if account.limit is not None:
            for t in self.settings.thresholds:
                out.append((f"{t:g}", t, max(1, round(account.limit * t))))
        return out

    async def _claim(self, name: str, ttl_s: float | None) -> bool:
        """Whether this instance is the one to send alert ``name`` (always, without Redis)."""
        claim = getattr(self.backend, "claim_once", None)
        if claim is None:
            return True
        try:
            return bool(await claim(f"alert:{name}", ttl_s))
        except Exception as exc:  # store down: better twice than never
            log.warning(
                "budget alert: the shared store did not answer (%s); sending without "
                "deduplication across instances",
                type(exc).__name__,
            )
            return True

    def _enqueue(self, alert: Alert) -> None:
        if self.settings.webhook is None or self._queue is None:
            return
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error(
                "budget alert for '%s' (%s) dropped: %d alerts are waiting to be sent",
                alert.account,
                alert.level,
                self._queue.qsize(),
            )

    # ------------------------------------------------------------------ sending

    async def _send_loop(self, queue: asyncio.Queue[Alert]) -> None:
        while True:
            alert = await queue.get()
            try:
                await self._deliver(alert)
            finally:
                queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        """POST ``alert`` until a 2xx, a 4xx other than 408/429, or ``max_attempts``."""
        s = self.settings
        if s.webhook is None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"content-type": "application/json"}
        headers.update({k: v.get() for k, v in s.headers.items()})
        body = _enc.encode(alert.body())
        why = ""
        for attempt in range(1, s.max_attempts + 1):
            retry_after = None
            try:
                async with self._session.post(
                    s.webhook.get(),
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=s.timeout),
                    allow_redirects=False,
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        return
                    why = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break  # the receiver refuses it: retrying would not change that
                    retry_after = _retry_after(resp.headers.get("retry-after"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = type(exc).__name__  # never str(exc): it may quote the URL
            if attempt < s.max_attempts:
                await asyncio.sleep(
                    backoff_delay(attempt, _RETRY_BASE_S, _RETRY_CAP_S, retry_after, self._rng)
                )
        self.failed += 1
        log.error(
            "budget alert for '%s' (%s) not delivered to the webhook: %s",
            alert.account,
            alert.level,
            why,
        )

    async def idle(self) -> None:
        """Wait until every pending check has run and every queued alert was sent."""
        while self._pending or self._checking:
            self._checked.clear()
            await self._checked.wait()
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        """Give queued alerts a few seconds to go out, then stop the tasks."""
        if self._loop is not asyncio.get_running_loop():  # started on a loop now gone
            self._tasks, self._session = [], None
            return
        if self._tasks:
            try:
                async with asyncio.timeout(_CLOSE_WAIT_S):
                    await self.idle()
            except TimeoutError:
                log.warning("budget alerts still queued at shutdown were not sent")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None


def _usd(micros: int | None) -> float | None:
    return None if micros is None else float(micros_to_usd(micros))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (dates are ignored)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
