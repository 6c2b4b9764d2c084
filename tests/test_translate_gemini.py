"""OpenAI <-> Gemini generateContent / batchEmbedContents translation (no network).

Fixtures follow the documented v1beta REST shapes; translated responses and chunks are
checked against the openai SDK's models.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from openai.types import CreateEmbeddingResponse
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
from routeguard.providers.gemini import (
    EMBED_BATCH,
    ERRORS,
    SKIP_THOUGHT_SIGNATURE,
    StreamDecoder,
    embed_requests,
    embeddings_to_openai,
    model_path,
    request_to_gemini,
    response_from_gemini,
)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA},
}


# --------------------------------------------------------------------------- request


def test_basic_request() -> None:
    body = request_to_gemini(
        {
            "model": "alias",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
            ],
            "max_tokens": 100,
            "temperature": 0.3,
            "top_p": 0.8,
            "stop": ["END", "STOP"],
            "seed": 7,
        }
    )
    assert body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "How are you?"}]},
        ],
        "generationConfig": {
            "maxOutputTokens": 100,
            "temperature": 0.3,
            "topP": 0.8,
            "stopSequences": ["END", "STOP"],
            "seed": 7,
        },
    }


def test_media_parts() -> None:
    body = request_to_gemini(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/a.png?x=1"},
                        },
                        {
                            "type": "input_audio",
                            "input_audio": {"data": "UklGRg==", "format": "wav"},
                        },
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                    ],
                }
            ]
        }
    )
    assert body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png?x=1"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
    ]


def test_tools_calls_and_results() -> None:
    body = request_to_gemini(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Oslo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": '{"city":"Oslo"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 18}'},
                {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
    )
    assert body["contents"][1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": SKIP_THOUGHT_SIGNATURE,
            },
            {
                "functionCall": {"name": "get_time", "args": {"city": "Oslo"}},
                "thoughtSignature": SKIP_THOUGHT_SIGNATURE,
            },
        ],
    }
    # parallel results share one user turn, each named after the call it answers
    assert body["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}},
        ],
    }
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather",
                    "parametersJsonSchema": WEATHER_SCHEMA,
                }
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


@pytest.mark.parametrize(
    ("choice", "mode"), [("auto", "AUTO"), ("required", "ANY"), ("none", "NONE")]
)
def test_tool_choice_modes(choice: str, mode: str) -> None:
    body = request_to_gemini(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": choice,
        }
    )
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = request_to_gemini(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": schema},
            },
        }
    )
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        (
            [{"role": "tool", "tool_call_id": "call_zzz", "content": "x"}],
            "messages[0].tool_call_id 'call_zzz' matches no earlier assistant tool call",
        ),
        ([{"role": "function", "content": "x"}], "messages[0].role 'function'"),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0] must be a text part",
        ),
        (
            [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}],
            "only inline files",
        ),
    ],
)
def test_untranslatable_requests(messages: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(UpstreamBadRequest) as info:
        request_to_gemini({"messages": messages})
    assert fragment in info.value.message


def test_model_path() -> None:
    assert model_path("gemini-2.5-flash") == "models/gemini-2.5-flash"
    assert model_path("models/gemini-2.5-flash") == "models/gemini-2.5-flash"


# --------------------------------------------------------------------------- response

TEXT_RESPONSE = {
    "candidates": [
        {
            "content": {"parts": [{"text": "Hello"}, {"text": " there."}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}
            ],
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 8,
        "candidatesTokenCount": 3,
        "totalTokenCount": 41,
        "cachedContentTokenCount": 4,
        "thoughtsTokenCount": 30,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mKdHaPbnE9a",
}

CALL_RESPONSE = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {"text": "thinking about it", "thought": True},
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "CiQBVKhc7oT3",
                    },
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 10, "totalTokenCount": 60},
    "modelVersion": "gemini-2.5-flash",
}


def test_text_response() -> None:
    out = response_from_gemini(TEXT_RESPONSE, "gemini-2.5-flash")
    ChatCompletion.model_validate(out)
    assert out["id"] == "mKdHaPbnE9a"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hello there."}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 33,  # thinking tokens are billed as output
        "total_tokens": 41,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }


def test_function_call_response() -> None:
    out = response_from_gemini(CALL_RESPONSE, "gemini-2.5-flash")
    ChatCompletion.model_validate(out)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None  # the thought part is not answer text
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) > 10
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_generated_call_ids_are_unique_and_round_trip() -> None:
    a = response_from_gemini(CALL_RESPONSE, "m")["choices"][0]["message"]
    b = response_from_gemini(CALL_RESPONSE, "m")["choices"][0]["message"]
    assert a["tool_calls"][0]["id"] != b["tool_calls"][0]["id"]
    body = request_to_gemini(
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                a,
                {"role": "tool", "tool_call_id": a["tool_calls"][0]["id"], "content": "sunny"},
            ]
        }
    )
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    data = {"candidates": [{**TEXT_RESPONSE["candidates"][0], "finishReason": reason}]}  # type: ignore[index]
    assert response_from_gemini(data, "m")["choices"][0]["finish_reason"] == finish


def test_blocked_prompt_has_an_empty_filtered_choice() -> None:
    data = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    }
    out = response_from_gemini(data, "gemini-2.5-flash")
    ChatCompletion.model_validate(out)
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["model"] == "gemini-2.5-flash"


# --------------------------------------------------------------------------- stream


def _feed(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    decoder = StreamDecoder("gemini-2.5-flash")
    out: list[dict[str, Any]] = []
    for c in chunks:
        out.extend(decoder.feed("", json.dumps(c).encode()))
    out.extend(decoder.finish())
    for chunk in out:
        ChatCompletionChunk.model_validate(chunk)
    return out


def _candidate(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return cand


def test_text_stream() -> None:
    meta = {"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9}
    chunks = _feed(
        [
            {
                "candidates": [_candidate([{"text": "The"}])],
                "usageMetadata": {"promptTokenCount": 5},
                "responseId": "r1",
            },
            {"candidates": [_candidate([{"text": " sky is"}])], "responseId": "r1"},
            {
                "candidates": [_candidate([{"text": " blue."}], "STOP")],
                "usageMetadata": meta,
                "responseId": "r1",
            },
        ]
    )
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "The"},
        {"content": " sky is"},
        {"content": " blue."},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 9
    assert {c["id"] for c in chunks} == {"r1"}


def test_function_call_stream() -> None:
    calls = [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
    ]
    chunks = _feed([{"candidates": [_candidate(calls, "STOP")]}])
    (delta,) = [
        c["choices"][0]["delta"]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert [(t["index"], json.loads(t["function"]["arguments"])) for t in delta["tool_calls"]] == [
        (0, {"city": "Paris"}),
        (1, {"city": "Oslo"}),
    ]
    assert all(t["id"].startswith("call_") for t in delta["tool_calls"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any("usage" in c for c in chunks)  # no usageMetadata came: no made-up usage


def test_stream_error_payload_raises() -> None:
    decoder = StreamDecoder("m")
    err = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(UpstreamServerError):
        decoder.feed("", json.dumps(err).encode())


def test_stream_without_finish_reason_is_not_complete() -> None:
    decoder = StreamDecoder("m")
    decoder.feed("", json.dumps({"candidates": [_candidate([{"text": "partial"}])]}).encode())
    assert not decoder.complete  # wire.stream raises StreamTruncated at the body's end
    decoder.feed("", json.dumps({"candidates": [_candidate([], "STOP")]}).encode())
    assert decoder.complete


# --------------------------------------------------------------------------- embeddings


def test_embed_requests_batch_by_100() -> None:
    texts = [f"t{i}" for i in range(EMBED_BATCH + 5)]
    bodies = embed_requests({"input": texts, "dimensions": 256}, "gemini-embedding-001")
    assert [len(b["requests"]) for b in bodies] == [EMBED_BATCH, 5]
    assert bodies[0]["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "t0"}]},
        "outputDimensionality": 256,
    }
    assert embed_requests({"input": "one"}, "m")[0]["requests"][0]["content"]["parts"] == [
        {"text": "one"}
    ]


@pytest.mark.parametrize("bad", [[], [1, 2, 3], [[1, 2]], None, 5])
def test_embed_requests_reject_non_text(bad: Any) -> None:
    with pytest.raises(UpstreamBadRequest):
        embed_requests({"input": bad}, "m")


def test_embeddings_response_floats_and_base64() -> None:
    batches = [
        {"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]},
        {"embeddings": [{"values": [1.0, 0.0]}]},
    ]
    out = embeddings_to_openai(batches, {"input": ["a", "b", "c"]}, "gemini-embedding-001")
    assert "usage" not in out  # none reported: left to the gateway's estimate, never a 0
    CreateEmbeddingResponse.model_validate(
        {**out, "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    )
    counted = [{**b, "usageMetadata": {"promptTokenCount": 2}} for b in batches]
    usage = embeddings_to_openai(counted, {"input": ["a", "b", "c"]}, "m")["usage"]
    assert usage == {"prompt_tokens": 4, "total_tokens": 4}
    assert [(d["index"], d["embedding"]) for d in out["data"]] == [
        (0, [0.5, -1.0]),
        (1, [0.25, 2.0]),
        (2, [1.0, 0.0]),
    ]
    b64 = embeddings_to_openai(batches, {"input": ["a"], "encoding_format": "base64"}, "m")
    raw = base64.b64decode(b64["data"][1]["embedding"])
    assert struct.unpack("<2f", raw) == (0.25, 2.0)


def test_embeddings_response_without_embeddings_is_an_error() -> None:
    with pytest.raises(ProviderError, match="no 'embeddings'"):
        embeddings_to_openai([{}], {"input": "a"}, "m")


# --------------------------------------------------------------------------- errors


def _gerr(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            429,
            _gerr(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
            UpstreamRateLimited,
        ),
        (
            503,
            _gerr(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
            UpstreamServerError,
        ),
        (500, _gerr(500, "INTERNAL", "An internal error has occurred."), UpstreamServerError),
        (
            400,
            _gerr(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
            UpstreamBadRequest,
        ),
        (
            403,
            _gerr(403, "PERMISSION_DENIED", "The caller does not have permission"),
            UpstreamAuthError,
        ),
        (
            404,
            _gerr(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta"),
            UpstreamNotFound,
        ),
        (
            400,
            _gerr(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1215821) exceeds the maximum number of tokens "
                "allowed (1048576).",
            ),
            ContextWindowExceeded,
        ),
    ],
)
def test_error_bodies(status: int, body: dict[str, Any], cls: type[ProviderError]) -> None:
    err = ERRORS.from_body(status, body)
    assert type(err) is cls
    said = body["error"]["message"]
    assert err.detail.startswith(said)
    if issubclass(cls, UpstreamBadRequest):
        assert err.message == said  # the caller's own request: it needs the reason
    else:
        assert said not in err.message and str(status) in err.message


def test_error_body_as_array_and_retry_info() -> None:
    body = [
        _gerr(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota.",
            details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        )
    ]
    err = ERRORS.from_body(429, body)
    assert isinstance(err, UpstreamRateLimited)
    assert err.retry_after == 37.0
    assert err.retryable


def test_logprobs_round_trip_through_the_proxy() -> None:
    """``logprobs``/``top_logprobs`` become ``responseLogprobs``/``logprobs``; the answer's
    ``logprobsResult`` comes back in OpenAI's shape, whole and per streamed chunk."""
    import openai

    from routeguard.gateway import Gateway
    from routeguard.mock import MockServer
    from routeguard.server import create_app
    from routeguard.server.thread import ServerThread

    with MockServer() as mock:
        cfg = {"model_list": [{"model_name": "ge", "type": "gemini", "model": "gemini-sim",
                               "api_key": "k", "api_base": mock.url}]}  # fmt: skip
        with (
            ServerThread(create_app(Gateway.from_config(cfg))) as server,
            openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c,
        ):
            msgs: Any = [{"role": "user", "content": "hi"}]
            whole = c.chat.completions.create(model="ge", messages=msgs, logprobs=True,
                                              top_logprobs=3)  # fmt: skip
            sent = mock.requests[-1].body["generationConfig"]
            assert (sent["responseLogprobs"], sent["logprobs"]) == (True, 3)
            lp = whole.choices[0].logprobs
            assert lp is not None and lp.content
            assert "".join(t.token for t in lp.content) == whole.choices[0].message.content
            for t in lp.content:
                assert t.logprob < 0 and t.bytes == list(t.token.encode())
                assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
                assert all(a.logprob <= t.logprob for a in t.top_logprobs)
            stream = c.chat.completions.create(model="ge", messages=msgs, logprobs=True,
                                               stream=True)  # fmt: skip
            tokens = [t for ch in stream for choice in ch.choices if choice.logprobs
                      for t in choice.logprobs.content or ()]  # fmt: skip
            assert [t.token for t in tokens] == [t.token for t in lp.content]
            assert [t.logprob for t in tokens] == pytest.approx([t.logprob for t in lp.content])
            plain = c.chat.completions.create(model="ge", messages=msgs)
            assert plain.choices[0].logprobs is None
            assert "responseLogprobs" not in mock.requests[-1].body.get("generationConfig", {})
