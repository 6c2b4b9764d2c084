"""The OpenAI wire format of the simulated upstream: Chat Completions, Embeddings, Models.

Requests are validated the way the real API does (missing ``model``/``messages``, bad
``max_tokens``, wrong types answer 400 with OpenAI's ``{"error": {message, type, param,
code}}``), parsed into an :class:`~routeguard.mock.answers.Prompt`, and answers
are rendered as ``chat.completion`` bodies or ``chat.completion.chunk`` SSE streams ending in
``data: [DONE]`` (with a usage-only chunk when ``stream_options.include_usage`` is set).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from routeguard.mock.answers import (
    Answer,
    JsonOutput,
    Prompt,
    Tool,
    ToolMode,
    ToolResult,
    count_tokens,
    default_dimensions,
    embedding,
    encode_vector,
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

_ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}

MODELS = (
    "mock-gpt",
    "gpt-4o",
    "gpt-4o-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "mock-error-500",
    "mock-flaky-50",
    "mock-slow-2000",
)


@dataclass(slots=True)
class ChatRequest:
    """A parsed chat request: the neutral prompt plus OpenAI-only options."""

    prompt: Prompt
    n: int = 1
    include_usage: bool = False


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return "an object"


def _bad_type(param: str, expected: str, value: Any) -> Fault:
    return Fault(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _content_text(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise _bad_type(f"{param}[{i}]", "an object", part)
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                texts.append(text)
        return "\n".join(texts)
    raise _bad_type(param, "one of a string or array of objects", content)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad_type(name, "an integer", value)
    if value < 1:
        raise Fault(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    return value


def _require_model(body: Any) -> str:
    if not isinstance(body, dict):
        raise Fault(400, "Invalid request body: expected a JSON object.", code="invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Fault(400, "you must provide a model parameter")
    return model


def parse_chat(body: Any) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body and parse it."""
    model = _require_model(body)
    messages = body.get("messages")
    if messages is None:
        raise Fault(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise _bad_type("messages", "an array of objects", messages)
    if not messages:
        raise Fault(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    chars = 0
    last_user = ""
    call_names: dict[str, str] = {}
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad_type(f"messages[{i}]", "an object", m)
        role = m.get("role")
        if role not in _ROLES:
            raise Fault(
                400,
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        text = _content_text(m.get("content"), f"messages[{i}].content")
        chars += len(text)
        if role == "user":
            last_user = text
        tool_calls = m.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    name, args = str(fn.get("name", "")), str(fn.get("arguments", ""))
                    chars += len(name) + len(args)
                    call_names[str(call.get("id"))] = name
    last = messages[-1]
    tool_result = None
    if last.get("role") == "tool":
        name = call_names.get(str(last.get("tool_call_id")), "function")
        tool_result = ToolResult(name, _content_text(last.get("content"), "content"))
    elif last.get("role") == "function":
        tool_result = ToolResult(
            str(last.get("name", "function")), _content_text(last.get("content"), "content")
        )
    tools, tool_chars = _parse_tools(body.get("tools"))
    json_output, format_chars = _parse_response_format(body.get("response_format"))
    mode, forced = _parse_tool_choice(body.get("tool_choice"))
    max_tokens = _positive_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _positive_int(body, "max_tokens")
    n = _positive_int(body, "n") or 1
    if n > 128:
        raise Fault(
            400,
            f"Invalid 'n': integer above maximum value. Expected a value <= 128, but got {n} "
            "instead.",
            param="n",
            code="integer_above_max_value",
        )
    stream = body.get("stream") is True
    options = body.get("stream_options")
    if options is not None and not stream:
        raise Fault(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    prompt = Prompt(
        model=model,
        prompt_tokens=count_tokens(chars + tool_chars + format_chars),
        last_user_text=last_user,
        tool_result=tool_result,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        max_tokens=max_tokens,
        stream=stream,
        json_output=json_output,
    )
    return ChatRequest(prompt, n, include_usage)


def _parse_response_format(raw: Any) -> tuple[JsonOutput | None, int]:
    """``response_format`` as the JSON the answer must be, and its characters (a schema is
    read by the model, so it counts toward the prompt)."""
    if raw is None:
        return None, 0
    if not isinstance(raw, dict):
        raise _bad_type("response_format", "an object", raw)
    kind = raw.get("type")
    if kind == "text":
        return None, 0
    if kind == "json_object":
        return JsonOutput(), 0
    if kind != "json_schema":
        raise Fault(
            400,
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and "
            "'json_schema'.",
            param="response_format.type",
            code="invalid_value",
        )
    spec = raw.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise Fault(
            400,
            "Missing required parameter: 'response_format.json_schema.name'.",
            param="response_format.json_schema.name",
            code="missing_required_parameter",
        )
    schema = spec.get("schema", {})
    return JsonOutput(schema), len(schema_text(schema))


def _parse_tools(raw: Any) -> tuple[list[Tool], int]:
    if raw is None:
        return [], 0
    if not isinstance(raw, list):
        raise _bad_type("tools", "an array of objects", raw)
    tools, chars = [], 0
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise _bad_type(f"tools[{i}]", "an object", t)
        fn = t.get("function")
        if t.get("type", "function") != "function" or not isinstance(fn, dict):
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise Fault(
                400,
                f"Missing required parameter: 'tools[{i}].function.name'.",
                param=f"tools[{i}].function.name",
                code="missing_required_parameter",
            )
        schema = fn.get("parameters", {"type": "object", "properties": {}})
        description = fn.get("description")
        chars += len(name) + len(schema_text(schema))
        chars += len(description) if isinstance(description, str) else 0
        tools.append(Tool(name, schema))
    return tools, chars


def _parse_tool_choice(raw: Any) -> tuple[ToolMode, str | None]:
    if raw is None or raw == "auto":
        return "auto", None
    if raw == "none":
        return "none", None
    if raw == "required":
        return "any", None
    if isinstance(raw, dict):
        fn = raw.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return "any", fn["name"]
        return "auto", None
    raise Fault(
        400,
        f"Invalid value: '{raw}'. Supported values are: 'none', 'auto', and 'required'.",
        param="tool_choice",
        code="invalid_value",
    )


def _message(ans: Answer) -> dict[str, Any]:
    call = ans.tool_call
    if call is None:
        return {"role": "assistant", "content": ans.text, "refusal": None, "annotations": []}
    return {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
        "tool_calls": [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
        ],
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_body(req: ChatRequest, answers: list[Answer]) -> bytes:
    """A ``chat.completion`` response body."""
    completion = sum(a.completion_tokens for a in answers)
    return encode(
        {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.prompt.model,
            "choices": [
                {
                    "index": i,
                    "message": _message(a),
                    "logprobs": None,
                    "finish_reason": _FINISH[a.finish],
                }
                for i, a in enumerate(answers)
            ],
            "usage": _usage(req.prompt.prompt_tokens, completion),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
    )


def chat_stream(req: ChatRequest, answers: list[Answer], usage: bool = True) -> StreamPlan:
    """A ``chat.completion.chunk`` SSE stream of ``answers`` (one per choice); the usage
    chunk when the client asked for it, unless ``usage`` is False."""
    base: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": req.prompt.model,
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    if req.include_usage:
        base["usage"] = None

    def chunk(index: int, delta: Any, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    def frame(obj: Any) -> bytes:
        return b"data: " + encode(obj) + b"\n\n"

    head: list[bytes] = []
    content: list[bytes] = []
    tail: list[bytes] = []
    for i, ans in enumerate(answers):
        call = ans.tool_call
        if call is None:
            head.append(frame(chunk(i, {"role": "assistant", "content": "", "refusal": None})))
            text = FrameTemplate(chunk(i, {"content": PIECE}))
            content.extend(text.fill(p) for p in ans.streamed)
        else:
            opening = {
                "index": 0,
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            delta = {"role": "assistant", "content": None, "tool_calls": [opening]}
            head.append(frame(chunk(i, delta)))
            args = {"tool_calls": [{"index": 0, "function": {"arguments": PIECE}}]}
            piece = FrameTemplate(chunk(i, args))
            content.extend(piece.fill(p) for p in ans.streamed)
        tail.append(frame(chunk(i, {}, _FINISH[ans.finish])))
    if req.include_usage and usage:
        completion = sum(a.completion_tokens for a in answers)
        tail.append(
            frame({**base, "choices": [], "usage": _usage(req.prompt.prompt_tokens, completion)})
        )
    tail.append(b"data: [DONE]\n\n")
    error = {
        "error": {
            "message": midstream_message(
                "The server had an error while processing your request. Sorry about that!"
            ),
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    return StreamPlan(head, content, tail, frame(error))


# --- embeddings and models -------------------------------------------------------------------


def embeddings_body(body: Any, ctx: int | None) -> bytes:
    """Validate an ``/v1/embeddings`` body and answer it (or raise a Fault)."""
    model = _require_model(body)
    raw = body.get("input")
    if raw is None:
        raise Fault(
            400,
            "Missing required parameter: 'input'.",
            param="input",
            code="missing_required_parameter",
        )
    inputs: list[tuple[str, int]]  # text to embed, its token count
    if isinstance(raw, str):
        inputs = [(raw, count_tokens(len(raw)))]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs = [(x, count_tokens(len(x))) for x in raw]
    elif isinstance(raw, list) and raw and all(_is_int(x) for x in raw):
        inputs = [(" ".join(map(str, raw)), len(raw))]
    elif (
        isinstance(raw, list)
        and raw
        and all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in raw)
    ):
        inputs = [(" ".join(map(str, x)), len(x)) for x in raw]
    else:
        raise Fault(
            400,
            "'$.input' is invalid. Please check the API reference: "
            "https://platform.openai.com/docs/api-reference.",
        )
    if any(text == "" for text, _ in inputs):
        raise Fault(400, "'$.input' is invalid: an input is an empty string.", param="input")
    dims = _positive_int(body, "dimensions") or default_dimensions(model)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise Fault(
            400,
            f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    if ctx is not None:
        for _, tokens in inputs:
            if tokens > ctx:
                raise Fault(
                    400,
                    f"This model's maximum context length is {ctx} tokens, however you "
                    f"requested {tokens} tokens ({tokens} in your prompt; 0 for the "
                    "completion). Please reduce your prompt; or completion length.",
                    code="context_length_exceeded",
                )
    total = sum(t for _, t in inputs)
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(embedding(text, dims), fmt)}
        for i, (text, _) in enumerate(inputs)
    ]
    return encode(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }
    )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def models_body() -> bytes:
    """The ``GET /v1/models`` list."""
    return encode(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "routeguard"}
                for m in MODELS
            ],
        }
    )


# --- errors ------------------------------------------------------------------------------------


def context_fault(prompt_tokens: int, limit: int, max_tokens: int | None) -> Fault | None:
    """OpenAI's context-length error if the request does not fit ``limit`` tokens, else None."""
    if max_tokens is None:
        if prompt_tokens <= limit:
            return None
        message = (
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        )
    else:
        if prompt_tokens + max_tokens <= limit:
            return None
        message = (
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion."
        )
    return Fault(400, message, param="messages", code="context_length_exceeded")


def _stock(status: int, model: str) -> tuple[str, str, str | None]:
    if status == 401:
        return (
            "Incorrect API key provided: bad-key. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
    if status == 404:
        return (
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        )
    if status == 429:
        return (
            f"Rate limit reached for {model} in organization org-mock on requests per min "
            "(RPM): Limit 3, Used 3, Requested 1. Please try again in 0s.",
            "requests",
            "rate_limit_exceeded",
        )
    if status == 500:
        msg = "The server had an error while processing your request. Sorry about that!"
        return msg, "server_error", None
    if status == 503:
        return "The engine is currently overloaded, please try again later.", "server_error", None
    if status == 403:
        return "You are not allowed to access this resource.", "invalid_request_error", None
    if status >= 500:
        return f"Upstream error {status}.", "server_error", None
    return f"Invalid request (status {status}).", "invalid_request_error", None


def render_fault(fault: Fault, model: str | None) -> tuple[int, Headers, bytes]:
    """Status, headers and ``{"error": {...}}`` body of ``fault`` in OpenAI's shape."""
    message, kind, code = _stock(fault.status, model or "unknown")
    if fault.message is not None:
        message, code = fault.message, None
        kind = "invalid_request_error" if fault.status < 500 else "server_error"
    body = {
        "error": {
            "message": message + fault.hint(),
            "type": kind,
            "param": fault.param,
            "code": fault.code if fault.code is not None else code,
        }
    }
    headers = [*JSON_HEADERS, (b"x-request-id", new_id("req_").encode())]
    return fault.status, headers, encode(body)
