"""The Anthropic Messages wire format of the simulated upstream.

``POST /v1/messages`` bodies are validated as the real API does (``model``, ``max_tokens``
and ``messages`` required; errors as ``{"type": "error", "error": {type, message}}``),
parsed into a neutral :class:`~routeguard.mock.answers.Prompt`, and answered as a
``message`` object or the real event stream: message_start, content_block_start, ping,
content_block_delta (text_delta or input_json_delta), content_block_stop, message_delta
(stop_reason, usage.output_tokens), message_stop.
"""

from __future__ import annotations

from typing import Any

from routeguard.mock.answers import (
    Answer,
    Prompt,
    Tool,
    ToolMode,
    ToolResult,
    count_tokens,
    new_id,
    schema_text,
)
from routeguard.mock.faults import Fault, midstream_message
from routeguard.mock.transport import (
    JSON_HEADERS,
    PIECE,
    FrameTemplate,
    Headers,
    StreamPlan,
    encode,
)

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}

MODELS = ("mock-claude", "claude-sonnet-4-5", "claude-haiku-4-5")


def _invalid(message: str) -> Fault:
    return Fault(400, message)


def _block_text(block: Any, where: str) -> tuple[str, str | None, str | None]:
    """(text for counting, tool_use id→name if a tool_use, tool_result id if a tool_result)."""
    if not isinstance(block, dict):
        raise _invalid(f"{where}: Input should be a valid dictionary or object")
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{where}.text: Field required")
        return text, None, None
    if kind == "tool_use":
        name = str(block.get("name", ""))
        return name + schema_text(block.get("input", {})), name, None
    if kind == "tool_result":
        return _result_text(block.get("content")), None, str(block.get("tool_use_id"))
    if not isinstance(kind, str):
        raise _invalid(f"{where}.type: Field required")
    return "", None, None


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""


def parse_messages(body: Any) -> Prompt:
    """Validate a ``/v1/messages`` (or ``count_tokens``) body and parse it."""
    if not isinstance(body, dict):
        raise _invalid("Input should be a valid dictionary or object")
    for name in ("model", "messages"):
        if name not in body:
            raise _invalid(f"{name}: Field required")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise _invalid("model: Input should be a valid string")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _invalid("max_tokens: Input should be a valid integer greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    chars = 0
    system = body.get("system")
    if isinstance(system, str):
        chars += len(system)
    elif isinstance(system, list):
        chars += len(_result_text(system))
    elif system is not None:
        raise _invalid("system: Input should be a valid string")
    last_user = ""
    tool_names: dict[str, str] = {}
    result_ids: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _invalid(f"messages.{i}: Input should be a valid dictionary or object")
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        result_ids = []
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            texts = []
            for j, block in enumerate(content):
                piece, tool_name, result_id = _block_text(block, f"messages.{i}.content.{j}")
                texts.append(piece)
                if tool_name is not None:
                    tool_names[str(block.get("id"))] = tool_name
                if result_id is not None:
                    result_ids.append(result_id)
            text = "\n".join(texts)
        else:
            raise _invalid(f"messages.{i}.content: Field required")
        chars += len(text)
        if role == "user":
            last_user = text
    tool_result = None
    last = messages[-1]
    if last.get("role") == "user" and result_ids:
        results = [
            b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        name = tool_names.get(result_ids[-1], "tool")
        tool_result = ToolResult(name, _result_text(results[-1].get("content")))
    tools, tool_chars = _parse_tools(body.get("tools"))
    mode, forced = _parse_tool_choice(body.get("tool_choice"))
    return Prompt(
        model=model,
        prompt_tokens=count_tokens(chars + tool_chars),
        last_user_text=last_user,
        tool_result=tool_result,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        max_tokens=max_tokens,
        stream=body.get("stream") is True,
    )


def require_max_tokens(body: Any) -> None:
    """``/v1/messages`` (unlike ``count_tokens``) requires ``max_tokens``."""
    if isinstance(body, dict) and "max_tokens" not in body:
        raise _invalid("max_tokens: Field required")


def _parse_tools(raw: Any) -> tuple[list[Tool], int]:
    if raw is None:
        return [], 0
    if not isinstance(raw, list):
        raise _invalid("tools: Input should be a valid list")
    tools, chars = [], 0
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise _invalid(f"tools.{i}: Input should be a valid dictionary or object")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"tools.{i}.name: Field required")
        schema = t.get("input_schema")
        if schema is None:
            if t.get("type") in (None, "custom"):
                raise _invalid(f"tools.{i}.custom.input_schema: Field required")
            continue  # a server tool (web search...): nothing for the client to run
        description = t.get("description")
        chars += len(name) + len(schema_text(schema))
        chars += len(description) if isinstance(description, str) else 0
        tools.append(Tool(name, schema))
    return tools, chars


def _parse_tool_choice(raw: Any) -> tuple[ToolMode, str | None]:
    if raw is None:
        return "auto", None
    if not isinstance(raw, dict):
        raise _invalid("tool_choice: Input should be a valid dictionary or object")
    kind = raw.get("type")
    if kind == "none":
        return "none", None
    if kind == "any":
        return "any", None
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str):
            raise _invalid("tool_choice.tool.name: Field required")
        return "any", name
    if kind == "auto":
        return "auto", None
    raise _invalid("tool_choice: Input tag does not match any of the expected tags")


def _usage(prompt_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def _content(ans: Answer) -> list[dict[str, Any]]:
    call = ans.tool_call
    if call is None:
        return [{"type": "text", "text": ans.text}]
    return [{"type": "tool_use", "id": call.call_id, "name": call.name, "input": call.arguments}]


def message_body(prompt: Prompt, ans: Answer) -> bytes:
    """A ``message`` response body."""
    return encode(
        {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": prompt.model,
            "content": _content(ans),
            "stop_reason": _STOP[ans.finish],
            "stop_sequence": None,
            "usage": _usage(prompt.prompt_tokens, ans.completion_tokens),
        }
    )


def _event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + encode(obj) + b"\n\n"


def message_stream(prompt: Prompt, ans: Answer, usage: bool = True) -> StreamPlan:
    """The Messages event stream of ``ans`` (without ``usage`` fields if ``usage`` is False)."""
    start: dict[str, Any] = {
        "type": "message_start",
        "message": {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": prompt.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(prompt.prompt_tokens, 1),
        },
    }
    final: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": _STOP[ans.finish], "stop_sequence": None},
        "usage": {"output_tokens": ans.completion_tokens},
    }
    if not usage:
        del start["message"]["usage"], final["usage"]
    call = ans.tool_call
    if call is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
        delta: dict[str, Any] = {"type": "text_delta", "text": PIECE}
    else:
        block = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": PIECE}
    head = [
        _event("message_start", start),
        _event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        _event("ping", {"type": "ping"}),
    ]
    template = FrameTemplate(
        {"type": "content_block_delta", "index": 0, "delta": delta},
        before=b"event: content_block_delta\ndata: ",
    )
    tail = [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event("message_delta", final),
        _event("message_stop", {"type": "message_stop"}),
    ]
    error = _event(
        "error",
        {
            "type": "error",
            "error": {
                "type": "overloaded_error",
                "message": midstream_message("Overloaded"),
            },
        },
    )
    return StreamPlan(head, [template.fill(p) for p in ans.streamed], tail, error)


def count_tokens_body(prompt: Prompt) -> bytes:
    """The ``/v1/messages/count_tokens`` response."""
    return encode({"input_tokens": prompt.prompt_tokens})


def models_body() -> bytes:
    """The ``GET /v1/models`` list in Anthropic's shape (sent when ``anthropic-version`` is set)."""
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
        for m in MODELS
    ]
    return encode({"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]})


# --- errors ------------------------------------------------------------------------------------


def context_fault(prompt_tokens: int, limit: int, max_tokens: int | None) -> Fault | None:
    """Anthropic's context-window error if the request does not fit ``limit`` tokens."""
    if prompt_tokens > limit:
        return Fault(400, f"prompt is too long: {prompt_tokens} tokens > {limit} maximum")
    if max_tokens is not None and prompt_tokens + max_tokens > limit:
        return Fault(
            400,
            f"input length and `max_tokens` exceed context limit: {prompt_tokens} + "
            f"{max_tokens} > {limit}, decrease input length or `max_tokens` and try again",
        )
    return None


_STOCK: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def render_fault(fault: Fault, model: str | None) -> tuple[int, Headers, bytes]:
    """Status, headers and ``{"type": "error", "error": {...}}`` body of ``fault``."""
    kind, message = _STOCK.get(fault.status) or (
        ("api_error", "Internal server error")
        if fault.status >= 500
        else ("invalid_request_error", "Invalid request")
    )
    if fault.status == 404 and model:
        message = f"model: {model}"
    if fault.message is not None:
        message = fault.message
    request_id = new_id("req_")
    body = {
        "type": "error",
        "error": {"type": kind, "message": message + fault.hint()},
        "request_id": request_id,
    }
    headers = [*JSON_HEADERS, (b"request-id", request_id.encode())]
    return fault.status, headers, encode(body)
