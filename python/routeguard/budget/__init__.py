"""routeguard.budget: spend limits and rate limits, exact under concurrency.

``reserve`` a worst-case cost on an account chain before the upstream call, ``settle`` it to
the actual cost afterwards (see :mod:`routeguard.budget.ledger` for the flow). Two backends
behind one :class:`BudgetBackend` protocol: :class:`MemoryBudget` (in-process, Rust
atomics) and :class:`RedisBudget` (shared by every instance; imported lazily, so the
``redis`` client is loaded only when used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeguard.budget.accounts import (
    Account,
    Accounts,
    Period,
    load_accounts,
    micros_to_usd,
    usd_to_micros,
)
from routeguard.budget.ledger import BudgetBackend, Reservation
from routeguard.budget.memory import MemoryBudget
from routeguard.config.budgets import BudgetAccountConfig

if TYPE_CHECKING:
    from routeguard.budget.redis import RedisBudget

__all__ = [
    "Account",
    "Accounts",
    "BudgetAccountConfig",
    "BudgetBackend",
    "MemoryBudget",
    "Period",
    "RedisBudget",
    "Reservation",
    "load_accounts",
    "micros_to_usd",
    "usd_to_micros",
]


def __getattr__(name: str) -> Any:
    if name == "RedisBudget":
        from routeguard.budget.redis import RedisBudget

        return RedisBudget
    raise AttributeError(f"module 'routeguard.budget' has no attribute {name!r}")
