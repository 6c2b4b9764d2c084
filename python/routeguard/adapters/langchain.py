"""LangChain v1 agents: a middleware that checks every tool call against a routeguard Guard.

Data flow: ``create_agent``'s tool node calls :meth:`GuardMiddleware.wrap_tool_call` (or
``awrap_tool_call`` when the agent runs async) with the model's tool call → ``guard.check`` /
``guard.acheck`` on the tool name and arguments → denied: a ``ToolMessage`` with the guard's
refusal (``status="error"``) goes back to the model and the tool never runs; allowed: the tool
runs with the guard's arguments (redacted paths masked) → its output goes to ``guard.observe``.

Requires ``langchain>=1.0`` (imported here, not by ``routeguard``).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from langchain.agents.middleware import AgentMiddleware, ToolCallRequest
from langchain_core.messages import ToolMessage
from langgraph.types import Command

if TYPE_CHECKING:
    from routeguard.enforce import Guard, Verdict

__all__ = ["GuardMiddleware", "guard_middleware"]

_Result = ToolMessage | Command[Any]


class GuardMiddleware(AgentMiddleware):
    """Agent middleware that enforces a :class:`~routeguard.enforce.Guard` on tool calls.

    Example::

        from langchain.agents import create_agent
        from routeguard.enforce import Guard
        from routeguard.adapters.langchain import GuardMiddleware

        guard = Guard.from_yaml("policy.yaml")
        agent = create_agent(model, tools=[search, send_email],
                             middleware=[GuardMiddleware(guard)])
        agent.invoke({"messages": [{"role": "user", "content": "..."}]})

    A denied call is answered with a ``ToolMessage`` carrying the refusal (``status="error"``),
    so the model sees why and can change course; the tool does not run.
    """

    def __init__(self, guard: Guard) -> None:
        super().__init__()
        self.guard = guard
        # A sync agent runs one turn's tool calls in a thread pool and a Guard is not
        # thread-safe: the sync path holds this lock around each use of the guard (the tool
        # itself runs outside it). The async path runs on one event loop and needs none.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The middleware's name in the agent graph."""
        return "RouteguardGuard"

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], _Result],
    ) -> _Result:
        """Check the call; refuse it, or run it with the guard's arguments and observe it."""
        call = request.tool_call
        with self._lock:
            verdict = self.guard.check(call["name"], call["args"])
        if not verdict.allowed:
            return _refusal(request, verdict)
        result = handler(_with_args(request, verdict))
        with self._lock:
            _observe(self.guard, call["name"], result, verdict.args)
        return result

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[_Result]],
    ) -> _Result:
        """Async :meth:`wrap_tool_call` (uses ``guard.acheck``, so approvals can wait)."""
        call = request.tool_call
        verdict = await self.guard.acheck(call["name"], call["args"])
        if not verdict.allowed:
            return _refusal(request, verdict)
        result = await handler(_with_args(request, verdict))
        _observe(self.guard, call["name"], result, verdict.args)
        return result


def guard_middleware(guard: Guard) -> GuardMiddleware:
    """The middleware for ``create_agent(..., middleware=[guard_middleware(guard)])``."""
    return GuardMiddleware(guard)


def _refusal(request: ToolCallRequest, verdict: Verdict) -> ToolMessage:
    call = request.tool_call
    return ToolMessage(
        content=verdict.message,
        tool_call_id=call["id"] or "",
        name=call["name"],
        status="error",
    )


def _with_args(request: ToolCallRequest, verdict: Verdict) -> ToolCallRequest:
    call = request.tool_call
    if verdict.args == call["args"]:
        return request
    return request.override(tool_call={**call, "args": dict(verdict.args)})


def _observe(guard: Guard, tool: str, result: _Result, args: Any) -> None:
    """Pass what the tool returned (and the arguments it ran with) to the guard: a
    ToolMessage's content, or the ToolMessages a ``Command`` adds to the state."""
    if isinstance(result, ToolMessage):
        guard.observe(tool, result.content, args=args)
        return
    update = result.update
    messages = update.get("messages", ()) if isinstance(update, dict) else ()
    for message in messages:
        if isinstance(message, ToolMessage):
            guard.observe(tool, message.content, args=args)
