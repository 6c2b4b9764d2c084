"""Validation of inbound OpenAI-shaped requests.

The request stays a plain dict (every field the client sent is passed upstream untouched);
``msgspec.convert`` against the Structs below only checks the fields we rely on, fast and
with messages that name the field. Anything malformed becomes InvalidRequest (a 400), never
another exception: the hypothesis fuzz test in tests/ holds this module to that. That covers
bodies no JSON parser should be asked to recurse through (nesting past ``MAX_DEPTH``), bytes
that are not UTF-8, and token counts no model serves (past ``MAX_TOKENS``), which would
otherwise overflow the budget ledger's worst-case hold.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from routeguard.errors import InvalidRequest

_decoder = msgspec.json.Decoder()

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects a request body may have (tool schemas need ~10)."""
MAX_TOKENS = 2**31 - 1
"""Largest ``max_tokens``/``max_completion_tokens`` accepted (int32, as the providers take)."""
MAX_N = 128
"""Largest ``n`` (choices per request), the OpenAI API's own limit."""

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Message(msgspec.Struct):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class _ChatRequest(msgspec.Struct):
    model: str
    messages: list[_Message]
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    temperature: float | None = None
    tools: list[dict[str, Any]] | None = None
    stream_options: dict[str, Any] | None = None


class _EmbeddingRequest(msgspec.Struct):
    model: str
    input: str | list[str | int | list[int]]


def decode_json(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid UTF-8 (byte {exc.start}): JSON text must be UTF-8"
        ) from None
    except RecursionError:
        raise _too_deep() from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {_kind(data)}")
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nesting_exceeds(body, MAX_DEPTH):
        raise _too_deep()
    return data


def _too_deep() -> InvalidRequest:
    return InvalidRequest(f"request body is nested too deeply (more than {MAX_DEPTH} levels)")


_DROP = bytes(b for b in range(256) if b not in b'[]{}"')  # all but brackets and quotes
_BRACKETS = bytes.maketrans(b"{}", b"[]")


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether the (valid) JSON text ``body`` nests arrays/objects deeper than ``limit``.

    Works on the bytes with C-speed bytes methods rather than walking the decoded value in
    Python: drop escaped backslashes and quotes, keep only brackets and quotes, drop the
    strings, then peel the innermost ``[]`` pairs, one level per pass.
    """
    s = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    s = s.translate(_BRACKETS, _DROP).replace(b'""', b"")  # empty or adjacent strings
    if b'"' in s:  # strings holding brackets: keep what lies between them
        s = b"".join(s.split(b'"')[::2])
    for _ in range(limit):
        if not s:
            return False
        s = s.replace(b"[]", b"")
    return bool(s)


def validate_chat(data: dict[str, Any]) -> dict[str, Any]:
    """Check a Chat Completions request; returns it unchanged or raises InvalidRequest."""
    _check(data, _ChatRequest)
    if not data["messages"]:
        raise InvalidRequest("'messages' must contain at least one message", param="messages")
    for i, m in enumerate(data["messages"]):
        role = m["role"]
        if role == "tool" and not m.get("tool_call_id"):
            raise InvalidRequest(
                f"messages[{i}]: a 'tool' message needs 'tool_call_id'", param=f"messages[{i}]"
            )
        if role in ("user", "system", "developer") and m.get("content") is None:
            raise InvalidRequest(
                f"messages[{i}]: a '{role}' message needs 'content'", param=f"messages[{i}].content"
            )
        parts = m.get("content")
        if isinstance(parts, list):
            for j, part in enumerate(parts):
                if isinstance(part, dict) and not isinstance(part.get("type", ""), str):
                    raise InvalidRequest(
                        f"messages[{i}].content[{j}].type must be a string",
                        param=f"messages[{i}].content[{j}].type",
                    )
    n = data.get("n")
    if n is not None and n < 1:
        raise InvalidRequest("'n' must be at least 1", param="n")
    if n is not None and n > MAX_N:
        raise InvalidRequest(f"'n' must be at most {MAX_N}, got {n}", param="n")
    for key in ("max_tokens", "max_completion_tokens"):
        v = data.get(key)
        if v is not None and v < 1:
            raise InvalidRequest(f"'{key}' must be at least 1", param=key)
        if v is not None and v > MAX_TOKENS:
            raise InvalidRequest(f"'{key}' must be at most {MAX_TOKENS}, got {v}", param=key)
    return data


def validate_embeddings(data: dict[str, Any]) -> dict[str, Any]:
    """Check an Embeddings request; returns it unchanged or raises InvalidRequest."""
    _check(data, _EmbeddingRequest)
    if data["input"] in ("", []):
        raise InvalidRequest("'input' must not be empty", param="input")
    return data


def _check(data: dict[str, Any], schema: type[msgspec.Struct]) -> None:
    try:
        msgspec.convert(data, schema, strict=True)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        param = None
        if " - at `$." in msg:
            msg, _, path = msg.partition(" - at `$.")
            param = path.rstrip("`")
            msg = f"{param}: {msg}"
        msg = msg.replace("Object missing required field", "missing required field")
        raise InvalidRequest(msg, param=param) from None


def _kind(v: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(v), "null" if v is None else type(v).__name__
    )
