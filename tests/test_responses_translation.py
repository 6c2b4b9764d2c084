"""The Responses and legacy completions translations alone: any JSON body either becomes a
chat request the gateway accepts or is refused with InvalidRequest (a 400), never another
exception; and whole responses built from chat answers validate against the SDK's types."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import Completion
from openai.types.responses import Response

from routeguard.errors import InvalidRequest
from routeguard.schema import validate_chat
from routeguard.server.completions import chat_to_completion, completion_request_to_chat
from routeguard.server.responses import chat_to_response, responses_request_to_chat

scalars = st.none() | st.booleans() | st.integers(-3, 5) | st.floats(-1, 2) | st.text(max_size=6)
words = st.sampled_from(
    ["type", "role", "content", "text", "name", "call_id", "arguments", "output", "message",
     "function_call", "function_call_output", "input_text", "input_image", "image_url",
     "user", "assistant", "system", "format", "json_schema", "schema", "function", "strict"]
)  # fmt: skip
json_values = st.recursive(
    scalars | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=4),
    max_leaves=12,
)
RESPONSES_KEYS = ["model", "input", "instructions", "tools", "tool_choice", "text", "stream",
                  "max_output_tokens", "temperature", "metadata", "reasoning", "store"]  # fmt: skip
COMPLETION_KEYS = ["model", "prompt", "max_tokens", "n", "stream", "echo", "best_of", "stop"]


def _bodies(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), json_values, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies(RESPONSES_KEYS))
def test_any_responses_body_is_translated_or_a_400(body: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidRequest):
        validate_chat(responses_request_to_chat(body).chat)


@settings(max_examples=300, deadline=None)
@given(body=_bodies(COMPLETION_KEYS))
def test_any_completions_body_is_translated_or_a_400(body: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidRequest):
        validate_chat(completion_request_to_chat(body))


CHAT: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "up",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "f", "arguments": '{"a":1}'}}],
            },
        }
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
              "prompt_tokens_details": {"cached_tokens": 2}},
}  # fmt: skip


def test_whole_response_validates_strictly() -> None:
    call = responses_request_to_chat(
        {"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}],
         "text": {"format": {"type": "json_object"}}, "metadata": {"a": "b"}}
    )  # fmt: skip
    out = Response.model_validate(chat_to_response(CHAT, call.echo))
    assert [o.type for o in out.output] == ["message", "function_call"]
    assert out.output_text == "Let me check."
    assert out.usage is not None and out.usage.input_tokens_details.cached_tokens == 2
    refused = {**CHAT, "choices": [{"index": 0, "finish_reason": "length",
                                    "message": {"role": "assistant", "content": None,
                                                "refusal": "no"}}]}  # fmt: skip
    cut = Response.model_validate(chat_to_response(refused, call.echo))
    assert cut.status == "incomplete" and cut.output[0].type == "message"
    assert cut.output[0].content[0].type == "refusal"


def test_completion_validates_strictly() -> None:
    out = Completion.model_validate(chat_to_completion(CHAT, "m"))
    assert out.choices[0].text == "Let me check." and out.id == "cmpl-1"
