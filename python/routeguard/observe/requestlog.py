"""The request log: one JSON line per request the proxy served (or refused), in the wrapped
format ``routeguard analyze`` and ``simulate`` read (:mod:`routeguard.analyze.logs`), so a
day of traffic is analysed with no conversion.

Lines are built, encoded and written by one writer thread from a bounded queue, never on
the event loop (which only queues the finished request's trace); the thread wakes once per
batch and lets lines gather for ``linger`` seconds first. A full queue drops the line and
counts it (``dropped``) rather than stall requests. Files
rotate by size: ``PATH`` is renamed ``PATH.1`` (and so on up to ``backups``) when the next
batch would take it past ``max_bytes``. Several processes (``serve --workers N``) may share
one ``PATH``: each batch of whole lines is one ``O_APPEND`` write, and rotation happens
under a lock file (``PATH.lock``), each writer reopening ``PATH`` when another rotated it.
Message content is logged only with ``log_content=True``, and then with secrets scrubbed;
keys are never logged, only key ids.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from routeguard import scrub
from routeguard.errors import RouteguardError
from routeguard.handoff import PAUSE_EVERY, Handoff, drain, pause

log = logging.getLogger("routeguard.observe")

_enc = msgspec.json.Encoder()


class RequestLog:
    """A size-rotated JSON-lines file written by a background thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        log_content: bool = False,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        queue_size: int = 10_000,
        linger: float = 0.05,
    ) -> None:
        if max_bytes <= 0 or backups < 0 or queue_size <= 0 or linger < 0:
            raise ValueError("max_bytes and queue_size must be positive, backups, linger >= 0")
        self.path = Path(path)
        self.log_content = log_content
        self.max_bytes = max_bytes
        self.backups = backups
        self.written = 0
        self._unwritten = 0
        # Entries, or (trace, endpoint, when it ended) whose lines the writer builds; lines
        # gather for `linger` seconds: one wake-up, one lock and one write per batch
        # instead of per line, which keeps the thread off the GIL while requests run.
        self._handoff: Handoff[Any] = Handoff(
            "request log", linger=linger, cap=queue_size, logger=log
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        lock = self.path.with_name(self.path.name + ".lock")
        self._lock = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        self._thread = threading.Thread(target=self._run, name="routeguard-request-log")
        self._thread.daemon = True
        self._thread.start()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, entry: Mapping[str, Any]) -> None:
        """Queue one entry (never blocks; a full queue drops it and counts the drop)."""
        self._put(entry)

    def record_trace(self, trace: Trace, endpoint: str, now: float | None = None) -> None:
        """Queue the line of a finished request, to be built by the writer thread (the
        trace must not change after this); ``now``: when it ended (default: now)."""
        self._put((trace, endpoint, time.perf_counter() if now is None else now))

    @property
    def dropped(self) -> int:
        """Lines lost: dropped because the writer's queue was full, or not writable."""
        return self._handoff.dropped + self._unwritten

    def _put(self, item: Any) -> None:
        self._handoff.put(item)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued entry is on disk (for tests and shutdown)."""
        self._handoff.flush(self._thread, timeout)

    def close(self) -> None:
        """Write what is queued, stop the thread and close the file."""
        self._handoff.stop(self._thread)
        os.close(self._fd)
        os.close(self._lock)

    def _run(self) -> None:
        while True:
            self._handoff.wait(1.0)
            if self._drain():
                return

    def _drain(self) -> bool:
        """Build, encode and write every queued line; True once a stop was taken."""
        built = 0
        for batch in drain(self._handoff, 4096):
            lines: list[bytes] = []
            for item in batch.items:
                try:
                    if isinstance(item, tuple):
                        trace, endpoint, now = item
                        item = trace.entry(endpoint, self.log_content, now)
                        built += 1
                        if built % PAUSE_EVERY == 0:
                            pause()
                    lines.append(_enc.encode(item) + b"\n")
                except (TypeError, ValueError, OverflowError) as exc:
                    log.warning("request log: entry not encodable (%s); skipped", exc)
                except Exception:  # a line must never kill the writer
                    log.exception("request log: entry could not be built; skipped")
            self._write(lines)
            batch.done()
            if batch.stop:
                return True
        return False

    def _write(self, batch: list[bytes]) -> None:
        """Append ``batch`` in one write, rotating first if it would pass ``max_bytes``."""
        if not batch:
            return
        data = b"".join(batch)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            try:
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                mine = os.fstat(self._fd)
                if current is None or current.st_ino != mine.st_ino:  # rotated by another
                    os.close(self._fd)
                    self._fd = self._open()
                size = os.fstat(self._fd).st_size
                if size and size + len(data) > self.max_bytes:
                    self._rotate()
                    size = 0
                view = memoryview(data)
                try:
                    while view:
                        view = view[os.write(self._fd, view) :]
                except OSError:
                    # A full disk mid-batch: cut the half-written lines off again (no other
                    # writer appends while the lock is held), so no line is ever torn.
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, size)
                    raise
                self.written += len(batch)
            finally:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
        except OSError as exc:
            self._unwritten += len(batch)
            log.warning("request log %s: cannot write (%s)", self.path, exc.strerror)

    def _rotate(self) -> None:
        """PATH -> PATH.1 -> ... -> PATH.<backups> (the oldest is removed); under the lock."""
        os.close(self._fd)
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()


# The request parameters a log line keeps: settings, never text (prompts, stop strings,
# schemas and unknown fields stay out; messages only with log_content, scrubbed).
LOGGED_PARAMS = frozenset(
    {
        "model", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
        "presence_penalty", "frequency_penalty", "seed", "reasoning_effort", "logprobs",
        "top_logprobs", "parallel_tool_calls", "service_tier", "store", "dimensions",
        "encoding_format",
    }
)  # fmt: skip


def request_summary(request: Mapping[str, Any], log_content: bool) -> dict[str, Any]:
    """The logged form of a chat request: its settings (numbers, flags, the model), the
    kinds of its tool choice and response format, tool names, and its messages (secrets
    scrubbed) only when content is logged."""
    out: dict[str, Any] = {}
    for k, v in request.items():  # the keys kept are ours (LOGGED_PARAMS): only values scrubbed
        if k not in LOGGED_PARAMS:
            continue
        if isinstance(v, str):
            out[k] = scrub.scrub_name(v)
        elif v is None or isinstance(v, bool | int | float):
            out[k] = v
    choice = request.get("tool_choice")
    if isinstance(choice, str):
        out["tool_choice"] = choice if choice in ("auto", "none", "required") else "other"
    elif isinstance(choice, dict):
        out["tool_choice"] = "function"
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and isinstance(fmt.get("type"), str):
        out["response_format"] = scrub.scrub_name(fmt["type"])
    if isinstance(request.get("tools"), list):
        names = (_tool_name(t) for t in request["tools"])
        out["tools"] = [scrub.scrub_name(n) if isinstance(n, str) else n for n in names]
    if log_content:
        if "messages" in request or "input" not in request:
            out["messages"] = scrub.scrub_json(request.get("messages"))
        else:  # an embeddings request: its input (texts or token ids)
            out["input"] = scrub.scrub_json(request.get("input"))
    return out


def response_summary(response: Mapping[str, Any] | None, log_content: bool) -> dict[str, Any]:
    """The logged form of a chat response: id, finish reasons, tool calls made, and the
    text (scrubbed) only when content is logged."""
    if response is None:
        return {}
    data = response.get("data")
    if response.get("object") == "list" and isinstance(data, list):  # embeddings
        return {"embeddings": len(data)}
    out: dict[str, Any] = {"id": response.get("id")}
    if response.get("object") == "response":  # a passed-through Responses answer
        return _responses_summary(response, out, log_content)
    choices = response.get("choices")
    if isinstance(choices, list):
        out["finish_reasons"] = [c.get("finish_reason") for c in choices if isinstance(c, dict)]
        calls = [
            tc.get("function", {}).get("name")
            for c in choices
            if isinstance(c, dict) and isinstance(c.get("message"), dict)
            for tc in c["message"].get("tool_calls") or []
            if isinstance(tc, dict)
        ]
        if calls:
            out["tool_calls"] = calls
        if log_content:
            out["choices"] = scrub.scrub_json(
                [{"message": c.get("message")} for c in choices if isinstance(c, dict)]
            )
    return out


def _responses_summary(
    response: Mapping[str, Any], out: dict[str, Any], log_content: bool
) -> dict[str, Any]:
    """:func:`response_summary` of a Responses ``response``: its status as the finish
    reason, the functions it called, and its output items only when content is logged."""
    out["finish_reasons"] = [response.get("status")]
    raw = response.get("output")
    items: list[Any] = raw if isinstance(raw, list) else []
    calls = [
        i.get("name") for i in items if isinstance(i, dict) and i.get("type") == "function_call"
    ]
    if calls:
        out["tool_calls"] = calls
    if log_content:
        out["output"] = scrub.scrub_json(items)
    return out


def _tool_name(tool: Any) -> Any:
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        return tool["function"].get("name")
    return None


@dataclass(slots=True)
class Trace:
    """What the proxy learns about one request as it is served, turned into a log line."""

    request_id: str
    ts: float  # wall-clock start (unix seconds)
    started: float  # perf_counter at start
    first_byte: float | None = None  # perf_counter when the first body byte left
    request: dict[str, Any] | None = None  # the OpenAI-shaped chat request
    principal: Any = None  # routeguard.server.auth.Principal
    result: Any = None  # routeguard.result.ChatResult
    error: RouteguardError | None = None
    operation: str = "chat"  # gen_ai.operation.name: "chat" or "embeddings"

    def entry(self, endpoint: str, log_content: bool, now: float | None = None) -> dict[str, Any]:
        """The log line: the wrapped format of :mod:`routeguard.analyze.logs` (``now``: when
        the request ended; default now)."""
        now = time.perf_counter() if now is None else now
        request = self.request or {}
        alias = request.get("model")
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "endpoint": endpoint,
            "operation": self.operation,
            "route": alias,
            "request": request_summary(request, log_content),
            "latency_ms": round((now - self.started) * 1000, 3),
            "stream": bool(request.get("stream")),
            "status": 200 if self.error is None else self.error.status_code,
        }
        r = self.result
        if r is not None:
            out.update(
                model=r.alias,
                deployment=r.deployment.id,
                provider=r.deployment.provider,
                route_reason=r.route,
                cache={
                    "result": r.cache,
                    "score": r.cache_score,
                    "tier": r.cache_tier,
                    "verifier_refused": r.cache_refused,
                },
                attempts=r.attempts,
                usage=dict(r.usage),
                cost_usd=r.cost,
                upstream_ms=round(r.upstream_s * 1000, 3),
                overhead_ms=round(r.overhead_ms(now), 3),
                response=response_summary(r.response, log_content),
            )
            if out["stream"] and self.first_byte is not None:
                out["ttft_ms"] = round((self.first_byte - self.started) * 1000, 3)
        if self.error is not None:
            err = self.error
            out["error"] = {
                "type": err.error_type,
                "code": err.code,
                "message": scrub.for_caller(err.message),
            }
        meta: dict[str, Any] = {"route": alias}
        key = getattr(self.principal, "key", None)
        if key is not None:
            spec = key.spec
            meta.update(key_id=key.key_id, user=spec.user, team=spec.team, org=spec.org)
            meta["tenant"] = self.principal.tenant
            out["accounts"] = [a for a in self.principal.accounts if a is not None]
        user = request.get("user")
        if isinstance(user, str):
            meta["end_user"] = user
        out["metadata"] = meta
        return out

    def spend_row(self, now: float | None = None) -> dict[str, Any]:
        """This request's row for :class:`routeguard.observe.spend.SpendRecords` (``now``:
        when it ended, a ``perf_counter`` reading; default now)."""
        request = self.request or {}
        now = time.perf_counter() if now is None else now
        row: dict[str, Any] = {
            "ts": self.ts,
            "request_id": self.request_id,
            "route": request.get("model"),
            "status": 200 if self.error is None else self.error.status_code,
            "latency_ms": round((now - self.started) * 1000, 3),
        }
        key = getattr(self.principal, "key", None)
        if key is not None:
            spec = key.spec
            row.update(key_id=key.key_id, user=spec.user, team=spec.team, org=spec.org)
        r = self.result
        if r is not None:
            row.update(
                model=r.alias,
                deployment=r.deployment.id,
                provider=r.deployment.provider,
                prompt_tokens=r.usage.get("prompt_tokens", 0),
                completion_tokens=r.usage.get("completion_tokens", 0),
                cost_usd=r.cost,
                cache=r.cache,
            )
        return row
