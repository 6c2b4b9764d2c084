"""Clients of the Responses API, unchanged, against the proxy: langchain-openai's
``ChatOpenAI(use_responses_api=True)`` (plain, streamed, a tool call and its result) and the
OpenAI Agents SDK's default model class (``OpenAIResponsesModel``) running an agent with a
function tool, on an OpenAI deployment (passed through) and an Anthropic one (translated)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("langchain_openai")
pytest.importorskip("agents")

from agents import Agent, OpenAIProvider, RunConfig, Runner, function_tool
from agents.models.openai_responses import OpenAIResponsesModel
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from routeguard.mock import MockServer
from serving import two_wire_proxy

ALIASES = ["oa", "an"]
ran: list[str] = []


@pytest.fixture(scope="module")
def proxy(mock: MockServer) -> Iterator[str]:
    with two_wire_proxy(mock.url) as url:
        yield url


def _chat(proxy: str, alias: str) -> ChatOpenAI:
    return ChatOpenAI(model=alias, base_url=proxy + "/v1", api_key="any",  # type: ignore[arg-type]
                      use_responses_api=True, max_retries=0)  # fmt: skip


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("alias", ALIASES)
def test_langchain_plain_and_streamed(proxy: str, mock: MockServer, alias: str) -> None:
    mock.reset()
    llm = _chat(proxy, alias)
    msg = llm.invoke("What is the capital of France?")
    assert msg.text.startswith(f"Simulated answer from sim-{alias}:")
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
    chunks = list(llm.stream("What is the capital of France?"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks) and len(chunks) > 2
    whole = chunks[0]
    for c in chunks[1:]:
        whole += c
    assert whole.text == msg.text
    want = "/v1/responses" if alias == "oa" else "/v1/messages"
    assert {r.path for r in mock.requests} == {want}


@pytest.mark.parametrize("alias", ALIASES)
def test_langchain_tool_call_and_result(proxy: str, alias: str) -> None:
    llm = _chat(proxy, alias).bind_tools([get_weather], tool_choice="get_weather")
    question = HumanMessage("Weather in Paris?")
    first = llm.invoke([question])
    (call,) = first.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and call["args"] == {"city": "example"}
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = _chat(proxy, alias).bind_tools([get_weather]).invoke([question, first, result])
    assert "sunny in example" in final.text


@function_tool
def lookup_weather(city: str) -> str:
    """The weather in a city."""
    ran.append(city)
    return f"sunny in {city}"


@pytest.fixture
async def client(proxy: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=proxy + "/v1", api_key="any", max_retries=0) as c:
        yield c


@pytest.mark.parametrize("alias", ALIASES)
async def test_agents_sdk_default_model_runs_a_function_tool(
    client: AsyncOpenAI, mock: MockServer, alias: str
) -> None:
    ran.clear()
    mock.reset()
    provider = OpenAIProvider(openai_client=client)
    assert isinstance(provider.get_model(alias), OpenAIResponsesModel)  # the default class
    config = RunConfig(model_provider=provider, tracing_disabled=True)
    agent = Agent(name="weather", instructions="Use tools.", model=alias, tools=[lookup_weather])
    result = await Runner.run(agent, "Weather in Paris?", run_config=config)
    assert ran == ["example"]
    assert "sunny in example" in str(result.final_output)
    if alias == "oa":  # passed through: both turns went to OpenAI's Responses API
        assert [r.path for r in mock.requests] == ["/v1/responses"] * 2
