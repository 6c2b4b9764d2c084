"""The proxy's Anthropic-compatible ``POST /v1/messages``: pure translations, no I/O.

Flow: the client's Anthropic Messages request -> :func:`anthropic_request_to_openai`
(validated; every problem names its field) -> the gateway, which speaks OpenAI chat
internally -> :func:`openai_response_to_anthropic` for a whole answer, or
:class:`AnthropicStreamEncoder`, which turns the gateway's chunks into Anthropic SSE frames.
Failures become Anthropic error bodies through :func:`error_to_anthropic`.

This is the inverse of ``routeguard.providers.anthropic`` and shares its tables (stop
reasons, tool choice, error types); the import runs server -> providers only.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec

from routeguard.budget.bound import measure
from routeguard.errors import InvalidRequest, RouteguardError
from routeguard.providers.anthropic import (
    FINISH_TO_STOP_REASON,
    STATUS_ERROR_TYPE,
    TOOL_CHOICE_FROM_ANTHROPIC,
)
from routeguard.providers.base import Json
from routeguard.providers.wire import token_count
from routeguard.schema import MAX_TOKENS

_encode = msgspec.json.Encoder().encode
_ROLES = ("user", "assistant")
_USER_BLOCKS = ("text", "image", "document", "tool_result")
_ASSISTANT_BLOCKS = ("text", "tool_use", "thinking", "redacted_thinking")


# --------------------------------------------------------------------------- request


def _invalid(path: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {problem}", param=path)


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _require(body: Json, key: str, path: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in body:
        raise _invalid(path, "field required")
    v = body[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and bool not in _as_tuple(kind)):
        raise _invalid(path, f"expected {what}, got {_type_name(v)}")
    return v


def _optional(body: Json, key: str, path: str, kind: type | tuple[type, ...], what: str) -> Any:
    if body.get(key) is None:
        return None
    return _require(body, key, path, kind, what)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def anthropic_request_to_openai(body: Json) -> Json:
    """Validate an Anthropic Messages request and translate it into an OpenAI chat request."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = _require(body, "model", "model", str, "a string")
    max_tokens = _require(body, "max_tokens", "max_tokens", int, "an integer")
    if max_tokens < 1:
        raise _invalid("max_tokens", f"must be at least 1, got {max_tokens}")
    if max_tokens > MAX_TOKENS:
        raise _invalid("max_tokens", f"must be at most {MAX_TOKENS}, got {max_tokens}")
    raw_messages = _require(body, "messages", "messages", list, "a list of messages")
    out: Json = {"model": model, "max_completion_tokens": max_tokens}

    messages: list[Json] = []
    system = body.get("system")
    if system is not None:
        text = _system_text(system)
        if text:
            messages.append({"role": "system", "content": text})
    for i, m in enumerate(raw_messages):
        path = f"messages.{i}"
        if not isinstance(m, dict):
            raise _invalid(path, f"expected an object, got {_type_name(m)}")
        role = _require(m, "role", f"{path}.role", str, "a string")
        if role not in _ROLES:
            raise _invalid(f"{path}.role", f"expected 'user' or 'assistant', got {role!r}")
        content = _require(m, "content", f"{path}.content", (str, list), "a string or a list")
        if role == "user":
            messages.extend(_user_messages(content, path))
        else:
            messages.append(_assistant_message(content, path))
    out["messages"] = messages

    for key, kind, what in (
        ("temperature", (int, float), "a number"),
        ("top_p", (int, float), "a number"),
    ):
        v = _optional(body, key, key, kind, what)
        if v is not None:
            out[key] = v
    stops = _optional(body, "stop_sequences", "stop_sequences", list, "a list of strings")
    if stops:
        for j, s in enumerate(stops):
            if not isinstance(s, str):
                raise _invalid(f"stop_sequences.{j}", f"expected a string, got {_type_name(s)}")
        out["stop"] = list(stops)
    if _optional(body, "stream", "stream", bool, "a boolean"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = _optional(body, "metadata", "metadata", dict, "an object")
    if metadata and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    tools = _optional(body, "tools", "tools", list, "a list of tools")
    if tools:
        out["tools"] = [_tool(t, f"tools.{j}") for j, t in enumerate(tools)]
    choice = _optional(body, "tool_choice", "tool_choice", dict, "an object")
    if choice is not None and tools:
        _tool_choice(choice, out)
    # top_k, thinking, service_tier have no OpenAI counterpart and are dropped.
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _invalid(
            "system", f"expected a string or a list of text blocks, got {_type_name(system)}"
        )
    texts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"system.{j}", "expected a text block")
        texts.append(_require(block, "text", f"system.{j}.text", str, "a string"))
    return "\n\n".join(texts)


def _block_type(block: Any, path: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(block, dict):
        raise _invalid(path, f"expected a content block object, got {_type_name(block)}")
    kind = _require(block, "type", f"{path}.type", str, "a string")
    if kind not in allowed:
        raise _invalid(
            f"{path}.type",
            f"unsupported block type {kind!r} here (expected one of {', '.join(allowed)})",
        )
    return str(kind)


def _image_part(block: Json, path: str) -> Json:
    source = _require(block, "source", f"{path}.source", dict, "an object")
    kind = source.get("type")
    if kind == "base64":
        media = _require(source, "media_type", f"{path}.source.media_type", str, "a string")
        data = _require(source, "data", f"{path}.source.data", str, "a string")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        url = _require(source, "url", f"{path}.source.url", str, "a string")
        return {"type": "image_url", "image_url": {"url": url}}
    raise _invalid(f"{path}.source.type", f"expected 'base64' or 'url', got {kind!r}")


def _document_part(block: Json, path: str) -> Json:
    source = _require(block, "source", f"{path}.source", dict, "an object")
    kind = source.get("type")
    if kind == "base64":
        media = _require(source, "media_type", f"{path}.source.media_type", str, "a string")
        data = _require(source, "data", f"{path}.source.data", str, "a string")
        file: Json = {"file_data": f"data:{media};base64,{data}"}
        if isinstance(block.get("title"), str):
            file["filename"] = block["title"]
        return {"type": "file", "file": file}
    if kind == "text":
        return {
            "type": "text",
            "text": _require(source, "data", f"{path}.source.data", str, "a string"),
        }
    raise _invalid(
        f"{path}.source.type", f"document source {kind!r} is not supported (use base64 or text)"
    )


def _user_messages(content: str | list[Any], path: str) -> list[Json]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[Json] = []
    tool_images: list[Json] = []  # OpenAI tool messages carry text only: images go to the user turn
    parts: list[Json] = []
    for j, block in enumerate(content):
        bpath = f"{path}.content.{j}"
        kind = _block_type(block, bpath, _USER_BLOCKS)
        if kind == "text":
            parts.append(
                {"type": "text", "text": _require(block, "text", f"{bpath}.text", str, "a string")}
            )
        elif kind == "image":
            parts.append(_image_part(block, bpath))
        elif kind == "document":
            parts.append(_document_part(block, bpath))
        else:
            text, images = _tool_result(block, bpath)
            call_id = _require(block, "tool_use_id", f"{bpath}.tool_use_id", str, "a string")
            tool_messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            tool_images.extend(images)
    out = tool_messages
    parts = tool_images + parts
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out


def _tool_result(block: Json, path: str) -> tuple[str, list[Json]]:
    content = block.get("content")
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise _invalid(f"{path}.content", f"expected a string or a list, got {_type_name(content)}")
    texts: list[str] = []
    images: list[Json] = []
    for k, inner in enumerate(content):
        ipath = f"{path}.content.{k}"
        kind = _block_type(inner, ipath, ("text", "image"))
        if kind == "text":
            texts.append(_require(inner, "text", f"{ipath}.text", str, "a string"))
        else:
            images.append(_image_part(inner, ipath))
    return "\n".join(texts), images


def _assistant_message(content: str | list[Any], path: str) -> Json:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[Json] = []
    for j, block in enumerate(content):
        bpath = f"{path}.content.{j}"
        kind = _block_type(block, bpath, _ASSISTANT_BLOCKS)
        if kind == "text":
            texts.append(_require(block, "text", f"{bpath}.text", str, "a string"))
        elif kind == "tool_use":
            call_id = _require(block, "id", f"{bpath}.id", str, "a string")
            name = _require(block, "name", f"{bpath}.name", str, "a string")
            args = _require(block, "input", f"{bpath}.input", dict, "an object")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
                }
            )
        # thinking blocks are signed for Anthropic alone and cannot be replayed elsewhere.
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool(tool: Any, path: str) -> Json:
    if not isinstance(tool, dict):
        raise _invalid(path, f"expected a tool object, got {_type_name(tool)}")
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise _invalid(f"{path}.type", f"server tool {kind!r} is not supported by this gateway")
    name = _require(tool, "name", f"{path}.name", str, "a string")
    schema = _require(tool, "input_schema", f"{path}.input_schema", dict, "a JSON schema object")
    fn: Json = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def _tool_choice(choice: Json, out: Json) -> None:
    kind = choice.get("type")
    if kind == "tool":
        name = _require(choice, "name", "tool_choice.name", str, "a string")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind in TOOL_CHOICE_FROM_ANTHROPIC:
        out["tool_choice"] = TOOL_CHOICE_FROM_ANTHROPIC[str(kind)]
    else:
        raise _invalid(
            "tool_choice.type", f"expected 'auto', 'any', 'tool' or 'none', got {kind!r}"
        )
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def count_tokens(body: Json) -> Json:
    """``{"input_tokens": N}`` for a ``/v1/messages/count_tokens`` body, counted locally:
    the request is validated and translated as ``/v1/messages`` is, then estimated by the
    gateway's own typical count (``budget.bound.measure(...).typical``: ~4 bytes of text a
    token over system, messages, tool definitions and tool traffic, 4 a message, images at
    Anthropic's per-image maximum). No tokenizer of Anthropic's is available offline, so
    this is an estimate, not the upstream's exact count."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    request = anthropic_request_to_openai({**body, "max_tokens": 1})  # count_tokens takes none
    model = str(body.get("model", ""))
    return {"input_tokens": measure(request).typical("anthropic", model)}


# --------------------------------------------------------------------------- response


def message_id(upstream_id: Any) -> str:
    """An Anthropic-style ``msg_`` id, derived from the upstream id when there is one."""
    if isinstance(upstream_id, str) and upstream_id:
        if upstream_id.startswith("msg_"):
            return upstream_id
        return "msg_" + upstream_id.removeprefix("chatcmpl-")
    return f"msg_{uuid.uuid4().hex}"


def usage_to_anthropic(usage: Any) -> Json:
    """Anthropic ``usage`` from OpenAI's (whose prompt_tokens include cached tokens)."""
    u = usage if isinstance(usage, dict) else {}
    details = u.get("prompt_tokens_details") or {}
    read = token_count(details.get("cached_tokens"))
    written = token_count(details.get("cache_creation_tokens"))
    return {
        "input_tokens": max(0, token_count(u.get("prompt_tokens")) - read - written),
        "output_tokens": token_count(u.get("completion_tokens")),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def stop_reason(finish_reason: Any, has_tool_calls: bool) -> str:
    """Anthropic's stop_reason for an OpenAI finish_reason."""
    if has_tool_calls and finish_reason in (None, "stop"):
        return "tool_use"  # Anthropic clients loop on tool_use, whatever upstream said
    return FINISH_TO_STOP_REASON.get(str(finish_reason), "end_turn")


def _tool_input(arguments: Any) -> Json:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if arguments else {}
    except (TypeError, ValueError):
        value = {}  # truncated arguments (finish_reason "length") cannot be recovered
    return value if isinstance(value, dict) else {}


def openai_response_to_anthropic(resp: Json, model: str) -> Json:
    """Translate an OpenAI ``chat.completion`` into an Anthropic Message object."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[Json] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if not text and isinstance(message.get("refusal"), str):
        text = message["refusal"]
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    for call in calls:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": fn.get("name") or "",
                "input": _tool_input(fn.get("arguments")),
            }
        )
    return {
        "id": message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), bool(calls)),
        "stop_sequence": None,
        "usage": usage_to_anthropic(resp.get("usage")),
    }


# --------------------------------------------------------------------------- stream


def sse_frame(event: Json) -> bytes:
    """One SSE frame: ``event: <type>`` then the JSON data line and a blank line."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + _encode(event) + b"\n\n"


class AnthropicStreamEncoder:
    """OpenAI chunks in, Anthropic SSE frames out: message_start, one content block at a
    time (text or tool_use with input_json_delta), message_delta, message_stop.

    ``feed`` each chunk as the gateway yields it and send the bytes; call ``finish`` once at
    the end (or ``error`` instead, if the stream failed).
    """

    def __init__(self, model: str, message_id: str | None = None) -> None:
        self._model = model
        self._id = message_id
        self._started = False
        self._finished = False
        self._block = -1  # index of the open content block, -1 when none is open
        self._next_block = 0
        self._open_kind = ""
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index -> block index
        self._finish_reason: str | None = None
        self._usage: Any = None

    def feed(self, chunk: Json) -> bytes:
        """The frames for one OpenAI ``chat.completion.chunk``."""
        out: list[Json] = []
        if not self._started:
            out.append(self._message_start(chunk))
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Anthropic has a single answer per message
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open_kind != "text":
                    self._open(out, {"type": "text", "text": ""}, "text")
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                self._tool_delta(out, call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                self._close(out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        return b"".join(sse_frame(e) for e in out)

    def finish(self) -> bytes:
        """The closing frames: stop the open block, message_delta, message_stop."""
        if self._finished:
            return b""
        out: list[Json] = []
        if not self._started:
            out.append(self._message_start({}))
        self._close(out)
        self._finished = True
        usage = usage_to_anthropic(self._usage)
        has_tools = bool(self._tool_blocks)
        out.append(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason(self._finish_reason, has_tools),
                    "stop_sequence": None,
                },
                "usage": usage,
            }
        )
        out.append({"type": "message_stop"})
        return b"".join(sse_frame(e) for e in out)

    def error(self, err: RouteguardError) -> bytes:
        """An ``event: error`` frame ending a stream that failed after it started."""
        self._finished = True
        return sse_frame(error_to_anthropic(err))

    def _message_start(self, chunk: Json) -> Json:
        self._started = True
        if self._id is None:
            self._id = message_id(chunk.get("id"))
        message: Json = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # OpenAI reports usage only at the end; message_delta carries the real counts.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return {"type": "message_start", "message": message}

    def _tool_delta(self, out: list[Json], call: Any) -> None:
        if not isinstance(call, dict):
            return
        n = call.get("index", 0)
        fn = call.get("function") or {}
        if n not in self._tool_blocks:
            block: Json = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": fn.get("name") or "",
                "input": {},
            }
            self._open(out, block, f"tool{n}")
            self._tool_blocks[n] = self._block
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            # Deltas for a tool call whose block was closed keep its index: the SDK
            # accumulates by index, and OpenAI streams one call after another anyway.
            out.append(
                {
                    "type": "content_block_delta",
                    "index": self._tool_blocks[n],
                    "delta": {"type": "input_json_delta", "partial_json": args},
                }
            )

    def _open(self, out: list[Json], block: Json, kind: str) -> None:
        self._close(out)
        self._block = self._next_block
        self._next_block += 1
        self._open_kind = kind
        out.append({"type": "content_block_start", "index": self._block, "content_block": block})

    def _close(self, out: list[Json]) -> None:
        if self._block >= 0:
            out.append({"type": "content_block_stop", "index": self._block})
        self._block = -1
        self._open_kind = ""

    def _delta(self, delta: Json) -> Json:
        return {"type": "content_block_delta", "index": self._block, "delta": delta}


# --------------------------------------------------------------------------- errors


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    if status in STATUS_ERROR_TYPE:
        return STATUS_ERROR_TYPE[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_to_anthropic(err: RouteguardError) -> Json:
    """A routeguard error as Anthropic's ``{"type": "error", "error": {...}}`` body."""
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(err.status_code), "message": err.message},
    }
