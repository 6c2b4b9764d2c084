"""The OpenAI Agents SDK, unchanged, against the proxy: its default model class (the
Responses API) runs an agent with a function tool to its final answer, plain and streamed,
with the simulated upstream behind (OpenAI and Anthropic wire formats)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("agents")

from agents import Agent, OpenAIProvider, RunConfig, Runner, function_tool
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from routeguard.mock import MockServer
from serving import two_wire_proxy

calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    with MockServer() as mock, two_wire_proxy(mock.url) as url:
        yield url


@pytest.fixture
async def client(proxy: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=proxy + "/v1", api_key="any", max_retries=0) as c:
        yield c


def _config(client: AsyncOpenAI) -> RunConfig:
    provider = OpenAIProvider(openai_client=client)
    assert isinstance(provider.get_model("oa"), OpenAIResponsesModel)  # the default class
    return RunConfig(model_provider=provider, tracing_disabled=True)


@pytest.mark.parametrize("alias", ["oa", "an"])
async def test_agent_runs_a_function_tool_through_responses(
    client: AsyncOpenAI, alias: str
) -> None:
    calls.clear()
    agent = Agent(name="weather", instructions="Use tools.", model=alias, tools=[get_weather])
    result = await Runner.run(agent, "Weather in Paris?", run_config=_config(client))
    assert calls == ["example"]  # the simulated model calls the tool with its schema's instance
    assert "the tool get_weather returned sunny in example" in str(result.final_output)


async def test_agent_streamed_run(client: AsyncOpenAI) -> None:
    calls.clear()
    agent = Agent(name="weather", instructions="Use tools.", model="oa", tools=[get_weather])
    run = Runner.run_streamed(agent, "Weather in Rome?", run_config=_config(client))
    kinds = [event.type async for event in run.stream_events()]
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert calls == ["example"]
    assert "sunny in example" in str(run.final_output)
