"""AutoGen AgentChat: a tool wrapper and a workbench wrapper that check calls against a Guard.

Data flow, for a tool: ``AssistantAgent`` runs its tools through a workbench, which calls
:meth:`GuardedTool.run_json` with the model's arguments → ``guard.acheck`` → denied: the tool
raises :class:`~routeguard.enforce.ToolCallDenied` carrying the guard's refusal, which the
workbench turns into an error result the model reads, and the wrapped tool never runs;
allowed: the wrapped tool runs with the guard's arguments (redacted paths masked) → its return
value goes to ``guard.observe``. For a whole workbench (e.g. an MCP server's),
:class:`GuardedWorkbench` does the same in ``call_tool`` and answers a denied call with a
``ToolResult`` (``is_error=True``) whose text is the refusal.

Requires ``autogen-core`` (and ``autogen-agentchat`` for the agents); imported here only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from autogen_core import CancellationToken
from autogen_core.tools import (
    BaseTool,
    TextResultContent,
    ToolResult,
    ToolSchema,
    Workbench,
)
from pydantic import BaseModel

from routeguard.enforce import ToolCallDenied

if TYPE_CHECKING:
    from routeguard.enforce import Guard, Verdict

__all__ = ["GuardedTool", "GuardedWorkbench", "guard_tools", "guard_workbench"]


class GuardedTool(BaseTool[BaseModel, Any]):
    """An AutoGen tool that asks a Guard before running the tool it wraps.

    Example::

        from autogen_agentchat.agents import AssistantAgent
        from autogen_core.tools import FunctionTool
        from routeguard.adapters.autogen import guard_tools

        guard = Guard.from_yaml("policy.yaml")
        tools = guard_tools(guard, [FunctionTool(send_email, description="Send an email")])
        agent = AssistantAgent("ops", model_client=client, tools=tools)

    It keeps the wrapped tool's name, description and argument schema, so the model sees
    the same tool. A denied call raises ``ToolCallDenied``; inside an agent the workbench
    hands its message (the refusal) to the model as an error result.
    """

    def __init__(self, guard: Guard, tool: BaseTool[Any, Any]) -> None:
        super().__init__(
            args_type=tool.args_type(),
            return_type=tool.return_type(),
            name=tool.name,
            description=tool.description,
            strict=tool.schema.get("strict", False),
        )
        self.guard = guard
        self.tool = tool

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> Any:
        """Check the model's arguments, then run the wrapped tool with the guard's."""
        verdict = await self.guard.acheck(self.name, args)
        if not verdict.allowed:
            raise _denied(verdict)
        result = await self.tool.run_json(verdict.args, cancellation_token, call_id=call_id)
        self.guard.observe(self.name, result, args=verdict.args)
        return result

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        """Check already-validated arguments, then run the wrapped tool with the guard's."""
        verdict = await self.guard.acheck(self.name, args.model_dump(mode="json"))
        if not verdict.allowed:
            raise _denied(verdict)
        checked = self.tool.args_type().model_validate(verdict.args)
        result = await self.tool.run(checked, cancellation_token)
        self.guard.observe(self.name, result, args=verdict.args)
        return result

    def return_value_as_string(self, value: Any) -> str:
        """The wrapped tool's rendering of its return value."""
        return self.tool.return_value_as_string(value)

    async def save_state_json(self) -> Mapping[str, Any]:
        """The wrapped tool's state."""
        return await self.tool.save_state_json()

    async def load_state_json(self, state: Mapping[str, Any]) -> None:
        """Restore the wrapped tool's state."""
        await self.tool.load_state_json(state)


class GuardedWorkbench(Workbench):
    """A workbench that asks a Guard before each call reaches the workbench it wraps.

    Example::

        from routeguard.adapters.autogen import guard_workbench

        async with guard_workbench(guard, McpWorkbench(server_params)) as workbench:
            agent = AssistantAgent("ops", model_client=client, workbench=workbench)

    A denied call is answered with a ``ToolResult`` (``is_error=True``) carrying the refusal.
    """

    def __init__(self, guard: Guard, workbench: Workbench) -> None:
        self.guard = guard
        self.workbench = workbench

    async def list_tools(self) -> list[ToolSchema]:
        """The wrapped workbench's tools, unchanged."""
        return await self.workbench.list_tools()

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Check the call; refuse it, or run it with the guard's arguments and observe it."""
        verdict = await self.guard.acheck(name, arguments or {})
        if not verdict.allowed:
            return ToolResult(
                name=name, result=[TextResultContent(content=verdict.message)], is_error=True
            )
        result = await self.workbench.call_tool(
            name, verdict.args, cancellation_token, call_id=call_id
        )
        self.guard.observe(name, result.to_text(replace_image="[image]"), args=verdict.args)
        return result

    async def start(self) -> None:
        """Start the wrapped workbench."""
        await self.workbench.start()

    async def stop(self) -> None:
        """Stop the wrapped workbench."""
        await self.workbench.stop()

    async def reset(self) -> None:
        """Reset the wrapped workbench."""
        await self.workbench.reset()

    async def save_state(self) -> Mapping[str, Any]:
        """The wrapped workbench's state."""
        return await self.workbench.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore the wrapped workbench's state."""
        await self.workbench.load_state(state)


def guard_tools(guard: Guard, tools: Iterable[BaseTool[Any, Any]]) -> list[GuardedTool]:
    """Each tool wrapped in a :class:`GuardedTool`, for ``AssistantAgent(tools=...)``."""
    return [GuardedTool(guard, t) for t in tools]


def guard_workbench(guard: Guard, workbench: Workbench) -> GuardedWorkbench:
    """The workbench wrapped in a :class:`GuardedWorkbench` (``AssistantAgent(workbench=...)``)."""
    return GuardedWorkbench(guard, workbench)


def _denied(verdict: Verdict) -> ToolCallDenied:
    return ToolCallDenied(verdict)
