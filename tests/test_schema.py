"""The request parser: clear 400s for bad input, and never any other exception (fuzzed)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeguard.budget.bound import measure
from routeguard.errors import InvalidRequest
from routeguard.schema import decode_json, validate_chat, validate_embeddings


def _chat(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def test_valid_request_passes_through_unchanged() -> None:
    req = _chat(temperature=0.2, seed=7, response_format={"type": "json_object"})
    assert validate_chat(dict(req)) == req


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "at least one"),
        ({"model": "m", "messages": "hello"}, "messages"),
        ({"model": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "content"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": []}]}]},
            "messages[0].content[0].type",
        ),
        (_chat(max_tokens=0), "max_tokens"),
        (_chat(max_tokens="ten"), "max_tokens"),
        (_chat(stream="yes"), "stream"),
        (_chat(temperature="hot"), "temperature"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_chat(body)
    assert needle in info.value.message
    assert info.value.status_code == 400


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b'"str"', b"null", b"\xff\xfe"])
def test_bodies_that_are_not_objects(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_json(raw)


def test_embeddings_validation() -> None:
    assert validate_embeddings({"model": "e", "input": ["a", "b"]})["input"] == ["a", "b"]
    with pytest.raises(InvalidRequest):
        validate_embeddings({"model": "e", "input": []})
    with pytest.raises(InvalidRequest):
        validate_embeddings({"model": "e", "input": {"x": 1}})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
parts = st.fixed_dictionaries(
    {}, optional={"type": json_values | st.sampled_from(["text", "image_url"]), "text": json_values}
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]) | json_values},
    optional={
        "content": json_values | st.lists(parts, max_size=3),
        "tool_call_id": json_values,
        "tool_calls": json_values,
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=5) | json_values,
        "messages": st.lists(message, max_size=3) | json_values,
        "stream": json_values,
        "max_tokens": json_values,
        "n": json_values,
        "tools": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(requests)
def test_fuzz_structured_requests_raise_only_invalid_request(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    try:
        accepted = validate_chat(decode_json(raw))
    except InvalidRequest as exc:
        assert exc.to_openai()["error"]["type"] == "invalid_request_error"
        return
    assert measure(accepted).tokens() > 0  # what the budget layer does next never raises


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_raw_bytes_raise_only_invalid_request(raw: bytes) -> None:
    with contextlib.suppress(InvalidRequest):
        validate_chat(decode_json(raw))
