"""The log of requests that reached the simulated upstream, for tests to assert on.

The ASGI app appends one :class:`RecordedRequest` per API call (``/health`` excluded) before
deciding anything about it, so a test can count attempts, retries and fallbacks exactly.
The log is bounded (the newest 4,096 entries; ``total`` keeps counting) so long benchmarks do
not grow memory, and guarded by a lock because tests read it from another thread than the
server's event loop.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

_RECORDED_HEADERS = frozenset(
    (
        "authorization",
        "api-key",
        "anthropic-version",
        "anthropic-beta",
        "content-type",
        "user-agent",
        "traceparent",
        "tracestate",
    )
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received: method, path, query, model, whether it streams, headers, body.

    ``query`` is the decoded query string (Gemini's ``key`` and ``alt`` travel there);
    ``headers`` holds the ``x-*`` headers plus authorization, api-key (Azure),
    anthropic-version/beta, content-type, user-agent and the trace context (traceparent,
    tracestate), names lower-case; ``body`` is the decoded JSON (None if the body was not JSON).
    """

    method: str
    path: str
    query: dict[str, str]
    model: str | None
    stream: bool
    headers: dict[str, str]
    body: Any

    # Read access by key too (``r["model"]``, ``r.get("model")``), for tests written
    # against records as plain dicts.
    def __getitem__(self, key: str) -> Any:
        """The field named ``key`` (KeyError if there is none)."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """The field named ``key``, or ``default`` if there is none."""
        return getattr(self, key) if key in self.__dataclass_fields__ else default


def recorded_headers(headers: dict[str, str]) -> dict[str, str]:
    """The subset of request headers a :class:`RecordedRequest` keeps."""
    return {k: v for k, v in headers.items() if k.startswith("x-") or k in _RECORDED_HEADERS}


class Journal:
    """A thread-safe, bounded list of :class:`RecordedRequest`."""

    __slots__ = ("_abandoned", "_entries", "_lock", "_total")

    def __init__(self, maxlen: int = 4096) -> None:
        self._entries: deque[RecordedRequest] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._total = 0
        self._abandoned = 0

    def add(self, entry: RecordedRequest) -> None:
        """Record one request."""
        with self._lock:
            self._entries.append(entry)
            self._total += 1

    def snapshot(self) -> list[RecordedRequest]:
        """The recorded requests, oldest first (a copy)."""
        with self._lock:
            return list(self._entries)

    def abandon(self) -> None:
        """Count one stream whose client went away before its end."""
        with self._lock:
            self._abandoned += 1

    @property
    def abandoned(self) -> int:
        """How many streams lost their client before the end since the last clear."""
        return self._abandoned

    @property
    def total(self) -> int:
        """How many requests were recorded since the last clear (including ones evicted)."""
        return self._total

    def clear(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self._entries.clear()
            self._total = 0
            self._abandoned = 0
