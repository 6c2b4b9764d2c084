"""The proxy's inbound ``/v1/messages`` translation: validation, request/response/stream
shapes checked against the official anthropic SDK types and client, round trips with the
outbound Anthropic provider, and error bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from openai.types.chat import completion_create_params

from routeguard.errors import (
    AllAttemptsFailed,
    Attempt,
    AuthenticationError,
    InvalidRequest,
    ModelNotFound,
    RequestTooLarge,
    RouteguardError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from routeguard.providers.anthropic import (
    StreamDecoder,
    request_to_anthropic,
    response_from_anthropic,
)
from routeguard.server.messages import (
    AnthropicStreamEncoder,
    anthropic_request_to_openai,
    error_to_anthropic,
    openai_response_to_anthropic,
)

EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
OPENAI_PARAMS = pydantic.TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def _force(v: Any) -> Any:
    # pydantic validates Iterable fields lazily: walk them so every error surfaces.
    if isinstance(v, dict):
        return {k: _force(x) for k, x in v.items()}
    if isinstance(v, list | tuple | Iterator):
        return [_force(x) for x in v]
    return v


def _base(**kw: Any) -> dict[str, Any]:
    return {
        "model": "claude-x",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hi"}],
        **kw,
    }


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"max_tokens": 5, "messages": []}, "model", "model: field required"),
        ({"model": "m", "messages": []}, "max_tokens", "max_tokens: field required"),
        ({"model": "m", "max_tokens": 5}, "messages", "messages: field required"),
        (_base(model=3), "model", "model: expected a string, got int"),
        (_base(max_tokens="100"), "max_tokens", "max_tokens: expected an integer, got str"),
        (_base(max_tokens=True), "max_tokens", "max_tokens: expected an integer, got bool"),
        (_base(max_tokens=0), "max_tokens", "max_tokens: must be at least 1, got 0"),
        (
            _base(messages={"role": "user"}),
            "messages",
            "messages: expected a list of messages, got dict",
        ),
        (_base(messages=["hi"]), "messages.0", "messages.0: expected an object, got str"),
        (
            _base(messages=[{"role": "system", "content": "x"}]),
            "messages.0.role",
            "messages.0.role: expected 'user' or 'assistant', got 'system'",
        ),
        (
            _base(messages=[{"role": "user"}]),
            "messages.0.content",
            "messages.0.content: field required",
        ),
        (
            _base(messages=[{"role": "user", "content": 5}]),
            "messages.0.content",
            "messages.0.content: expected a string or a list, got int",
        ),
        (
            _base(messages=[{"role": "user", "content": [{"type": "video"}]}]),
            "messages.0.content.0.type",
            "messages.0.content.0.type: unsupported block type 'video' here",
        ),
        (
            _base(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}],
                    }
                ]
            ),
            "messages.0.content.0.type",
            "unsupported block type 'tool_use' here "
            "(expected one of text, image, document, tool_result)",
        ),
        (
            _base(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages.0.content.0.text",
            "messages.0.content.0.text: field required",
        ),
        (
            _base(
                messages=[
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "{}"}],
                    }
                ]
            ),
            "messages.0.content.0.input",
            "messages.0.content.0.input: expected an object, got str",
        ),
        (
            _base(
                messages=[{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]
            ),
            "messages.0.content.0.tool_use_id",
            "messages.0.content.0.tool_use_id: field required",
        ),
        (
            _base(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            ),
            "messages.0.content.0.source.type",
            "expected 'base64' or 'url', got 'file'",
        ),
        (_base(temperature="hot"), "temperature", "temperature: expected a number, got str"),
        (
            _base(stop_sequences=["a", 1]),
            "stop_sequences.1",
            "stop_sequences.1: expected a string, got int",
        ),
        (_base(system=42), "system", "system: expected a string or a list of text blocks, got int"),
        (
            _base(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
            "tools.0.type",
            "server tool 'web_search_20250305' is not supported",
        ),
        (
            _base(tools=[{"name": "f"}]),
            "tools.0.input_schema",
            "tools.0.input_schema: field required",
        ),
        (
            _base(tools=[{"name": "f", "input_schema": SCHEMA}], tool_choice={"type": "sometimes"}),
            "tool_choice.type",
            "expected 'auto', 'any', 'tool' or 'none', got 'sometimes'",
        ),
        (
            _base(tools=[{"name": "f", "input_schema": SCHEMA}], tool_choice={"type": "tool"}),
            "tool_choice.name",
            "tool_choice.name: field required",
        ),
    ],
)
def test_invalid_requests_name_the_field(body: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        anthropic_request_to_openai(body)
    assert info.value.param == param
    assert message in info.value.message
    assert info.value.status_code == 400


# --------------------------------------------------------------------------- request

FULL_REQUEST: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are a weather bot."}],
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "tools": [{"name": "get_weather", "description": "Weather by city", "input_schema": SCHEMA}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "metadata": {"user_id": "u-1"},
}


def test_full_request_translation() -> None:
    out = anthropic_request_to_openai(FULL_REQUEST)
    assert out == {
        "model": "claude-x",
        "max_completion_tokens": 1024,
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_01",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "stop": ["\n\nHuman:"],
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u-1",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": SCHEMA,
                    "description": "Weather by city",
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    _force(OPENAI_PARAMS.validate_python(out))


def test_stream_flag_asks_for_usage() -> None:
    out = anthropic_request_to_openai(_base(stream=True))
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert "stream" not in anthropic_request_to_openai(_base(stream=False))


def test_images_documents_and_tool_result_images() -> None:
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    out = anthropic_request_to_openai(
        _base(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "chart:"}, img],
                        },
                        {"type": "text", "text": "Describe both."},
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/a.jpg"},
                        },
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBE",
                            },
                            "title": "report.pdf",
                        },
                    ],
                }
            ]
        )
    )
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "chart:"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "text", "text": "Describe both."},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {
                    "type": "file",
                    "file": {
                        "file_data": "data:application/pdf;base64,JVBE",
                        "filename": "report.pdf",
                    },
                },
            ],
        },
    ]
    _force(OPENAI_PARAMS.validate_python(out))


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    out = anthropic_request_to_openai(
        _base(tools=[{"name": "f", "input_schema": SCHEMA}], tool_choice=choice)
    )
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_request_round_trip_through_the_outbound_provider() -> None:
    original = {k: v for k, v in FULL_REQUEST.items() if k != "top_k"}  # top_k has no OpenAI twin
    again = request_to_anthropic(anthropic_request_to_openai(original), "claude-x")
    assert again == {**original, "system": "You are a weather bot."}


# --------------------------------------------------------------------------- response

OPENAI_TOOL_RESPONSE = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me look.",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 17,
        "total_tokens": 99,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    },
}


def test_response_is_a_valid_sdk_message() -> None:
    out = openai_response_to_anthropic(OPENAI_TOOL_RESPONSE, "claude-x")
    msg = Message.model_validate(out)
    assert out == {
        "id": "msg_B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Let me look."},
            {
                "type": "tool_use",
                "id": "call_abc123",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 18,
            "output_tokens": 17,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 64,
        },
    }
    assert msg.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stop_reason_map(finish: str | None, stop: str) -> None:
    resp = {
        "id": "x",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": finish}
        ],
    }
    out = openai_response_to_anthropic(resp, "m")
    Message.model_validate(out)
    assert out["stop_reason"] == stop


def test_tool_calls_with_stop_finish_still_say_tool_use_and_bad_args_become_empty() -> None:
    resp = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": '},
                        }
                    ],
                },
                "finish_reason": "stop",
            }
        ],
    }
    out = openai_response_to_anthropic(resp, "m")
    Message.model_validate(out)
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]
    assert out["usage"]["input_tokens"] == 0


def test_response_round_trip_through_the_outbound_provider() -> None:
    original = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "I'll check."},
            {
                "type": "tool_use",
                "id": "toolu_01A",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 120,
            "output_tokens": 40,
            "cache_creation_input_tokens": 30,
            "cache_read_input_tokens": 50,
        },
    }
    assert openai_response_to_anthropic(response_from_anthropic(original), "claude-x") == original


# --------------------------------------------------------------------------- stream


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    chunk.update(extra)
    return chunk


OPENAI_STREAM = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"content": "Let me"}),
    _chunk({"content": " check."}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz"'},
                }
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 1, "function": {"arguments": ': "CET"}'}}]}),
    _chunk({}, "tool_calls"),
    _chunk(
        None,
        usage={
            "prompt_tokens": 90,
            "completion_tokens": 33,
            "total_tokens": 123,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    ),
]


def _frames(raw: bytes) -> list[dict[str, Any]]:
    """Parse SSE bytes, checking that each frame's event name matches its data's type."""
    events = []
    assert raw.endswith(b"\n\n")
    for frame in raw.decode().split("\n\n")[:-1]:
        name_line, data_line = frame.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == name_line[len("event: ") :]
        events.append(data)
    return events


def _encode(chunks: list[dict[str, Any]], model: str = "claude-x") -> bytes:
    enc = AnthropicStreamEncoder(model)
    return b"".join(enc.feed(c) for c in chunks) + enc.finish()


def test_stream_frames_are_valid_sdk_events() -> None:
    events = _frames(_encode(OPENAI_STREAM))
    for e in events:
        EVENT.validate_python(e)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["id"] == "msg_123"
    assert events[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {},
    }
    assert [e["index"] for e in events if e["type"] == "content_block_start"] == [0, 1, 2]
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2]["usage"] == {
        "input_tokens": 80,
        "output_tokens": 33,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 10,
    }


def _sdk_client(handler: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-test",
        base_url="http://proxy.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )


def test_official_sdk_reads_our_stream() -> None:
    body = _encode(OPENAI_STREAM)

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with (
        _sdk_client(handler) as client,
        client.messages.stream(
            model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Let me check."
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert final.content[2].input == {"tz": "CET"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 33
    assert final.usage.input_tokens == 80


def test_official_sdk_reads_our_message_and_errors() -> None:
    def ok(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, json=openai_response_to_anthropic(OPENAI_TOOL_RESPONSE, "claude-x")
        )

    with _sdk_client(ok) as client:
        msg = client.messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert msg.content[0].type == "text"

    err = UpstreamRateLimited("slow down")

    def limited(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(err.status_code, json=error_to_anthropic(err))

    with _sdk_client(limited) as client, pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }


def test_text_only_stream_and_finish_without_usage() -> None:
    events = _frames(
        _encode([_chunk({"role": "assistant"}), _chunk({"content": "Hi"}), _chunk({}, "length")])
    )
    for e in events:
        EVENT.validate_python(e)
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"]["output_tokens"] == 0


def test_empty_stream_still_makes_a_valid_message() -> None:
    enc = AnthropicStreamEncoder("claude-x", message_id="msg_fixed")
    events = _frames(enc.finish())
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert events[0]["message"]["id"] == "msg_fixed"
    assert enc.finish() == b""  # idempotent


def test_error_frame() -> None:
    enc = AnthropicStreamEncoder("claude-x")
    enc.feed(_chunk({"content": "par"}))
    (event,) = _frames(enc.error(UpstreamServerError("upstream broke")))
    assert event == {"type": "error", "error": {"type": "api_error", "message": "upstream broke"}}
    ErrorResponse.model_validate(event)


def test_stream_round_trip_anthropic_events_through_the_gateway_shape() -> None:
    """Anthropic SSE -> outbound StreamDecoder -> OpenAI chunks -> inbound encoder -> Anthropic
    SSE: the same blocks and deltas come out (ping dropped; usage moves to message_delta)."""
    original: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": " 1}"},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {"type": "message_stop"},
    ]
    decoder = StreamDecoder()
    encoder = AnthropicStreamEncoder("claude-x")
    out = b""
    for e in original:
        for chunk in decoder.feed(e["type"], json.dumps(e).encode()):
            out += encoder.feed(chunk)
    out += encoder.finish()
    events = _frames(out)
    expected = [e for e in original if e["type"] != "ping"]
    assert events[1:-2] == expected[1:-2]
    assert events[0]["message"]["id"] == "msg_01"
    assert events[-2]["delta"] == expected[-2]["delta"]
    assert events[-2]["usage"]["input_tokens"] == 25
    assert events[-2]["usage"]["output_tokens"] == 15


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("err", "etype", "sdk_knows"),
    [
        (InvalidRequest("bad"), "invalid_request_error", True),
        (AuthenticationError("who?"), "authentication_error", True),
        (ModelNotFound("no model"), "not_found_error", True),
        (RequestTooLarge("too big"), "request_too_large", False),
        (UpstreamRateLimited("slow"), "rate_limit_error", True),
        (UpstreamServerError("boom"), "api_error", True),
        (UpstreamTimeout("late"), "timeout_error", True),
        (AllAttemptsFailed("m", [Attempt("m", "d", UpstreamServerError("x"))]), "api_error", True),
        (
            AllAttemptsFailed("m", [Attempt("m", "d", UpstreamRateLimited("x"))]),
            "rate_limit_error",
            True,
        ),
    ],
)
def test_error_to_anthropic(err: RouteguardError, etype: str, sdk_knows: bool) -> None:
    body = error_to_anthropic(err)
    assert body == {"type": "error", "error": {"type": etype, "message": err.message}}
    if sdk_knows:  # request_too_large is documented but missing from the SDK's union
        ErrorResponse.model_validate(body)


def test_error_type_for_other_statuses() -> None:
    err = RouteguardError("x")
    err.status_code = 529
    assert error_to_anthropic(err)["error"]["type"] == "overloaded_error"
    err.status_code = 403
    assert error_to_anthropic(err)["error"]["type"] == "permission_error"
    err.status_code = 418
    assert error_to_anthropic(err)["error"]["type"] == "invalid_request_error"
    err.status_code = 503
    assert error_to_anthropic(err)["error"]["type"] == "api_error"


def test_tool_deltas_that_repeat_the_id_stay_one_block() -> None:
    call = {"index": 0, "id": "call_1", "type": "function"}
    chunks = [
        _chunk({"tool_calls": [{**call, "function": {"name": "f", "arguments": '{"a"'}}]}),
        _chunk({"tool_calls": [{**call, "function": {"arguments": ": 1}"}}]}),
        _chunk({}, "tool_calls"),
    ]
    events = _frames(_encode(chunks))
    assert [e["type"] for e in events].count("content_block_start") == 1
    partial = "".join(
        e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
    )
    assert json.loads(partial) == {"a": 1}
