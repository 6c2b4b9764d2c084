"""Exponential backoff with full jitter: the one delay rule for request retries
(:mod:`routeguard.fallback`, the only place requests are retried) and for reconnect loops
of shared stores (the Redis cache; a reconnect is not a request retry, so it lives there)."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int, base: float, cap: float, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): full jitter, Retry-After wins."""
    delay = rng.uniform(0, min(cap, base * (2 ** (attempt - 1))))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
