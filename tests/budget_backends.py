"""The budget tests' backends: ``make(accounts, **options)`` builds the backend under test
(in memory, and on a real ``redis-server`` with a key prefix of its own) on the fake clock
``clock``, so windows, TTLs and rate limits move only when a test says so. Import the
fixtures into a test module to use them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from routeguard.budget import BudgetBackend, MemoryBudget, RedisBudget

Make = Callable[..., Awaitable[BudgetBackend]]


class FakeClock:
    """Unix seconds that move only when told."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 2026-11-30 12:00 UTC."""
    return FakeClock(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Make]:
    """Build backends of the parameter's kind on ``clock``; closed after the test."""
    backends: list[BudgetBackend] = []

    async def build(accounts: Sequence[Mapping[str, Any]], **options: Any) -> BudgetBackend:
        options.setdefault("clock", clock)
        backend: BudgetBackend
        if request.param == "memory":
            backend = MemoryBudget(accounts, **options)
        else:
            url = request.getfixturevalue("redis_server")
            backend = RedisBudget(accounts, url, prefix=f"t{uuid.uuid4().hex[:12]}", **options)
        backends.append(backend)
        return backend

    yield build
    for backend in backends:
        await backend.close()
