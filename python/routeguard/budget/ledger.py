"""The budget interface every backend implements, and what flows through it.

One request's path: ``check_rate(chain, tokens)`` (RPM/TPM, raises
:class:`~routeguard.errors.RateLimited`) -> ``reserve(chain, worst_case, request_id)``
(the two in one call, ``admit``, when nothing happens between them)
holds the worst-case cost on every account of the chain at once, or raises
:class:`~routeguard.errors.BudgetExceeded` naming the account that refused -> the upstream
call -> ``settle(reservation, actual)`` charges the real cost (or ``release`` if nothing was
spent). Two requests can never both spend the last dollar: the reservation is atomic over
the chain, in-process (Rust atomics) and across instances (one Lua script).

Money is integer micro-dollars everywhere (``usd_to_micros``), so sums are exact. A hold
carries a TTL: a process that dies between reserve and settle leaves a hold that the store
reclaims once it expires, so budgets never leak. A settlement after that (a very slow
request) is still charged, as a *late* charge with no hold behind it.

Backends: :class:`~routeguard.budget.memory.MemoryBudget` (one process) and
:class:`~routeguard.budget.redis.RedisBudget` (many instances, one Redis).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from routeguard.budget.accounts import Account, Accounts
from routeguard.budget.transient import Transients
from routeguard.errors import BudgetExceeded, RateLimited

ReservationState = Literal["open", "settled", "released", "expired", "unbacked"]
DEFAULT_TTL_S = 600.0
# The largest amount one call moves (2^53 micro-dollars, ~9 billion dollars): sums stay
# exact in the Rust ledger's i64 and in Redis Lua's doubles alike.
MAX_AMOUNT = 1 << 53


@dataclass(eq=False, slots=True)
class Reservation:
    """A hold of ``amount`` micro-dollars on every account of ``chain``.

    ``state`` moves once from ``open`` to ``settled`` or ``released`` (``expired`` when the
    memory backend reclaimed it, ``unbacked`` when a fail-open Redis backend admitted the
    request without the store). ``handle`` belongs to the backend.
    """

    request_id: str
    chain: tuple[str, ...]
    amount: int
    expires_at: float
    soft_exceeded: tuple[str, ...] = ()
    state: ReservationState = "open"
    handle: object = None

    @property
    def is_open(self) -> bool:
        """Neither settled nor released yet."""
        return self.state in ("open", "expired", "unbacked")


class BudgetBackend(Protocol):
    """What the gateway needs from a budget store."""

    accounts: Accounts
    transients: Transients

    async def reserve(
        self,
        chain: Sequence[str],
        amount: int,
        request_id: str,
        ttl_s: float | None = None,
    ) -> Reservation:
        """Hold ``amount`` micro-dollars on the accounts and all their ancestors, or raise
        BudgetExceeded. Idempotent per ``request_id`` while the hold is open."""
        ...

    async def settle(self, reservation: Reservation, actual: int) -> int:
        """Charge the actual cost; returns the overage (actual above the hold, usually 0).
        ValueError if the reservation was already settled or released."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Give the hold back (nothing spent). A no-op on a closed reservation."""
        ...

    async def spent(self, account: str) -> int:
        """Committed micro-dollars of ``account`` in its current window."""
        ...

    async def reserved(self, account: str) -> int:
        """Micro-dollars held on ``account`` by requests in flight."""
        ...

    async def check_rate(self, chain: Sequence[str], tokens: int = 0, requests: int = 1) -> None:
        """Consume ``requests`` on every RPM limit and ``tokens`` on every TPM limit of the
        chain, all or none; raise RateLimited naming the account that refused."""
        ...

    async def admit(
        self,
        chain: Sequence[str],
        amount: int,
        request_id: str,
        tokens: int = 0,
        requests: int = 1,
        ttl_s: float | None = None,
    ) -> Reservation:
        """``check_rate(chain, tokens, requests)`` then ``reserve(chain, amount, ...)`` with
        their outcomes (the rate is consumed before the budget is checked), in one round trip
        where the store is remote. A request id whose hold is still open consumes nothing."""
        ...

    def upsert(self, account: Account, *, transient: bool = False) -> None:
        """Add ``account`` at run time or change its limits (its parent must exist);
        ``transient``: a leaf made on use, which the backend may drop once idle."""
        ...

    async def close(self) -> None:
        """Release connections; the backend is unusable afterwards."""
        ...


def budget_exceeded(
    account: Account, *, spent: int, reserved: int, requested: int, now: float
) -> BudgetExceeded:
    """The error for a refusal on ``account`` (its limit, period and reset time filled in)."""
    return BudgetExceeded(
        account.name,
        spent=spent,
        limit=account.limit if account.limit is not None else 0,
        reserved=reserved,
        requested=requested,
        period=account.period.describe(),
        resets_at=account.period.resets_at(now),
    )


def rate_limited(account: Account, unit: str, cost: int, retry_after: float | None) -> RateLimited:
    """The error for a refusal by ``account``'s RPM (``unit="requests"``) or TPM limit."""
    limit = account.rpm if unit == "requests" else account.tpm
    return RateLimited(
        account.name, limit=limit or 0, unit=unit, cost=cost, retry_after=retry_after
    )


def soft_exceeded(chain: Sequence[str], mask: int) -> tuple[str, ...]:
    """The accounts of ``chain`` whose bit is set in ``mask``."""
    return tuple(name for i, name in enumerate(chain) if mask >> i & 1) if mask else ()


def check_amount(amount: int, what: str = "amount") -> int:
    """Reject money that is not an int of micro-dollars in ``0..=MAX_AMOUNT``."""
    if type(amount) is not int or not 0 <= amount <= MAX_AMOUNT:  # refuses bool, floats too
        raise ValueError(
            f"{what} must be an int of micro-dollars from 0 to {MAX_AMOUNT}, got {amount!r}"
        )
    return amount
