"""Feedback on served requests: what a client (or a shadow judge) says about an answer.

Data flow: ``POST /v1/feedback`` or ``Gateway.feedback`` -> :func:`parse_feedback` (exactly one
of ``rating`` up/down, ``score`` in [0, 1], ``strong_needed``; an optional bounded ``comment``)
-> the request it is about, looked up in :class:`RecentRequests` (a bounded index of the last
served requests: who asked, which route, which model served it, why) -> one entry in a
:class:`FeedbackStore`:

- next to the request log, ``<request_log>.feedback.jsonl``, one JSON line per entry, written
  by the request log's own writer class (a thread, a bounded queue, size rotation);
- without a request log, a ``feedback`` table in the server's SQLite database
  (``server.database``);
- with neither, in memory (bounded; for tests and library use).

``routeguard router train --from-log`` joins these entries with the logged requests
(:mod:`routeguard.routing.fromlog`); :func:`read_feedback` reads either file kind back.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from routeguard import scrub
from routeguard.errors import InvalidRequest, RouteguardError
from routeguard.observe.requestlog import RequestLog

MAX_COMMENT = 2000  # characters of a feedback comment kept; longer is refused
MAX_REQUEST_ID = 128
RECENT_REQUESTS = 50_000  # served requests the index remembers (~16 MB; oldest forgotten first)
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True, slots=True)
class Served:
    """What the index remembers of one served request."""

    key_id: str | None  # the virtual key that asked (None: master key, anonymous, library)
    route: str  # the alias asked for
    model: str  # the alias that served it
    route_reason: str | None  # why a routed route chose it
    cache: str  # "hit", "miss", "shadow" or "off"
    cache_key: str | None = None  # the entry a hit was served from


_ServedFields = tuple[str | None, str, str, str | None, str, str | None]


class RecentRequests:
    """A bounded, thread-safe index request id -> :class:`Served` (oldest evicted first).

    Each entry is kept as a plain tuple of strings, which the garbage collector stops
    tracking at its first collection: tens of thousands of dataclass instances would sit
    in the oldest generation, and a busy proxy's full collections would walk them all
    (docs/performance.md).
    """

    def __init__(self, size: int = RECENT_REQUESTS) -> None:
        if size <= 0:
            raise ValueError("the recent-requests index needs a positive size")
        self.size = size
        self._items: OrderedDict[str, _ServedFields] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, request_id: str, served: Served) -> None:
        """Remember ``request_id`` (forgetting the oldest past the bound)."""
        fields = (served.key_id, served.route, served.model, served.route_reason,
                  served.cache, served.cache_key)  # fmt: skip
        with self._lock:
            self._items[request_id] = fields
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> Served | None:
        """What served ``request_id``, None when unknown or forgotten."""
        fields = self._items.get(request_id)
        return None if fields is None else Served(*fields)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One validated piece of feedback (exactly one of the three outcome fields is set)."""

    request_id: str
    rating: str | None = None  # "up" or "down"
    score: float | None = None  # in [0, 1]
    strong_needed: bool | None = None
    comment: str | None = None

    @property
    def wrong(self) -> bool | None:
        """Whether the verdict calls the answer wrong (rating down, score below 0.5); None
        when it says nothing about that (``strong_needed``)."""
        if self.rating is not None:
            return self.rating == "down"
        if self.score is not None:
            return self.score < 0.5
        return None


def parse_feedback(body: Mapping[str, Any]) -> Verdict:
    """A feedback body checked: InvalidRequest (400) names the field that is wrong."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("expected a JSON object")
    known = {"request_id", "rating", "score", "strong_needed", "comment"}
    extra = sorted(k for k in body if k not in known)
    if extra:
        raise InvalidRequest(
            f"unknown field '{extra[0]}': feedback takes request_id, one of rating / score / "
            "strong_needed, and an optional comment",
            param=extra[0],
        )
    rid = body.get("request_id")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_REQUEST_ID:
        raise InvalidRequest(
            "'request_id' must be the x-routeguard-request-id of a served request",
            param="request_id",
        )
    given = [k for k in ("rating", "score", "strong_needed") if body.get(k) is not None]
    if len(given) != 1:
        raise InvalidRequest(
            'give exactly one of "rating" ("up"/"down"), "score" (0..1) and "strong_needed" '
            f"(true/false); got {', '.join(given) or 'none'}",
            param=given[1] if len(given) > 1 else "rating",
        )
    rating = body.get("rating")
    if rating is not None and rating not in ("up", "down"):
        raise InvalidRequest(f'\'rating\' must be "up" or "down", got {rating!r}', param="rating")
    score = body.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise InvalidRequest(
                f"'score' must be a number in [0, 1], got {score!r}", param="score"
            )
        score = float(score)
    strong = body.get("strong_needed")
    if strong is not None and not isinstance(strong, bool):
        raise InvalidRequest(
            f"'strong_needed' must be true or false, got {strong!r}", param="strong_needed"
        )
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise InvalidRequest(
            f"'comment' must be a string of at most {MAX_COMMENT} characters", param="comment"
        )
    return Verdict(rid, rating, score, strong, comment)


def entry_for(verdict: Verdict, served: Served, source: str) -> dict[str, Any]:
    """The stored form of ``verdict`` about ``served`` (``source``: "client" or "shadow")."""
    out: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": verdict.request_id,
        "source": source,
    }
    for k in ("rating", "score", "strong_needed"):
        v = getattr(verdict, k)
        if v is not None:
            out[k] = v
    if verdict.comment:
        out["comment"] = scrub.scrub(verdict.comment)
    out.update(
        route=served.route,
        model=served.model,
        route_reason=served.route_reason,
        cache=served.cache,
        key_id=served.key_id,
    )
    return out


class FeedbackStore(Protocol):
    """Where feedback entries go."""

    where: str  # a description for logs and docs ("memory", a path)

    def record(self, entry: Mapping[str, Any]) -> None:
        """Store one entry (never blocks on a slow disk for long)."""

    def close(self) -> None:
        """Write what is pending and release the store."""


class MemoryFeedback:
    """Entries kept in memory, the newest ``size`` (tests, library use without a log)."""

    where = "memory"

    def __init__(self, size: int = RECENT_REQUESTS) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)

    def record(self, entry: Mapping[str, Any]) -> None:
        """Keep the entry."""
        self.entries.append(dict(entry))

    def close(self) -> None:
        """Nothing to release."""


class JsonlFeedback:
    """``<request_log>.feedback.jsonl``, written like the request log (writer thread, rotation)."""

    def __init__(self, path: str | Path, *, max_bytes: int, backups: int) -> None:
        self.where = str(path)
        self.log = RequestLog(path, max_bytes=max_bytes, backups=backups)

    def record(self, entry: Mapping[str, Any]) -> None:
        """Queue the entry for the writer thread."""
        self.log.record(entry)

    def flush(self) -> None:
        """Wait until queued entries are on disk."""
        self.log.flush()

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        self.log.close()


class SqliteFeedback:
    """A ``feedback`` table (timestamp, request id, JSON entry) in the server's database."""

    def __init__(self, path: str | Path) -> None:
        self.where = f"{path} (table feedback)"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS feedback (ts REAL NOT NULL, request_id TEXT NOT "
                "NULL, entry TEXT NOT NULL)"
            )

    def record(self, entry: Mapping[str, Any]) -> None:
        """Insert the entry (one small autocommitted row; feedback is rare next to requests)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO feedback VALUES (?, ?, ?)",
                (time.time(), entry["request_id"], json.dumps(entry)),
            )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def feedback_path(request_log: str | Path) -> Path:
    """Where feedback goes when the request log is at ``request_log``."""
    p = Path(request_log)
    return p.with_name(p.name + ".feedback.jsonl")


def read_feedback(path: str | Path) -> list[dict[str, Any]]:
    """Entries from a ``.feedback.jsonl`` file (its rotated ``.1``.. files first, oldest
    first) or from the ``feedback`` table of a SQLite database, in the order written."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise RouteguardError(f"cannot read feedback {p}: {exc.strerror or exc}") from None
    if head == _SQLITE_MAGIC:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT entry FROM feedback ORDER BY rowid").fetchall()
        except sqlite3.OperationalError as exc:
            raise RouteguardError(f"{p}: no feedback table ({exc})") from None
        finally:
            db.close()
        return [json.loads(r[0]) for r in rows]
    files = sorted(
        (f for f in p.parent.glob(p.name + ".*") if f.suffix[1:].isdigit()),
        key=lambda f: -int(f.suffix[1:]),
    )
    out: list[dict[str, Any]] = []
    for f in [*files, p]:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RouteguardError(f"{f}:{n}: not valid JSON ({exc.msg})") from None
            if isinstance(obj, dict) and isinstance(obj.get("request_id"), str):
                out.append(obj)
    return out
