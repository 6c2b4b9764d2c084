"""Adapters that put a :class:`~routeguard.enforce.Guard` in front of agent frameworks' tools.

One module per framework; each imports its framework itself, so ``import routeguard`` (and this
package) works without any of them installed. Import the one you use:

- ``routeguard.adapters.langchain``: LangChain v1 agent middleware (``wrap_tool_call``).
- ``routeguard.adapters.crewai``: CrewAI ``before_tool_call`` / ``after_tool_call`` hooks.
- ``routeguard.adapters.autogen``: an AutoGen AgentChat tool wrapper.
- ``routeguard.adapters.openai_agents``: an OpenAI Agents SDK tool input guardrail.

Every adapter does the same three things: ask the guard before a tool runs (a denied call
never runs, and the agent gets the guard's refusal text as the tool's result), run an allowed
call with the guard's (possibly redacted) arguments, and hand the tool's output to
``guard.observe`` so data-flow rules see what came back.
"""
