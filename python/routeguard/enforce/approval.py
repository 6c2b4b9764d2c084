"""Human approval for ``require_approval`` decisions.

When the policy answers ``require_approval``, the guard builds an :class:`ApprovalRequest`
(who, which tool, the arguments with redactions and secrets masked, the rule and its reason)
and suspends the call until an :data:`ApprovalHandler` decides:

- a callback ``request -> bool`` (sync), or ``request -> Awaitable[bool]`` (async; only
  ``Guard.acheck`` can wait for it, ``Guard.check`` denies);
- an :class:`ApprovalQueue`: the request waits in a pending list that an operator (an admin
  API, a CLI, a chat bot) reads with :meth:`ApprovalQueue.list` and resolves with
  :meth:`ApprovalQueue.approve` / :meth:`ApprovalQueue.deny`, from any thread. A request not
  resolved within the queue's timeout is denied (fail closed).

:func:`resolve` and :func:`aresolve` turn any handler into an :class:`ApprovalOutcome`; a
handler that raises counts as a denial (its error is in the outcome's reason).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from routeguard.errors import EnforcementError

__all__ = [
    "ApprovalHandler",
    "ApprovalOutcome",
    "ApprovalQueue",
    "ApprovalRequest",
    "aresolve",
    "resolve",
]


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A call waiting for a human: ``args`` are already masked (safe to show)."""

    id: str
    agent: str
    role: str
    tool: str
    args: Mapping[str, Any]
    rule_id: str
    reason: str = ""
    created_at: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        """A JSON-ready view (for an admin API)."""
        return {
            "id": self.id, "agent": self.agent, "role": self.role, "tool": self.tool,
            "args": dict(self.args), "rule_id": self.rule_id, "reason": self.reason,
            "created_at": self.created_at,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class ApprovalOutcome:
    """The handler's answer: approved or not, by whom, and why."""

    approved: bool
    reason: str = ""
    by: str | None = None


class _Pending:
    __slots__ = ("event", "outcome", "request", "waiters")

    def __init__(self, request: ApprovalRequest) -> None:
        self.request = request
        self.event = threading.Event()
        self.outcome: ApprovalOutcome | None = None
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


class ApprovalQueue:
    """Pending approvals an operator resolves; unresolved ones are denied after ``timeout``.

    ``on_submit`` is called (in the submitting thread) with each new request: notify a human.
    """

    def __init__(
        self,
        *,
        timeout: float = 300.0,
        on_submit: Callable[[ApprovalRequest], None] | None = None,
    ) -> None:
        if not timeout > 0:
            raise EnforcementError(f"approval timeout must be positive seconds, got {timeout}")
        self.timeout = float(timeout)
        self.on_submit = on_submit
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}

    def submit(self, request: ApprovalRequest) -> None:
        """Queue ``request`` (ids are unique per queue)."""
        self._submit(request)

    def _submit(self, request: ApprovalRequest) -> _Pending:
        with self._lock:
            if request.id in self._pending:
                raise EnforcementError(f"approval request '{request.id}' is already pending")
            p = self._pending[request.id] = _Pending(request)
        if self.on_submit is not None:
            self.on_submit(request)
        return p

    def list(self) -> list[ApprovalRequest]:
        """The requests waiting for a decision, oldest first."""
        with self._lock:
            return [p.request for p in self._pending.values()]

    def get(self, request_id: str) -> ApprovalRequest:
        """The pending request with this id (``EnforcementError`` if there is none)."""
        with self._lock:
            p = self._pending.get(request_id)
        if p is None:
            raise EnforcementError(f"no pending approval request '{request_id}'")
        return p.request

    def approve(self, request_id: str, *, by: str | None = None, reason: str = "") -> None:
        """Let the call run."""
        self._resolve(request_id, ApprovalOutcome(True, reason or "approved", by))

    def deny(self, request_id: str, *, by: str | None = None, reason: str = "") -> None:
        """Refuse the call."""
        self._resolve(request_id, ApprovalOutcome(False, reason or "denied by approver", by))

    def _resolve(self, request_id: str, outcome: ApprovalOutcome) -> None:
        with self._lock:
            p = self._pending.pop(request_id, None)
            if p is None:
                raise EnforcementError(
                    f"no pending approval request '{request_id}' (already decided or timed out)"
                )
            p.outcome = outcome
            p.event.set()
            waiters = list(p.waiters)
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_set_done, fut)

    def _expire(self, p: _Pending) -> ApprovalOutcome:
        with self._lock:
            if p.outcome is not None:
                return p.outcome
            self._pending.pop(p.request.id, None)
            p.outcome = ApprovalOutcome(False, f"no decision within {self.timeout:g} s (timed out)")
            p.event.set()
            return p.outcome

    def wait(self, request: ApprovalRequest) -> ApprovalOutcome:
        """Submit ``request`` and block this thread until it is decided or times out."""
        p = self._submit(request)
        if p.event.wait(self.timeout) and p.outcome is not None:
            return p.outcome
        return self._expire(p)

    async def await_decision(self, request: ApprovalRequest) -> ApprovalOutcome:
        """Submit ``request`` and wait (without blocking the loop) until decided or timed out."""
        p = self._submit(request)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if p.event.is_set():
                fut.set_result(None)
            else:
                p.waiters.append((loop, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except TimeoutError:
            return self._expire(p)
        return p.outcome if p.outcome is not None else self._expire(p)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


ApprovalCallback: TypeAlias = Callable[[ApprovalRequest], "bool | Awaitable[bool]"]
ApprovalHandler: TypeAlias = "ApprovalQueue | ApprovalCallback"

_ids = itertools.count(1)


def new_request_id() -> str:
    """An approval id unique among the processes of a machine (a proxy's workers share
    their pending approvals)."""
    return f"apr-{int(time.time() * 1000):x}-{os.getpid():x}-{next(_ids)}"


def resolve(handler: ApprovalHandler | None, request: ApprovalRequest) -> ApprovalOutcome:
    """Ask ``handler`` synchronously; an async-only handler cannot answer here (denied)."""
    if handler is None:
        return ApprovalOutcome(False, "approval required but no approval handler is configured")
    if isinstance(handler, ApprovalQueue):
        return handler.wait(request)
    try:
        answer = handler(request)
    except Exception as e:
        return ApprovalOutcome(False, f"approval handler failed: {type(e).__name__}: {e}")
    if inspect.isawaitable(answer):
        if inspect.iscoroutine(answer):
            answer.close()
        return ApprovalOutcome(
            False, "the approval handler is async; use the async check (acheck) to wait for it"
        )
    return ApprovalOutcome(bool(answer), "approved" if answer else "denied by approver")


async def aresolve(handler: ApprovalHandler | None, request: ApprovalRequest) -> ApprovalOutcome:
    """Ask ``handler``, awaiting an async callback or a queue without blocking the loop."""
    if handler is None:
        return ApprovalOutcome(False, "approval required but no approval handler is configured")
    if isinstance(handler, ApprovalQueue):
        return await handler.await_decision(request)
    try:
        answer = handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as e:
        return ApprovalOutcome(False, f"approval handler failed: {type(e).__name__}: {e}")
    return ApprovalOutcome(bool(answer), "approved" if answer else "denied by approver")
