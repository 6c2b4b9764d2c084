"""The simulated upstream honours structured output: OpenAI ``response_format``
(json_schema, json_object) and Gemini ``responseMimeType``/``responseJsonSchema``, so
``client.chat.completions.parse(Model)`` works against it, directly and through the proxy
to each wire format; and the minimal schema instances it builds validate."""

from __future__ import annotations

import datetime
import json
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import openai
import pydantic
import pytest
from openai.lib._pydantic import to_strict_json_schema

from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.mock.instances import schema_instance
from routeguard.server import create_app
from routeguard.server.thread import ServerThread


class Address(pydantic.BaseModel):
    city: str
    zip_code: int


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=18, le=120)
    tags: list[str]
    address: Address
    kind: Literal["staff", "guest"]
    seen: datetime.datetime
    score: float | None


@pytest.fixture
def oai(mock: MockServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 5}}},
         {"n": 6}),
        ({"type": "object", "properties": {"s": {"type": "string", "minLength": 12},
                                           "t": {"type": "string"}}, "required": ["s"]},
         {"s": "examplexxxxx"}),
        ({"type": "array", "items": {"type": "number", "maximum": 0.25}, "minItems": 3},
         [0.25, 0.25, 0.25]),
        ({"allOf": [{"$ref": "#/$defs/A"}], "$defs": {"A": {"type": "string", "maxLength": 3}}},
         "exa"),
        ({"type": ["null", "boolean"]}, True),
        ({"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 2.5}]}, 3),
        ({"type": "string", "format": "uuid"}, "00000000-0000-4000-8000-000000000000"),
    ],
)  # fmt: skip
def test_schema_instance(schema: dict[str, Any], expected: Any) -> None:
    assert schema_instance(schema) == expected


@pytest.mark.parametrize("strict", [True, False])
def test_schema_instance_of_a_pydantic_model(strict: bool) -> None:
    schema = to_strict_json_schema(Person) if strict else Person.model_json_schema()
    Person.model_validate(schema_instance(schema))


def test_chat_completions_parse_against_the_mock(oai: openai.OpenAI) -> None:
    done = oai.chat.completions.parse(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Describe a person"}],
        response_format=Person,
    )
    parsed = done.choices[0].message.parsed
    assert isinstance(parsed, Person)
    assert parsed.age >= 18 and parsed.kind == "staff"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.completion_tokens > 0


def test_json_object_mode_and_stream(oai: openai.OpenAI) -> None:
    msgs: Any = [{"role": "user", "content": "Give me JSON"}]
    whole = oai.chat.completions.create(
        model="gpt-4o", messages=msgs, response_format={"type": "json_object"}
    )
    text = whole.choices[0].message.content
    assert text is not None and isinstance(json.loads(text)["answer"], str)
    pieces = [
        c.choices[0].delta.content or ""
        for c in oai.chat.completions.create(
            model="gpt-4o", messages=msgs, response_format={"type": "json_object"}, stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == text


def test_max_tokens_cuts_json_with_finish_length(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_object"},
        max_tokens=2,
    )
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].message.content is not None
    assert len(out.choices[0].message.content) == 8


def test_bad_response_format_is_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        oai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "yaml"},  # type: ignore[arg-type,typeddict-item]
        )


def test_gemini_response_json_schema(mock: MockServer) -> None:
    schema = to_strict_json_schema(Person)
    body = {
        "contents": [{"role": "user", "parts": [{"text": "a person"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema},
    }
    req = urllib.request.Request(
        mock.url + "/v1beta/models/gemini-x:generateContent",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-goog-api-key": "k"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        out = json.loads(r.read())
    text = "".join(p["text"] for p in out["candidates"][0]["content"]["parts"])
    Person.model_validate_json(text)


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_parse_through_the_proxy(mock: MockServer, kind: str) -> None:
    base = mock.url + ("/v1" if kind == "openai" else "")
    cfg = {"model_list": [{"model_name": "m", "type": kind, "model": "sim", "api_base": base,
                           "api_key": "k"}]}  # fmt: skip
    with ServerThread(create_app(Gateway.from_config(cfg))) as server:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with c:
            done = c.chat.completions.parse(
                model="m",
                messages=[{"role": "user", "content": "Describe a person"}],
                response_format=Person,
            )
    assert isinstance(done.choices[0].message.parsed, Person)
