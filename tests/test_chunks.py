"""Whole response <-> chunk stream, checked with the openai SDK's own types."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from routeguard.chunks import Assembler, to_chunks

RESP: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "x" * 150,
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "f", "arguments": '{"a": 1}'}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
}  # fmt: skip


def test_round_trip_and_sdk_types() -> None:
    chunks = to_chunks(RESP, include_usage=True)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == RESP["usage"]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 3
    asm = Assembler()
    for c in chunks:
        asm.feed(c)
    out = asm.result()
    ChatCompletion.model_validate(out)
    assert out["choices"][0]["message"]["content"] == RESP["choices"][0]["message"]["content"]
    assert out["choices"][0]["message"]["tool_calls"] == RESP["choices"][0]["message"]["tool_calls"]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == RESP["usage"]


def test_without_usage_and_plain_text() -> None:
    resp = {**RESP, "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                 "finish_reason": "stop"}]}  # fmt: skip
    chunks = to_chunks(resp)
    assert all(c["choices"] for c in chunks)
    asm = Assembler()
    for c in chunks:
        asm.feed(c)
    assert asm.result()["choices"][0]["message"] == {"role": "assistant", "content": "hi"}


def test_assembler_never_invents_a_finish_reason() -> None:
    chunks = to_chunks(RESP)
    asm = Assembler()
    for c in chunks[:-1]:  # everything but the finish chunk: a stream cut short
        asm.feed(c)
    assert not asm.complete
    assert asm.result()["choices"][0]["finish_reason"] is None
    asm.feed(chunks[-1])
    assert asm.complete and asm.result()["choices"][0]["finish_reason"] == "tool_calls"
