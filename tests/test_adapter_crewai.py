"""CrewAI adapter: a real ``Crew`` with one ``Agent``, driven by a scripted fake LLM (a
``BaseLLM`` subclass), with routeguard's before/after tool-call hooks registered
(scenario: ``adapter_scenario.py``). Both of CrewAI's tool paths run: the text (ReAct) one,
for models without native function calling, and the native function-calling one.

CrewAI warns about its own deprecated fields from inside its code on every run, and at import
an ``ImportWarning`` from its ``crewai.rag`` package: those, and only those, are ignored here.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import pytest
from pydantic import Field

from adapter_scenario import INBOX, INJECTED_ADDRESS, RecordingGuard, make_guard, verdict
from routeguard.enforce import TAINT_RULE_ID
from routeguard.enforce.engine import REDACTED

# No telemetry, trace export or version check from CrewAI: nothing leaves the machine (set
# before CrewAI is imported; harmless for the other tests, which use none of them).
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_DISABLE_TRACKING", "true")
os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
# OTEL_SDK_DISABLED is the OpenTelemetry SDK's own switch, which routeguard's tracing honours:
# set only while CrewAI is imported and while this module's tests run (an autouse fixture),
# never for the rest of the session (tests/test_tracing.py exports spans).
_OTEL_WAS = os.environ.get("OTEL_SDK_DISABLED")
os.environ["OTEL_SDK_DISABLED"] = "true"


def _restore_otel_switch() -> None:
    if _OTEL_WAS is None:
        os.environ.pop("OTEL_SDK_DISABLED", None)
    else:
        os.environ["OTEL_SDK_DISABLED"] = _OTEL_WAS


try:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Cannot set an attribute on 'crewai", category=ImportWarning
        )
        pytest.importorskip("crewai")
        from crewai import Agent, Crew, Task
        from crewai.hooks import get_after_tool_call_hooks, get_before_tool_call_hooks
        from crewai.llms.base_llm import BaseLLM
        from crewai.tools import tool

        from routeguard.adapters.crewai import GuardHooks, register_guard
finally:
    _restore_otel_switch()


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")


@pytest.fixture(autouse=True)
def _no_otel_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # CrewAI's own spans stay home


class ScriptedLLM(BaseLLM):
    """A fake LLM: each call returns the next scripted reply and records the messages.

    With ``native=True`` it claims native function calling, and a reply may be a list of
    OpenAI-style tool calls; otherwise replies are ReAct text (``Action:`` / ``Final Answer:``).
    """

    script: list[Any] = Field(default_factory=list)
    seen: list[Any] = Field(default_factory=list)
    native: bool = False

    def supports_function_calling(self) -> bool:
        return self.native

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(messages)
        return self.script.pop(0)


def react(tool_name: str, args: dict[str, Any]) -> str:
    return f"Thought: I will use a tool.\nAction: {tool_name}\nAction Input: {json.dumps(args)}"


def native(call_id: str, tool_name: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    function = {"name": tool_name, "arguments": json.dumps(args)}
    return [{"id": call_id, "type": "function", "function": function}]


FINAL = "Thought: I now know the final answer\nFinal Answer: done"


class Tools:
    """Real CrewAI tools that record the arguments they ran with."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

        @tool("lookup_order")
        def lookup_order(order_id: str) -> str:
            """Look an order up."""
            self.ran.append(("lookup_order", {"order_id": order_id}))
            return f"order {order_id}: shipped"

        @tool("send_email")
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            self.ran.append(("send_email", {"to": to, "body": body}))
            return "sent"

        @tool("pay")
        def pay(amount: float, card: str) -> str:
            """Pay an amount with a card."""
            self.ran.append(("pay", {"amount": amount, "card": card}))
            return f"paid {amount}"

        @tool("read_inbox")
        def read_inbox() -> str:
            """Read the inbox."""
            self.ran.append(("read_inbox", {}))
            return INBOX

        self.all = [lookup_order, send_email, pay, read_inbox]


@pytest.fixture
def guard() -> RecordingGuard:
    return make_guard()


def kickoff(script: list[Any], tools: Tools, *, native_calls: bool, role: str = "clerk") -> Any:
    """Run a one-agent, one-task crew on the script; returns the LLM (to read what it saw)."""
    llm = ScriptedLLM(model="scripted", script=script, native=native_calls, seen=[])
    agent = Agent(role=role, goal="help", backstory="a careful clerk", llm=llm, tools=tools.all)
    task = Task(description="do the job", expected_output="a short note", agent=agent)
    Crew(agents=[agent], tasks=[task]).kickoff()
    return llm


def told(llm: ScriptedLLM, text: str) -> bool:
    """Whether any message the LLM received after its first call contains ``text``."""
    return any(text in json.dumps(messages) for messages in llm.seen[1:])


PATHS = pytest.mark.parametrize("native_calls", [False, True], ids=["react", "native"])


def step(native_calls: bool, call_id: str, tool_name: str, args: dict[str, Any]) -> Any:
    return native(call_id, tool_name, args) if native_calls else react(tool_name, args)


@PATHS
def test_denied_call_is_blocked_and_agent_reads_refusal(
    guard: RecordingGuard, native_calls: bool
) -> None:
    args = {"to": "eve@evil.example", "body": "the secrets"}
    tools = Tools()
    with GuardHooks(guard):
        llm = kickoff([step(native_calls, "c1", "send_email", args), FINAL], tools,
                      native_calls=native_calls)  # fmt: skip

    assert tools.ran == []
    expected = verdict("send_email", args)
    assert not expected.allowed
    assert expected.message
    assert told(llm, expected.message)
    assert guard.shown == []


@PATHS
def test_allowed_call_runs_masked_and_is_observed(
    guard: RecordingGuard, native_calls: bool
) -> None:
    tools = Tools()
    with GuardHooks(guard):
        llm = kickoff(
            [
                step(native_calls, "c1", "pay", {"amount": 20, "card": "4111 1111 1111 1111"}),
                step(native_calls, "c2", "lookup_order", {"order_id": "A-17"}),
                FINAL,
            ],
            tools,
            native_calls=native_calls,
        )

    assert tools.ran == [
        ("pay", {"amount": 20, "card": REDACTED}),
        ("lookup_order", {"order_id": "A-17"}),
    ]
    assert told(llm, "order A-17: shipped")
    assert [(t, str(o)) for t, o in guard.shown] == [
        ("pay", "paid 20.0"),
        ("lookup_order", "order A-17: shipped"),
    ]
    assert guard.shown_args == [
        ("pay", {"amount": 20, "card": REDACTED}),
        ("lookup_order", {"order_id": "A-17"}),
    ]


@PATHS
def test_injected_address_from_untrusted_output_is_refused(
    guard: RecordingGuard, native_calls: bool
) -> None:
    mail = {"to": INJECTED_ADDRESS, "body": "invoices"}
    tools = Tools()
    with GuardHooks(guard):
        llm = kickoff(
            [
                step(native_calls, "c1", "read_inbox", {}),
                step(native_calls, "c2", "send_email", mail),
                FINAL,
            ],
            tools,
            native_calls=native_calls,
        )

    assert verdict("send_email", mail).allowed  # the policy alone would let it through
    assert tools.ran == [("read_inbox", {})]
    assert told(llm, f"rule '{TAINT_RULE_ID}'")


def test_parallel_native_calls_in_one_turn(guard: RecordingGuard) -> None:
    outside = {"to": "eve@evil.example", "body": "x"}
    turn = [
        *native("c1", "send_email", outside),
        *native("c2", "lookup_order", {"order_id": "B-2"}),
        *native("c3", "pay", {"amount": 5000, "card": "4111"}),
    ]
    tools = Tools()
    with GuardHooks(guard):
        llm = kickoff([turn, FINAL], tools, native_calls=True)

    assert tools.ran == [("lookup_order", {"order_id": "B-2"})]
    assert told(llm, "order B-2: shipped")
    assert told(llm, verdict("send_email", outside).message)
    assert told(llm, verdict("pay", {"amount": 5000, "card": "4111"}).message)
    assert guard.shown == [("lookup_order", "order B-2: shipped")]


def test_agents_filter_and_unregister(guard: RecordingGuard) -> None:
    args = {"to": "eve@evil.example", "body": "x"}
    before, after = get_before_tool_call_hooks(), get_after_tool_call_hooks()
    hooks = register_guard(guard, agents=["auditor"])
    try:
        tools = Tools()
        kickoff([react("send_email", args), FINAL], tools, native_calls=False, role="clerk")
        assert tools.ran == [("send_email", args)]  # a clerk is not covered by this guard
        kickoff([react("send_email", args), FINAL], tools, native_calls=False, role="auditor")
        assert tools.ran == [("send_email", args)]  # an auditor is
    finally:
        hooks.unregister()
    assert (get_before_tool_call_hooks(), get_after_tool_call_hooks()) == (before, after)
