"""OpenAI <-> Anthropic Messages translation of the outbound provider (no network).

Fixtures follow the documented wire formats; translated requests are checked against the
anthropic SDK's own request TypedDicts, translated responses and chunks against the openai
SDK's models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from anthropic.types import message_create_params
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from routeguard.errors import (
    ContextWindowExceeded,
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamServerError,
)
from routeguard.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    ERRORS,
    AnthropicProvider,
    StreamDecoder,
    parse_data_url,
    request_to_anthropic,
    response_from_anthropic,
)
from routeguard.providers.http import HttpResponse

_PARAMS = pydantic.TypeAdapter(message_create_params.MessageCreateParamsNonStreaming)
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


def _force(v: Any) -> Any:
    # pydantic validates Iterable fields lazily: walk them so every error surfaces.
    if isinstance(v, dict):
        return {k: _force(x) for k, x in v.items()}
    if isinstance(v, list | tuple | Iterator):
        return [_force(x) for x in v]
    return v


def assert_valid_anthropic_request(body: dict[str, Any]) -> None:
    _force(_PARAMS.validate_python(body))


# --------------------------------------------------------------------------- request


def test_minimal_request_gets_model_and_default_max_tokens() -> None:
    body = request_to_anthropic({"messages": [{"role": "user", "content": "Hi"}]}, "claude-x")
    assert body == {
        "model": "claude-x",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    assert_valid_anthropic_request(body)


def test_system_and_developer_messages_are_hoisted() -> None:
    body = request_to_anthropic(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hi"},
            ]
        },
        "m",
    )
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


def test_cache_control_on_system_parts_keeps_block_form() -> None:
    part = {"type": "text", "text": "Long policy", "cache_control": {"type": "ephemeral"}}
    body = request_to_anthropic(
        {"messages": [{"role": "system", "content": [part]}, {"role": "user", "content": "q"}]},
        "m",
    )
    assert body["system"] == [part]
    assert_valid_anthropic_request(body)


def test_generation_parameters() -> None:
    body = request_to_anthropic(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "user": "user-42",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "m",
    )
    assert body["max_tokens"] == 20  # max_completion_tokens wins
    assert body["temperature"] == 0.2
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-42"}
    assert "stream" not in body and "stream_options" not in body
    assert_valid_anthropic_request(body)


def test_image_parts_become_image_blocks() -> None:
    body = request_to_anthropic(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ]
        },
        "m",
    )
    blocks = body["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }
    assert_valid_anthropic_request(body)


def test_pdf_file_part_becomes_document_block() -> None:
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
    }
    body = request_to_anthropic({"messages": [{"role": "user", "content": [part]}]}, "m")
    assert body["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        }
    ]
    assert_valid_anthropic_request(body)


def _tool_conversation() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"},
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": [{"type": "text", "text": "3C snow"}],
        },
        {"role": "user", "content": "Which is warmer?"},
    ]


def test_tool_calls_and_results() -> None:
    body = request_to_anthropic({"messages": _tool_conversation(), "tools": [WEATHER_TOOL]}, "m")
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            # both results and the follow-up question share one user turn, results first
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "3C snow"}],
                },
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert "tool_choice" not in body
    assert_valid_anthropic_request(body)


def test_consecutive_same_role_messages_are_merged_and_empty_ones_dropped() -> None:
    body = request_to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": "two"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": "three"}]},
            ]
        },
        "m",
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
                {"type": "text", "text": "three"},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: Any) -> None:
    req: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL]}
    if choice is not None:
        req["tool_choice"] = choice
    if parallel is not None:
        req["parallel_tool_calls"] = parallel
    body = request_to_anthropic(req, "m")
    assert body.get("tool_choice") == expected
    assert_valid_anthropic_request(body)


def test_tool_choice_without_tools_is_dropped() -> None:
    body = request_to_anthropic(
        {"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}, "m"
    )
    assert "tool_choice" not in body and "tools" not in body


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        ({"messages": "hi"}, "'messages' must be a list"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role 'function'"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0]: content part type 'input_audio'",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments is not valid JSON",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id is missing"),
        ({"messages": [], "n": 2}, "n > 1"),
        ({"messages": [], "tools": [{"type": "code_interpreter"}]}, "tools[0]"),
    ],
)
def test_untranslatable_requests_raise_bad_request(request_: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UpstreamBadRequest) as info:
        request_to_anthropic(request_, "m")
    assert fragment in info.value.message
    assert info.value.retryable is False


def test_parse_data_url() -> None:
    assert parse_data_url(f"data:image/png;base64,{PNG}") == ("image/png", PNG)
    assert parse_data_url("data:image/jpeg;name=a.jpg;base64,AAAA") == ("image/jpeg", "AAAA")
    assert parse_data_url("https://example.com/a.png") is None
    assert parse_data_url("data:text/plain,hello") is None


# --------------------------------------------------------------------------- response

MESSAGE_WITH_TOOL = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": "I'll check the weather."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"city": "Paris", "unit": "c"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 120,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 50,
        "output_tokens": 40,
    },
}


def test_response_with_text_and_tool_use() -> None:
    out = response_from_anthropic(MESSAGE_WITH_TOOL)
    ChatCompletion.model_validate(out)
    choice = out["choices"][0]
    assert out["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert out["model"] == "claude-sonnet-4-5-20250929"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather."
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "c"}
    assert out["usage"] == {
        "prompt_tokens": 200,
        "completion_tokens": 40,
        "total_tokens": 240,
        "prompt_tokens_details": {"cached_tokens": 50, "cache_creation_tokens": 30},
    }


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reason_map(stop: str | None, finish: str) -> None:
    msg = {**MESSAGE_WITH_TOOL, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    assert response_from_anthropic(msg)["choices"][0]["finish_reason"] == finish


def test_tool_only_response_has_null_content_and_thinking_is_skipped() -> None:
    msg = {
        **MESSAGE_WITH_TOOL,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            MESSAGE_WITH_TOOL["content"][1],  # type: ignore[index]
        ],
    }
    out = response_from_anthropic(msg)
    ChatCompletion.model_validate(out)
    assert out["choices"][0]["message"]["content"] is None


# --------------------------------------------------------------------------- stream


def _sse(events: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    return [(e["type"], json.dumps(e).encode()) for e in events]


STREAM_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 472,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 100,
                "output_tokens": 2,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay"}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": ", checking."},
    },
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_01T1x",
            "name": "get_weather",
            "input": {},
        },
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": "San'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ' Francisco"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {"type": "message_stop"},
]


def _decode_all(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    decoder = StreamDecoder()
    chunks: list[dict[str, Any]] = []
    for event, data in _sse(events):
        chunks.extend(decoder.feed(event, data))
    assert decoder.done
    return chunks


def test_stream_events_become_openai_chunks() -> None:
    chunks = _decode_all(STREAM_EVENTS)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1:3] == [{"content": "Okay"}, {"content": ", checking."}]
    assert deltas[3] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_01T1x",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d)
    assert json.loads(args) == {"city": "San Francisco"}
    final, usage = chunks[-2], chunks[-1]
    assert final["choices"][0]["finish_reason"] == "tool_calls"
    assert final["choices"][0]["delta"] == {}
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 572
    assert usage["usage"]["completion_tokens"] == 89
    assert usage["usage"]["prompt_tokens_details"]["cached_tokens"] == 100
    assert {c["id"] for c in chunks} == {"msg_014p7gG3wDgGV9EUtLvnow3U"}


def test_two_tool_blocks_get_consecutive_tool_indexes() -> None:
    events = [
        STREAM_EVENTS[0],
        *[
            {**e, "index": i}
            for i in (0, 1)
            for e in (
                {
                    "type": "content_block_start",
                    "content_block": {
                        "type": "tool_use",
                        "id": f"toolu_{i}",
                        "name": "f",
                        "input": {},
                    },
                },
                {
                    "type": "content_block_delta",
                    "delta": {"type": "input_json_delta", "partial_json": "{}"},
                },
                {"type": "content_block_stop"},
            )
        ],
        STREAM_EVENTS[-2],
        STREAM_EVENTS[-1],
    ]
    chunks = _decode_all(events)
    calls = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [(tc["index"], tc.get("id")) for tc in calls] == [
        (0, "toolu_0"),
        (0, None),
        (1, "toolu_1"),
        (1, None),
    ]


@pytest.mark.parametrize(
    ("etype", "cls", "retryable"),
    [
        ("overloaded_error", UpstreamServerError, True),
        ("api_error", UpstreamServerError, True),
        ("rate_limit_error", UpstreamRateLimited, True),
        ("invalid_request_error", UpstreamBadRequest, False),
    ],
)
def test_error_event_mid_stream_raises(
    etype: str, cls: type[ProviderError], retryable: bool
) -> None:
    decoder = StreamDecoder()
    decoder.feed("message_start", json.dumps(STREAM_EVENTS[0]).encode())
    err = {"type": "error", "error": {"type": etype, "message": "Overloaded"}}
    with pytest.raises(cls) as info:
        decoder.feed("error", json.dumps(err).encode())
    assert info.value.retryable is retryable
    assert info.value.detail.startswith("Overloaded")  # the upstream's words, for logs
    # A caller reads them only when its own request was refused.
    assert ("Overloaded" in info.value.message) is (cls is UpstreamBadRequest)


# --------------------------------------------------------------------------- errors


def _err(etype: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_011"}


@pytest.mark.parametrize(
    ("status", "body", "cls", "retryable"),
    [
        (529, _err("overloaded_error", "Overloaded"), UpstreamServerError, True),
        (500, _err("api_error", "Internal server error"), UpstreamServerError, True),
        (
            429,
            _err(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
            UpstreamRateLimited,
            True,
        ),
        (401, _err("authentication_error", "invalid x-api-key"), UpstreamAuthError, False),
        (404, _err("not_found_error", "model: claude-nope"), UpstreamNotFound, False),
        (
            400,
            _err("invalid_request_error", "messages: at least one message is required"),
            UpstreamBadRequest,
            False,
        ),
        (
            400,
            _err("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
            ContextWindowExceeded,
            False,
        ),
        (
            400,
            _err(
                "invalid_request_error",
                "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000, "
                "decrease input length or `max_tokens` and try again",
            ),
            ContextWindowExceeded,
            False,
        ),
        (502, None, UpstreamServerError, True),
    ],
)
def test_error_bodies(status: int, body: Any, cls: type[ProviderError], retryable: bool) -> None:
    err = ERRORS.from_body(status, body)
    assert type(err) is cls
    assert err.retryable is retryable
    said = f"upstream status {status}" if body is None else body["error"]["message"]
    assert err.detail.startswith(said)
    if issubclass(cls, UpstreamBadRequest):
        assert err.message == said  # the caller's own request: it needs the reason
    else:
        assert said not in err.message and str(status) in err.message


def test_error_from_response_reads_retry_after_and_survives_html() -> None:
    resp = HttpResponse(
        429, {"retry-after": "7"}, json.dumps(_err("rate_limit_error", "slow down")).encode()
    )
    err = ERRORS.from_response(resp)
    assert isinstance(err, UpstreamRateLimited) and err.retry_after == 7.0
    html = ERRORS.from_response(HttpResponse(503, {}, b"<html>Service Unavailable</html>"))
    assert isinstance(html, UpstreamServerError) and html.detail == "upstream status 503"
    assert html.message == "the upstream failed (status 503)"


async def test_embed_is_refused() -> None:
    from routeguard.config import Deployment

    dep = Deployment(
        id="a", alias="a", provider="anthropic", model="claude", api_base="http://x", api_key=None
    )
    with pytest.raises(UpstreamBadRequest, match="no embeddings endpoint"):
        await AnthropicProvider().embed({"input": "x"}, dep, 1.0)
