"""The bundled simulated upstream, checked with the official OpenAI and Anthropic SDKs (which
must parse everything it sends) and plain HTTP for Gemini: answers, streams, tool calls,
embeddings, every injected failure, latency, determinism and the request journal."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import numpy as np
import openai
import pytest

from ports import free_port
from routeguard.mock import MockServer, create_mock_app, serve_mock
from routeguard.mock.answers import count_tokens
from routeguard.mock.behaviour import Behaviour, FlakyCounters, behaviour_for

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}
OPENAI_TOOLS: Any = [{"type": "function", "function": WEATHER_TOOL}]
ANTHROPIC_TOOLS: Any = [
    {
        "name": WEATHER_TOOL["name"],
        "description": WEATHER_TOOL["description"],
        "input_schema": WEATHER_TOOL["parameters"],
    }
]
GEMINI_TOOLS = [{"functionDeclarations": [WEATHER_TOOL]}]
QUESTION = "What is the capital of France?"


@pytest.fixture(autouse=True)
def _fresh(mock: MockServer) -> None:
    mock.reset()


@pytest.fixture(scope="module")
def oai(mock: MockServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(mock: MockServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=mock.url, api_key="x", max_retries=0) as client:
        yield client


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def http(
    url: str, body: Any = None, *, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST (or GET without a body) with urllib; (status, lower-cased headers, body)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def gemini(
    mock: MockServer, model: str, body: Any, action: str = "generateContent", query: str = ""
) -> tuple[int, dict[str, str], bytes]:
    return http(f"{mock.url}/v1beta/models/{model}:{action}{query}", body)


def sse_data(raw: bytes) -> list[Any]:
    frames = raw.decode().replace("\r\n", "\n").split("\n\n")
    return [json.loads(f[len("data: ") :]) for f in frames if f.startswith("data: {")]


# --- OpenAI ------------------------------------------------------------------------------------


def test_openai_chat_answer_usage_and_determinism(oai: openai.OpenAI) -> None:
    r1 = oai.chat.completions.create(model="mock-gpt", messages=user(QUESTION))
    r2 = oai.chat.completions.create(model="mock-gpt", messages=user(QUESTION))
    other = oai.chat.completions.create(model="mock-gpt", messages=user("Something else"))
    text = r1.choices[0].message.content
    assert text is not None and text.startswith("Simulated answer from mock-gpt: ")
    assert text == r2.choices[0].message.content
    assert text != other.choices[0].message.content
    assert r1.id != r2.id
    assert r1.choices[0].finish_reason == "stop"
    assert r1.usage is not None
    assert r1.usage.prompt_tokens == count_tokens(len(QUESTION)) == 8
    assert r1.usage.completion_tokens == len(text.split()) - 3  # the head is one token
    assert r1.usage.total_tokens == r1.usage.prompt_tokens + r1.usage.completion_tokens


def test_openai_stream_with_usage_matches_the_whole_answer(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model="mock-gpt", messages=user(QUESTION))
    with oai.chat.completions.create(
        model="mock-gpt",
        messages=user(QUESTION),
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_stream_without_usage_option_sends_no_usage_chunk(oai: openai.OpenAI) -> None:
    with oai.chat.completions.create(model="m", messages=user("hi"), stream=True) as stream:
        chunks = list(stream)
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_max_tokens_truncates_with_finish_length(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="m", messages=user(QUESTION), max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3
    text = r.choices[0].message.content or ""
    # The first token is the whole head "Simulated answer from m:", then one word per token.
    assert text.startswith("Simulated answer from m: ") and len(text.split()) == 4 + 2
    with oai.chat.completions.create(
        model="m", messages=user(QUESTION), max_completion_tokens=2, stream=True
    ) as stream:
        chunks = [c for c in stream if c.choices]
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert sum(1 for c in chunks if c.choices[0].delta.content) == 2


def test_openai_n_choices(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="m", messages=user(QUESTION), n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content != r.choices[1].message.content
    assert r.usage is not None
    assert r.usage.completion_tokens == sum(
        len((c.message.content or "").split()) - 3 for c in r.choices
    )


def test_openai_tool_call_then_tool_result(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="m", messages=user("Weather?"), tools=OPENAI_TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example", "unit": "celsius"}
    follow = oai.chat.completions.create(
        model="m",
        tools=OPENAI_TOOLS,
        messages=[
            *user("Weather?"),
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    text = follow.choices[0].message.content or ""
    assert "get_weather" in text and '{"temp_c": 21}' in text


def test_openai_tool_call_stream_and_tool_choice(oai: openai.OpenAI) -> None:
    with oai.chat.completions.create(
        model="m", messages=user("Weather?"), tools=OPENAI_TOOLS, stream=True
    ) as stream:
        chunks = [c for c in stream if c.choices]
    first = chunks[0].choices[0].delta.tool_calls
    assert first is not None and first[0].function is not None
    assert first[0].function.name == "get_weather" and first[0].id
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        for tc in c.choices[0].delta.tool_calls or []
        if tc.function is not None
    )
    assert json.loads(args) == {"city": "example", "unit": "celsius"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    r = oai.chat.completions.create(
        model="m", messages=user("Weather?"), tools=OPENAI_TOOLS, tool_choice="none"
    )
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
        (529, openai.InternalServerError),
    ],
)
def test_openai_error_statuses(
    oai: openai.OpenAI, mock: MockServer, status: int, exc: type[openai.APIStatusError]
) -> None:
    with pytest.raises(exc) as info:
        oai.chat.completions.create(model=f"mock-error-{status}", messages=user("hi"))
    err = info.value
    assert err.status_code == status
    assert isinstance(err.body, dict) and "message" in err.body and "type" in err.body
    assert f"error-{status}" in err.message
    if status == 429:
        assert err.response.headers["retry-after"] == "0"
        assert err.body["code"] == "rate_limit_exceeded"
    # Streaming requests fail the same way, before any chunk.
    with pytest.raises(exc):
        oai.chat.completions.create(model=f"mock-error-{status}", messages=user("hi"), stream=True)
    assert len(mock.requests) == 2


def test_header_behaviour_wins_over_model_name(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(
            model="mock-error-500",
            messages=user("hi"),
            extra_headers={"x-mock-behaviour": "error-429"},
        )
    r = oai.chat.completions.create(
        model="mock-error-500", messages=user("hi"), extra_headers={"x-mock-behaviour": "none"}
    )
    assert r.choices[0].finish_reason == "stop"


def test_bad_key_is_refused_in_each_format(mock: MockServer) -> None:
    with openai.OpenAI(base_url=mock.url + "/v1", api_key="bad-key", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            client.chat.completions.create(model="m", messages=user("hi"))
        assert isinstance(info.value.body, dict) and info.value.body["code"] == "invalid_api_key"
    with anthropic.Anthropic(base_url=mock.url, api_key="bad-key", max_retries=0) as client2:
        with pytest.raises(anthropic.AuthenticationError) as info2:
            client2.messages.create(model="c", max_tokens=10, messages=user("hi"))
        assert info2.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    status, _, raw = gemini(mock, "g", body, query="?key=bad-key")
    assert status == 401 and json.loads(raw)["error"]["status"] == "UNAUTHENTICATED"
    assert mock.requests[-1].query == {"key": "bad-key"}
    status, _, _ = http(
        f"{mock.url}/v1beta/models/g:generateContent", body, headers={"x-goog-api-key": "bad-key"}
    )
    assert status == 401


def test_openai_midstream_error(oai: openai.OpenAI) -> None:
    received: list[str] = []
    with (
        pytest.raises(openai.APIError, match="midstream-error"),
        oai.chat.completions.create(
            model="mock-midstream-error", messages=user("hi"), stream=True
        ) as stream,
    ):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert len([t for t in received if t]) == 2
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="mock-midstream-error", messages=user("hi"))


def test_openai_context_length_error(oai: openai.OpenAI) -> None:
    long = "word " * 100  # 500 characters: 125 tokens
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="mock-ctx-100", messages=user(long))
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "context_length_exceeded"
    assert "This model's maximum context length is 100 tokens" in body["message"]
    assert "resulted in 125 tokens" in body["message"]
    with pytest.raises(openai.BadRequestError, match=r"you requested 108 tokens"):
        oai.chat.completions.create(model="mock-ctx-100", messages=user(QUESTION), max_tokens=100)
    ok = oai.chat.completions.create(model="mock-ctx-100", messages=user(QUESTION))
    assert ok.choices[0].finish_reason == "stop"


def test_openai_invalid_requests_are_400_not_500(mock: MockServer, oai: openai.OpenAI) -> None:
    url = mock.url + "/v1/chat/completions"
    status, _, raw = http(url, raw=b"{not json")
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, raw = http(url, {"model": "m"})
    assert status == 400 and json.loads(raw)["error"]["param"] == "messages"
    status, _, raw = http(url, {"messages": user("hi")})
    assert status == 400 and "model" in json.loads(raw)["error"]["message"]
    for bad in (
        {"model": "m", "messages": "hi"},
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        {"model": "m", "messages": user("hi"), "max_tokens": 0},
        {"model": "m", "messages": user("hi"), "stream_options": {"include_usage": True}},
        {"model": "m", "messages": user("hi"), "tools": [{"type": "function", "function": {}}]},
        [1, 2],
    ):
        status, _, raw = http(url, bad)
        assert status == 400, bad
        assert set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError, match="empty array"):
        oai.chat.completions.create(model="m", messages=[])
    status, _, raw = http(mock.url + "/v1/nope", {})
    assert status == 404 and "Invalid URL" in json.loads(raw)["error"]["message"]


def test_openai_embeddings(oai: openai.OpenAI, mock: MockServer) -> None:
    r = oai.embeddings.create(
        model="text-embedding-3-small",
        input=["the capital of France", "the capital of France", "the capital of Spain", "x"],
        encoding_format="float",
    )
    vectors = np.array([d.embedding for d in r.data])
    assert vectors.shape == (4, 1536)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[1])
    assert vectors[0] @ vectors[2] > 0.5 > abs(vectors[0] @ vectors[3])
    assert r.usage.prompt_tokens == 2 * count_tokens(21) + count_tokens(20) + 1
    small = oai.embeddings.create(model="text-embedding-3-large", input="hi", dimensions=64)
    assert len(small.data[0].embedding) == 64
    # The SDK asks for base64 by default and decodes it: the wire form must round-trip.
    default = oai.embeddings.create(model="text-embedding-3-small", input="the capital of France")
    assert mock.requests[-1].body["encoding_format"] == "base64"
    assert np.allclose(default.data[0].embedding, vectors[0], atol=1e-6)
    raw = oai.embeddings.create(
        model="text-embedding-3-small", input="the capital of France", encoding_format="base64"
    )
    encoded: Any = raw.data[0].embedding
    assert isinstance(encoded, str)  # asked for explicitly, base64 reaches the caller as is
    assert np.allclose(np.frombuffer(base64.b64decode(encoded), dtype="<f4"), vectors[0])
    with pytest.raises(openai.BadRequestError, match="context length is 3 tokens"):
        oai.embeddings.create(model="emb-ctx-3", input="a longer text than three tokens")


def test_openai_models_list(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "mock-gpt" in ids and "text-embedding-3-small" in ids


# --- Anthropic ---------------------------------------------------------------------------------


def test_anthropic_message_matches_openai_counts(
    claude: anthropic.Anthropic, oai: openai.OpenAI
) -> None:
    msg = claude.messages.create(
        model="mock-x", max_tokens=100, system="Be brief.", messages=user(QUESTION)
    )
    ref = oai.chat.completions.create(
        model="mock-x",
        messages=[{"role": "system", "content": "Be brief."}, *user(QUESTION)],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text"
    assert msg.content[0].text == ref.choices[0].message.content
    assert ref.usage is not None
    assert msg.usage.input_tokens == ref.usage.prompt_tokens == count_tokens(9 + len(QUESTION))
    assert msg.usage.output_tokens == ref.usage.completion_tokens


def test_anthropic_stream_event_sequence(claude: anthropic.Anthropic, mock: MockServer) -> None:
    body = {"model": "mock-x", "max_tokens": 100, "messages": user(QUESTION), "stream": True}
    status, headers, raw = http(
        mock.url + "/v1/messages", body, headers={"anthropic-version": "2023-06-01"}
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [
        line[len("event: ") :] for line in raw.decode().splitlines() if line.startswith("event:")
    ]
    deltas = events.count("content_block_delta")
    assert deltas > 2
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    with claude.messages.stream(model="mock-x", max_tokens=100, messages=user(QUESTION)) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    whole = claude.messages.create(model="mock-x", max_tokens=100, messages=user(QUESTION))
    assert text == whole.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == whole.usage.output_tokens == deltas
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.stop_reason == "end_turn"


def test_anthropic_max_tokens(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="c", max_tokens=2, messages=user(QUESTION))
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 2
    with claude.messages.stream(model="c", max_tokens=2, messages=user(QUESTION)) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens"


def test_anthropic_tool_use_and_result(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model="c", max_tokens=100, tools=ANTHROPIC_TOOLS, messages=user("Weather?")
    )
    assert msg.stop_reason == "tool_use"
    block = msg.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "example", "unit": "celsius"}
    with claude.messages.stream(
        model="c", max_tokens=100, tools=ANTHROPIC_TOOLS, messages=user("Weather?")
    ) as s:
        streamed = s.get_final_message()
    assert streamed.content[0].type == "tool_use"
    assert streamed.content[0].input == block.input
    follow = claude.messages.create(
        model="c",
        max_tokens=100,
        tools=ANTHROPIC_TOOLS,
        messages=[
            *user("Weather?"),
            {"role": "assistant", "content": [block.model_dump()]},  # type: ignore[misc, list-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "21C"}],
            },
        ],
    )
    assert follow.stop_reason == "end_turn"
    assert "get_weather returned 21C" in follow.content[0].text  # type: ignore[union-attr]
    none = claude.messages.create(
        model="c",
        max_tokens=100,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "none"},
        messages=user("Weather?"),
    )
    assert none.stop_reason == "end_turn"


@pytest.mark.parametrize(
    ("status", "exc", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.InternalServerError, "overloaded_error"),
    ],
)
def test_anthropic_error_statuses(
    claude: anthropic.Anthropic, status: int, exc: type[anthropic.APIStatusError], kind: str
) -> None:
    with pytest.raises(exc) as info:
        claude.messages.create(model=f"c-error-{status}", max_tokens=10, messages=user("hi"))
    err = info.value
    assert err.status_code == status
    assert isinstance(err.body, dict) and err.body["type"] == "error"
    assert err.body["error"]["type"] == kind
    assert err.response.headers["request-id"] == err.body["request_id"]
    if status == 429:
        assert err.response.headers["retry-after"] == "0"


def test_anthropic_midstream_error_and_context(claude: anthropic.Anthropic) -> None:
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        claude.messages.stream(model="c-midstream-error", max_tokens=100, messages=user("hi")) as s,
    ):
        texts.extend(s.text_stream)
    assert len(texts) == 2
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="c-ctx-100", max_tokens=10, messages=user("word " * 100))
    assert info.value.body["error"]["message"] == (  # type: ignore[index]
        "prompt is too long: 125 tokens > 100 maximum"
    )
    with pytest.raises(anthropic.BadRequestError, match="exceed context limit: 8 \\+ 95 > 100"):
        claude.messages.create(model="c-ctx-100", max_tokens=95, messages=user(QUESTION))


def test_anthropic_invalid_requests(mock: MockServer) -> None:
    url = mock.url + "/v1/messages"
    for bad, needle in (
        ({"model": "c", "messages": user("hi")}, "max_tokens: Field required"),
        ({"model": "c", "max_tokens": 5}, "messages: Field required"),
        ({"model": "c", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}, "role"),
    ):
        status, _, raw = http(url, bad)
        err = json.loads(raw)
        assert status == 400 and err["type"] == "error", bad
        assert err["error"]["type"] == "invalid_request_error" and needle in err["error"]["message"]
    status, _, raw = http(url, raw=b"\x00garbage")
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, raw = http(url + "/count_tokens", {"model": "c", "messages": user(QUESTION)})
    assert status == 200 and json.loads(raw) == {"input_tokens": 8}


# --- Gemini ------------------------------------------------------------------------------------


def _gemini_body(text: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def test_gemini_generate_matches_openai(mock: MockServer, oai: openai.OpenAI) -> None:
    status, _, raw = gemini(mock, "mock-g", _gemini_body())
    assert status == 200
    data = json.loads(raw)
    cand = data["candidates"][0]
    ref = oai.chat.completions.create(model="mock-g", messages=user(QUESTION))
    assert cand["content"]["role"] == "model" and cand["finishReason"] == "STOP"
    assert cand["content"]["parts"][0]["text"] == ref.choices[0].message.content
    usage = data["usageMetadata"]
    assert ref.usage is not None
    assert usage["promptTokenCount"] == ref.usage.prompt_tokens
    assert usage["candidatesTokenCount"] == ref.usage.completion_tokens
    assert usage["totalTokenCount"] == ref.usage.total_tokens
    assert data["modelVersion"] == "mock-g"


def test_gemini_stream_sse_and_array_forms(mock: MockServer) -> None:
    _, _, whole = gemini(mock, "g", _gemini_body())
    expected = json.loads(whole)["candidates"][0]["content"]["parts"][0]["text"]
    status, headers, raw = gemini(
        mock, "g", _gemini_body(), action="streamGenerateContent", query="?alt=sse"
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    frames = sse_data(raw)
    assert len(frames) > 2
    assert "".join(f["candidates"][0]["content"]["parts"][0]["text"] for f in frames) == expected
    assert frames[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "finishReason" not in frames[0]["candidates"][0]
    assert frames[-1]["usageMetadata"] == json.loads(whole)["usageMetadata"]
    status, headers, raw = gemini(mock, "g", _gemini_body(), action="streamGenerateContent")
    assert status == 200 and headers["content-type"] == "application/json"
    array = json.loads(raw)
    assert isinstance(array, list) and len(array) == len(frames)
    assert "".join(f["candidates"][0]["content"]["parts"][0]["text"] for f in array) == expected


def test_gemini_function_call_and_response(mock: MockServer) -> None:
    status, _, raw = gemini(mock, "g", _gemini_body("Weather?", tools=GEMINI_TOOLS))
    assert status == 200
    part = json.loads(raw)["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"] == {
        "name": "get_weather",
        "args": {"city": "example", "unit": "celsius"},
    }
    _, _, raw = gemini(
        mock, "g", _gemini_body("Weather?", tools=GEMINI_TOOLS), "streamGenerateContent", "?alt=sse"
    )
    assert sse_data(raw)[-1]["candidates"][0]["content"]["parts"][0] == part
    follow = {
        "tools": GEMINI_TOOLS,
        "contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [part]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 21}}}],
            },
        ],
    }
    _, _, raw = gemini(mock, "g", follow)
    text = json.loads(raw)["candidates"][0]["content"]["parts"][0]["text"]
    assert 'the tool get_weather returned {"t":21}' in text


def test_gemini_errors_limits_and_midstream(mock: MockServer) -> None:
    status, headers, raw = gemini(mock, "g-error-429", _gemini_body())
    err = json.loads(raw)["error"]
    assert status == 429 and err["code"] == 429 and err["status"] == "RESOURCE_EXHAUSTED"
    assert headers["retry-after"] == "0"
    status, _, raw = gemini(mock, "g-error-503", _gemini_body())
    assert status == 503 and json.loads(raw)["error"]["status"] == "UNAVAILABLE"
    status, _, raw = gemini(mock, "g-ctx-5", _gemini_body())
    assert status == 400 and json.loads(raw)["error"] == {
        "code": 400,
        "message": "The input token count (8) exceeds the maximum number of tokens allowed (5).",
        "status": "INVALID_ARGUMENT",
    }
    status, _, raw = gemini(mock, "g", {"contents": []})
    assert status == 400 and json.loads(raw)["error"]["status"] == "INVALID_ARGUMENT"
    body = _gemini_body(generationConfig={"maxOutputTokens": 2})
    _, _, raw = gemini(mock, "g", body)
    data = json.loads(raw)
    assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert data["usageMetadata"]["candidatesTokenCount"] == 2
    status, _, raw = gemini(
        mock, "g-midstream-error", _gemini_body(), "streamGenerateContent", "?alt=sse"
    )
    frames = sse_data(raw)
    assert status == 200 and len(frames) == 3 and frames[-1]["error"]["code"] == 500
    _, _, raw = gemini(mock, "g-midstream-error", _gemini_body(), "streamGenerateContent")
    array = json.loads(raw)
    assert len(array) == 3 and array[-1]["error"]["status"] == "INTERNAL"


def test_gemini_embeddings(mock: MockServer) -> None:
    status, _, raw = gemini(
        mock,
        "text-embedding-004",
        {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 32},
        "embedContent",
    )
    values = json.loads(raw)["embedding"]["values"]
    assert status == 200 and len(values) == 32
    assert math.isclose(sum(v * v for v in values), 1.0, rel_tol=1e-5)
    req = {"content": {"parts": [{"text": "hello"}]}}
    _, _, raw = gemini(mock, "text-embedding-004", {"requests": [req, req]}, "batchEmbedContents")
    vectors = json.loads(raw)["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]["values"]) == 768
    assert vectors[0] == vectors[1]


# --- behaviour: flaky, slow, latency -----------------------------------------------------------


def test_flaky_is_deterministic_per_model(oai: openai.OpenAI, mock: MockServer) -> None:
    def outcome(model: str) -> str:
        try:
            oai.chat.completions.create(model=model, messages=user("hi"))
        except openai.InternalServerError as err:
            assert err.status_code == 503
            return "x"
        return "."

    assert "".join(outcome("m-flaky-50") for _ in range(6)) == "x.x.x."
    assert "".join(outcome("m-flaky-30") for _ in range(11)) == "x..x..x...x"
    assert outcome("other-flaky-50") == "x"  # counted per model: its first request fails
    assert "".join(outcome("m-flaky-100") for _ in range(3)) == "xxx"
    assert "".join(outcome("m-flaky-0") for _ in range(3)) == "..."
    assert len(mock.requests) == 6 + 11 + 1 + 3 + 3
    mock.reset()
    assert mock.requests == [] and outcome("m-flaky-50") == "x"


def test_flaky_rule_fails_exactly_p_percent() -> None:
    for pct in (1, 25, 33, 50, 99):
        counters = FlakyCounters()
        fails = [counters.should_fail("m", pct) for _ in range(200)]
        assert fails[0] and sum(fails) == 2 * pct


def test_slow_mode_trips_a_client_timeout(mock: MockServer) -> None:
    with openai.OpenAI(
        base_url=mock.url + "/v1", api_key="x", max_retries=0, timeout=0.2
    ) as client:
        start = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="m-slow-1500", messages=user("hi"))
        assert time.perf_counter() - start < 1.0
        start = time.perf_counter()
        r = client.chat.completions.create(
            model="m", messages=user("hi"), extra_headers={"x-mock-behaviour": "slow-100"}
        )
        assert 0.1 <= time.perf_counter() - start < 0.2
        assert r.choices[0].finish_reason == "stop"


def test_latency_headers_pace_the_stream(oai: openai.OpenAI) -> None:
    start = time.perf_counter()
    arrivals: list[float] = []
    with oai.chat.completions.create(
        model="m",
        messages=user(QUESTION),
        stream=True,
        extra_headers={"x-mock-ttft-ms": "100", "x-mock-tokens-per-s": "200"},
    ) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter() - start)
    assert arrivals[0] >= 0.1
    # n tokens at 200/s: the last arrives (n - 1) * 5 ms after the first.
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * 0.005 * 0.9
    with pytest.raises(openai.BadRequestError, match="x-mock-ttft-ms"):
        oai.chat.completions.create(
            model="m", messages=user("hi"), extra_headers={"x-mock-ttft-ms": "soon"}
        )


def test_app_level_ttft_delays_non_stream_answers() -> None:
    with (
        MockServer(ttft=0.15) as m,
        openai.OpenAI(base_url=m.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        start = time.perf_counter()
        client.chat.completions.create(model="m", messages=user("hi"))
        assert time.perf_counter() - start >= 0.15


def test_behaviour_parsing_rules() -> None:
    assert behaviour_for("gpt-4o", None) == Behaviour()
    b = behaviour_for("mock-slow-200-flaky-30-ctx-4096", None)
    assert (b.slow_ms, b.flaky, b.ctx, b.error, b.midstream) == (200, 30, 4096, None, False)
    assert behaviour_for("m-midstream-error", None) == Behaviour(midstream=True)
    assert behaviour_for("m-error-4290", None).error is None
    assert behaviour_for("m-terror-500", None).error is None
    header = behaviour_for("mock-error-500-slow-50", "error-429")
    assert (header.error, header.slow_ms) == (429, 50)
    assert behaviour_for("mock-error-500", "none") == Behaviour()
    assert behaviour_for("m-truncate", None) == Behaviour(truncate=True)
    both = behaviour_for("m-no-usage", "echo-headers")
    assert both == Behaviour(no_usage=True, echo_headers=True)
    assert behaviour_for("m-no-usage", "none") == Behaviour()
    assert behaviour_for("m-untruncated-no-usages", None) == Behaviour()


def test_truncated_and_usage_less_streams_over_the_sdk(oai: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    cut = list(oai.chat.completions.create(model="sim-truncate", messages=messages, stream=True))
    assert len(cut) == 3  # the role chunk and two content chunks, then the body just ends
    assert all(c.choices[0].finish_reason is None for c in cut)
    plain = list(
        oai.chat.completions.create(
            model="sim-no-usage",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason == "stop"


def test_echo_headers_puts_the_request_headers_in_error_bodies(mock: MockServer) -> None:
    with (
        openai.OpenAI(base_url=mock.url + "/v1", api_key="sk-echo-me", max_retries=0) as c,
        pytest.raises(openai.BadRequestError) as info,
    ):
        c.chat.completions.create(
            model="sim-error-400-echo-headers", messages=[{"role": "user", "content": "x"}]
        )
    assert "authorization: Bearer sk-echo-me" in info.value.message


# --- the journal, the app and serve_mock -------------------------------------------------------


def test_journal_records_attempts(oai: openai.OpenAI, mock: MockServer) -> None:
    oai.chat.completions.create(model="m", messages=user("hi"), extra_headers={"x-tenant": "acme"})
    status, _, _ = http(mock.url + "/health")
    assert status == 200
    [rec] = mock.requests
    assert (rec.method, rec.path, rec.model, rec.stream) == (
        "POST",
        "/v1/chat/completions",
        "m",
        False,
    )
    assert rec.headers["x-tenant"] == "acme"
    assert rec.headers["authorization"] == "Bearer x"
    assert rec.body["messages"] == user("hi")
    assert mock.request_count == 1


async def test_asgi_app_directly() -> None:
    app = create_mock_app()
    sent: list[dict[str, Any]] = []
    inbox = [
        {
            "type": "http.request",
            "body": json.dumps({"model": "m", "messages": user("hi")}).encode(),
        }
    ]

    async def receive() -> Any:
        if inbox:
            return inbox.pop(0)
        await asyncio.sleep(3600)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["object"] == "chat.completion"
    life = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    replies: list[dict[str, Any]] = []

    async def life_receive() -> Any:
        return life.pop(0)

    async def life_send(message: Any) -> None:
        replies.append(message)

    await app({"type": "lifespan"}, life_receive, life_send)
    assert [r["type"] for r in replies] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_serve_mock_until_cancelled() -> None:
    port = free_port()
    task = asyncio.create_task(serve_mock("127.0.0.1", port))
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    assert resp.status == 200
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("serve_mock never answered /health")
        async with session.post(
            f"http://127.0.0.1:{port}/v1/messages",
            json={"model": "c", "max_tokens": 5, "messages": user("hi")},
        ) as resp:
            assert (await resp.json())["stop_reason"] == "max_tokens"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
