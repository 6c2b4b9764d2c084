"""CrewAI: ``before_tool_call`` / ``after_tool_call`` hooks that enforce a Guard on tool calls.

Data flow: before each tool runs, CrewAI calls :meth:`GuardHooks.before_tool_call` with the
call's context → ``guard.check`` on the tool name and input → denied: the hook returns
``False`` (CrewAI blocks the call) and remembers the refusal; allowed: the input dict is
replaced in place by the guard's arguments (redacted paths masked), so the tool runs with
them. After the call (CrewAI runs the after hooks on blocked calls too),
:meth:`GuardHooks.after_tool_call` returns the guard's refusal as the tool result the agent
reads, instead of CrewAI's generic "blocked by hook" text; for a call that ran it hands the
output to ``guard.observe``. Calls are matched up by their input dict, which CrewAI passes to
both hooks.

CrewAI hooks are global (they apply to every crew in the process), so :class:`GuardHooks`
registers and unregisters itself explicitly, or for the length of a ``with`` block; the
``agents`` filter limits a guard to the agents with those roles.

Requires ``crewai`` (imported here, not by ``routeguard``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from crewai.hooks import (
    ToolCallHookContext,
    register_after_tool_call_hook,
    register_before_tool_call_hook,
    unregister_after_tool_call_hook,
    unregister_before_tool_call_hook,
)

if TYPE_CHECKING:
    from routeguard.enforce import Guard

__all__ = ["GuardHooks", "register_guard"]

_ALLOWED = object()


class GuardHooks:
    """The pair of CrewAI tool hooks for one Guard.

    Example::

        from crewai import Agent, Crew, Task
        from routeguard.enforce import Guard
        from routeguard.adapters.crewai import GuardHooks

        guard = Guard.from_yaml("policy.yaml")
        with GuardHooks(guard):                      # or: hooks = register_guard(guard)
            Crew(agents=[agent], tasks=[task]).kickoff()

    A denied call does not run; the agent reads the guard's refusal as the tool's result.
    """

    def __init__(self, guard: Guard, *, agents: Iterable[str] | None = None) -> None:
        self.guard = guard
        self.agents = frozenset(agents) if agents is not None else None
        # id(tool_input) → (tool_input, the refusal text or _ALLOWED) between the two hooks of
        # one call; holding the dict keeps its id from being reused while the entry is there.
        self._pending: dict[int, tuple[dict[str, Any], object]] = {}
        # CrewAI runs one turn's native tool calls in a thread pool, and a Guard is not
        # thread-safe: every use of the guard and of _pending holds this lock.
        self._lock = threading.Lock()

    def applies_to(self, context: ToolCallHookContext) -> bool:
        """Whether this guard covers the agent making the call (all agents by default)."""
        if self.agents is None:
            return True
        role = getattr(context.agent, "role", None)
        return role in self.agents

    def before_tool_call(self, context: ToolCallHookContext) -> bool | None:
        """Check the call: ``False`` blocks it; otherwise mask its input in place."""
        if not self.applies_to(context):
            return None
        tool_input = context.tool_input
        with self._lock:
            verdict = self.guard.check(context.tool_name, tool_input)
            self._pending[id(tool_input)] = (
                tool_input,
                _ALLOWED if verdict.allowed else verdict.message,
            )
        if not verdict.allowed:
            return False
        if verdict.args != tool_input:
            tool_input.clear()
            tool_input.update(verdict.args)
        return None

    def after_tool_call(self, context: ToolCallHookContext) -> str | None:
        """The refusal as the result of a call this guard blocked; else observe the output."""
        with self._lock:
            entry = self._pending.pop(id(context.tool_input), None)
            if entry is None or entry[0] is not context.tool_input:
                return None
            if entry[1] is _ALLOWED:
                output = context.raw_tool_result
                self.guard.observe(
                    context.tool_name,
                    output if output is not None else context.tool_result,
                    args=context.tool_input,
                )
                return None
        return str(entry[1])

    def register(self) -> GuardHooks:
        """Register both hooks globally (every crew in this process); returns ``self``."""
        register_before_tool_call_hook(self.before_tool_call)
        register_after_tool_call_hook(self.after_tool_call)
        return self

    def unregister(self) -> None:
        """Remove both hooks."""
        unregister_before_tool_call_hook(self.before_tool_call)
        unregister_after_tool_call_hook(self.after_tool_call)
        with self._lock:
            self._pending.clear()

    def __enter__(self) -> GuardHooks:
        """Register the hooks for the ``with`` block."""
        return self.register()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Unregister the hooks."""
        self.unregister()


def register_guard(guard: Guard, *, agents: Iterable[str] | None = None) -> GuardHooks:
    """Register a Guard's hooks with CrewAI for every crew; call ``.unregister()`` to stop."""
    return GuardHooks(guard, agents=agents).register()
