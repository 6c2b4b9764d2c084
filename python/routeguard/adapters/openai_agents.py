"""OpenAI Agents SDK: tool guardrails that check every function-tool call against a Guard.

Data flow: the SDK runs a function tool's input guardrails before the tool →
:func:`input_guardrail` asks ``guard.acheck`` with the tool name and the model's JSON arguments
→ denied: ``reject_content`` with the guard's refusal, so the model gets that text as the tool's
output and the tool never runs; allowed: the tool runs → :func:`output_guardrail` hands its
output to ``guard.observe`` and lets it through. A guardrail cannot change the arguments, so
:func:`guard_tools` also wraps each tool's invoker: when the guard masked some arguments, the
tool runs with the masked JSON instead of the model's. A bare :func:`input_guardrail` (without
:func:`guard_tools`) refuses a call the guard would only allow masked: it fails closed.

Requires ``openai-agents`` (module ``agents``; imported here, not by ``routeguard``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agents import (
    FunctionTool,
    Tool,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
    ToolOutputGuardrail,
    ToolOutputGuardrailData,
)
from agents.tool_context import ToolContext

from routeguard.errors import InvalidRequest

if TYPE_CHECKING:
    from routeguard.enforce import Guard

__all__ = ["guard_tool", "guard_tools", "input_guardrail", "output_guardrail"]


class _MaskedArguments:
    """Masked argument JSON the input guardrail left for the tool invoker, by tool call id."""

    def __init__(self) -> None:
        self.by_call: dict[str, str] = {}


def input_guardrail(guard: Guard) -> ToolInputGuardrail[Any]:
    """A ``ToolInputGuardrail`` that refuses (``reject_content``) calls the guard denies.

    Example::

        from agents import function_tool
        from routeguard.adapters.openai_agents import input_guardrail, output_guardrail

        @function_tool(tool_input_guardrails=[input_guardrail(guard)],
                       tool_output_guardrails=[output_guardrail(guard)])
        def send_email(to: str, body: str) -> str: ...

    Prefer :func:`guard_tools`, which also runs allowed calls with masked arguments; on its own
    this guardrail refuses a call the guard allows only with some arguments masked.
    """
    return _input_guardrail(guard, None)


def _input_guardrail(guard: Guard, masked: _MaskedArguments | None) -> ToolInputGuardrail[Any]:
    async def routeguard_tool_input(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        try:
            verdict = await guard.acheck(ctx.tool_name, ctx.tool_arguments or "{}")
        except InvalidRequest as e:
            return ToolGuardrailFunctionOutput.reject_content(str(e))
        if not verdict.allowed:
            return ToolGuardrailFunctionOutput.reject_content(
                verdict.message, output_info=verdict.decision
            )
        if verdict.args != _parsed(ctx.tool_arguments):
            if masked is None:
                return ToolGuardrailFunctionOutput.reject_content(
                    f"tool call '{ctx.tool_name}' may only run with some arguments masked, "
                    "and this tool is not wrapped to mask them (use routeguard.adapters."
                    "openai_agents.guard_tools)",
                    output_info=verdict.decision,
                )
            masked.by_call[ctx.tool_call_id] = json.dumps(verdict.args)
        return ToolGuardrailFunctionOutput.allow(output_info=verdict.decision)

    return ToolInputGuardrail(guardrail_function=routeguard_tool_input, name="routeguard")


def output_guardrail(guard: Guard) -> ToolOutputGuardrail[Any]:
    """A ``ToolOutputGuardrail`` that passes each tool's output to ``guard.observe``."""

    def routeguard_tool_output(data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        try:
            args = json.loads(data.context.tool_arguments or "null")
        except ValueError:
            args = None
        guard.observe(data.context.tool_name, data.output, args=args)
        return ToolGuardrailFunctionOutput.allow()

    return ToolOutputGuardrail(guardrail_function=routeguard_tool_output, name="routeguard")


def guard_tool(guard: Guard, tool: Tool) -> FunctionTool:
    """A copy of one function tool with the guard's input and output guardrails in front of
    any it already has, and an invoker that runs it with the guard's masked arguments."""
    if not isinstance(tool, FunctionTool):
        raise TypeError(
            f"routeguard can only guard function tools, not {type(tool).__name__} "
            f"'{getattr(tool, 'name', '?')}': hosted tools run outside this process"
        )
    masked = _MaskedArguments()
    invoke = tool.on_invoke_tool

    async def invoke_masked(ctx: ToolContext[Any], arguments: str) -> Any:
        return await invoke(ctx, masked.by_call.pop(ctx.tool_call_id, arguments))

    return dataclasses.replace(
        tool,
        on_invoke_tool=invoke_masked,
        tool_input_guardrails=[
            _input_guardrail(guard, masked),
            *(tool.tool_input_guardrails or ()),
        ],
        tool_output_guardrails=[output_guardrail(guard), *(tool.tool_output_guardrails or ())],
    )


def guard_tools(guard: Guard, tools: Iterable[Tool]) -> list[Tool]:
    """Guarded copies of function tools, for ``Agent(tools=guard_tools(guard, [...]))``.

    Example::

        from agents import Agent, Runner
        from routeguard.enforce import Guard
        from routeguard.adapters.openai_agents import guard_tools

        guard = Guard.from_yaml("policy.yaml")
        agent = Agent(name="ops", tools=guard_tools(guard, [search, send_email]))
        result = await Runner.run(agent, "...")

    A denied call reaches the model as the tool's output: the guard's refusal text.
    Raises ``TypeError`` for a hosted tool (it runs on the provider's side, out of reach).
    """
    return [guard_tool(guard, t) for t in tools]


def _parsed(arguments: str | None) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return None
