"""Structured output on Anthropic: ``response_format`` (json_schema / json_object) becomes a
forced tool whose input schema is the answer's, and its input comes back as the message
content, whole or streamed, so ``.parse()`` clients and a gpt -> claude fallback keep their
JSON."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from routeguard.errors import UpstreamBadRequest
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.providers.anthropic import STRUCTURED_TOOL, request_to_anthropic
from routeguard.server import create_app
from routeguard.server.thread import ServerThread


class City(BaseModel):
    """What the client wants back."""

    name: str
    population: int
    coastal: bool


SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
    "type": "object", "required": ["name", "population"],
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}}}}}  # fmt: skip
MSG: Any = [{"role": "user", "content": "describe Lisbon"}]


def _cfg(url: str) -> dict[str, Any]:
    return {"model_list": [{"model_name": "claude", "type": "anthropic", "model": "sim-claude",
                            "api_base": url, "api_key": "k"}]}  # fmt: skip


def test_the_request_forces_one_tool_with_the_schema() -> None:
    body = request_to_anthropic({"messages": MSG, "response_format": SCHEMA}, "m")
    assert body["tool_choice"] == {"type": "tool", "name": STRUCTURED_TOOL}
    (tool,) = body["tools"]
    assert tool["input_schema"] == SCHEMA["json_schema"]["schema"]
    loose = request_to_anthropic({"messages": MSG, "response_format": {"type": "json_object"}}, "m")
    assert loose["tools"][0]["input_schema"] == {"type": "object"}
    with pytest.raises(UpstreamBadRequest) as info:
        request_to_anthropic({"messages": MSG, "response_format": SCHEMA, "tools": [
            {"type": "function", "function": {"name": "f"}}]}, "m")  # fmt: skip
    assert info.value.param == "response_format"


async def test_the_answer_is_the_json(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        out = await gw.chat({"model": "claude", "messages": MSG, "response_format": SCHEMA})
        assert isinstance(out, dict)
        choice = out["choices"][0]
        value = json.loads(choice["message"]["content"])
        assert isinstance(value["name"], str) and isinstance(value["population"], int)
        assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
        stream = await gw.chat({"model": "claude", "messages": MSG, "response_format": SCHEMA,
                                "stream": True})  # fmt: skip
        assert not isinstance(stream, dict)
        parts, finish = [], None
        async for chunk in stream:
            for c in chunk["choices"]:
                parts.append(c["delta"].get("content") or "")
                assert not c["delta"].get("tool_calls")
                finish = c["finish_reason"] or finish
        assert json.loads("".join(parts)) == value and finish == "stop"
    finally:
        await gw.aclose()


def test_parse_clients_work_through_the_proxy(mock: MockServer) -> None:
    with (
        ServerThread(create_app(Gateway.from_config(_cfg(mock.url)))) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        parsed = c.chat.completions.parse(model="claude", messages=MSG, response_format=City)
        city = parsed.choices[0].message.parsed
        assert isinstance(city, City) and city.name
        resp = c.responses.parse(model="claude", input="describe Lisbon", text_format=City)
        assert isinstance(resp.output_parsed, City)
