"""Anthropic Messages API (``POST {api_base}/v1/messages``) behind the OpenAI-shaped Provider.

Flow: an OpenAI chat request -> :func:`request_to_anthropic` (system hoisted into ``system``,
content parts and tool calls turned into blocks, tool results into user ``tool_result``
blocks, same-role turns merged) -> upstream -> :func:`response_from_anthropic` back to a
``chat.completion``. A stream's SSE events go through :class:`StreamDecoder`, which turns them
into ``chat.completion.chunk`` dicts. Error bodies become ProviderErrors through
:data:`ERRORS`; posting and the stream loop are :mod:`.wire`'s.

The tables below (stop reasons, tool choice, error types, usage) are the one place where the
two formats meet: ``routeguard.server.messages`` imports them for the inverse direction (the
proxy's own ``/v1/messages`` endpoint), so this module must never import from ``server``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from routeguard.deployment import Deployment
from routeguard.errors import ProviderError, UpstreamBadRequest
from routeguard.providers import client_headers, http, wire
from routeguard.providers.base import (
    CAPABILITIES,
    Json,
    check_params,
    refuse_unsupported,
    thinking_budget,
    unsupported,
)
from routeguard.providers.parts import parse_arguments, parse_data_url
from routeguard.providers.wire import token_count

API_VERSION = "2023-06-01"
# Anthropic requires max_tokens; OpenAI clients usually leave it out.
DEFAULT_MAX_TOKENS = 4096

STOP_REASON_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP_REASON: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# OpenAI's string tool_choice values <-> Anthropic's tool_choice.type.
TOOL_CHOICE_TO_ANTHROPIC: dict[str, str] = {"auto": "auto", "required": "any", "none": "none"}
TOOL_CHOICE_FROM_ANTHROPIC: dict[str, str] = {v: k for k, v in TOOL_CHOICE_TO_ANTHROPIC.items()}
# Anthropic's documented error types and the HTTP status each comes with.
ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
STATUS_ERROR_TYPE: dict[int, str] = {v: k for k, v in ERROR_TYPE_STATUS.items()}

# Error bodies are ``{"type": "error", "error": {"type", "message"}}``. The context hints:
# "prompt is too long: N tokens > M maximum", and "input length and `max_tokens` exceed
# context limit: ..." when the prompt fits but prompt plus max_tokens does not.
ERRORS = wire.ErrorFormat(
    context_hints=("prompt is too long", "exceed context limit", "context window")
)


# --------------------------------------------------------------------------- shared pieces


def usage_from_anthropic(usage: Any) -> Json:
    """OpenAI ``usage`` from Anthropic's (whose input_tokens exclude cache reads and writes)."""
    u = usage if isinstance(usage, dict) else {}
    fresh = token_count(u.get("input_tokens"))
    read = token_count(u.get("cache_read_input_tokens"))
    written = token_count(u.get("cache_creation_input_tokens"))
    prompt = fresh + read + written
    completion = token_count(u.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written},
    }


def _bad(message: str, param: str | None = None) -> UpstreamBadRequest:
    err = UpstreamBadRequest(f"anthropic: {message}")
    err.param = param
    return err


# --------------------------------------------------------------------------- request


# OpenAI request fields this adapter translates (others: refused or, with drop_params, dropped).
PARAMS: frozenset[str] = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "stop", "n", "user", "tools", "tool_choice",
        "parallel_tool_calls", "reasoning_effort", "response_format",
    }
)  # fmt: skip
# JSON output (response_format) on Anthropic: one tool whose input schema is the answer's,
# forced with tool_choice; its input comes back as the message content.
STRUCTURED_TOOL = "structured_output"


def structured_schema(request: Json) -> Json | None:
    """The JSON schema a request's ``response_format`` asks for (``{"type": "object"}`` for
    json_object), or None when it asks for text."""
    fmt = request.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt["type"] == "json_schema" else None
    return schema if isinstance(schema, dict) else {"type": "object"}


def request_to_anthropic(request: Json, model: str) -> Json:
    """Translate an OpenAI chat request into an Anthropic Messages request body."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise _bad("'messages' must be a list")
    system: list[Json] = []
    turns: list[Json] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{where} must be an object")
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(m.get("content"), where))
        elif role == "user":
            _append_turn(turns, "user", _user_blocks(m.get("content"), where))
        elif role == "assistant":
            _append_turn(turns, "assistant", _assistant_blocks(m, where))
        elif role == "tool":
            _append_turn(turns, "user", [_tool_result_block(m, where)])
        else:
            raise _bad(f"{where}.role {role!r} is not supported (use system/user/assistant/tool)")

    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    body: Json = {
        "model": model,
        "max_tokens": max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS,
        "messages": [_collapse(t) for t in turns],
    }
    if system:
        if any("cache_control" in b for b in system):
            body["system"] = system
        else:
            body["system"] = "\n\n".join(b["text"] for b in system)
    for key in ("temperature", "top_p"):
        if request.get(key) is not None:
            body[key] = request[key]
    stop = request.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    n = request.get("n")
    if isinstance(n, int) and n > 1:
        raise _bad("n > 1 is not supported; send n separate requests")
    user = request.get("user")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    effort = request.get("reasoning_effort")
    if effort is not None:
        budget = thinking_budget(effort, "anthropic")
        if budget:
            if body["max_tokens"] <= budget:
                raise _bad(
                    f"reasoning_effort {effort!r} is {budget} thinking tokens on anthropic, "
                    f"which must stay under max_tokens ({body['max_tokens']}): raise max_tokens",
                    "max_tokens",
                )
            if body.get("temperature") not in (None, 1, 1.0) or "top_p" in body:
                raise _bad(
                    "anthropic's extended thinking (reasoning_effort) cannot be combined with "
                    "temperature or top_p; leave them unset",
                    "reasoning_effort",
                )
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    schema = structured_schema(request)
    if schema is not None:
        if request.get("tools") or "thinking" in body:
            raise _bad(
                "JSON output (response_format) is served by a forced tool on anthropic, so it "
                "cannot be combined with tools or reasoning_effort",
                "response_format",
            )
        body["tools"] = [
            {
                "name": STRUCTURED_TOOL,
                "input_schema": schema,
                "description": "Give your answer as this tool's input: the JSON asked for.",
            }
        ]
        body["tool_choice"] = {"type": "tool", "name": STRUCTURED_TOOL}
    tools = request.get("tools")
    if tools:
        body["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
        choice = _tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    return body


def _append_turn(turns: list[Json], role: str, blocks: list[Json]) -> None:
    # Anthropic wants strictly alternating turns: same-role neighbours are merged.
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _collapse(turn: Json) -> Json:
    blocks = turn["content"]
    if len(blocks) == 1 and blocks[0]["type"] == "text" and "cache_control" not in blocks[0]:
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return turn


def _text_block(text: str, part: Json | None = None) -> Json:
    block: Json = {"type": "text", "text": text}
    if part is not None and "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _text_blocks(content: Any, where: str) -> list[Json]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of parts")
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise _bad(f"{where}.content[{j}] must be a text part here")
        text = part.get("text") if part["type"] == "text" else part.get("refusal")
        if isinstance(text, str) and text:
            blocks.append(_text_block(text, part))
    return blocks


def _user_blocks(content: Any, where: str) -> list[Json]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks: list[Json] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.extend(_text_blocks([part], where))
        elif kind == "image_url":
            assert isinstance(part, dict)
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _bad(f"{where}.content[{j}].image_url.url must be a string")
            blocks.append(_image_block(url, part))
        elif kind == "file":
            assert isinstance(part, dict)
            blocks.append(_document_block(part, f"{where}.content[{j}]"))
        else:
            raise _bad(f"{where}.content[{j}]: content part type {kind!r} is not supported")
    return blocks


def _image_block(url: str, part: Json) -> Json:
    parsed = parse_data_url(url)
    source: Json
    if parsed is not None:
        source = {"type": "base64", "media_type": parsed[0], "data": parsed[1]}
    else:
        source = {"type": "url", "url": url}
    block: Json = {"type": "image", "source": source}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _document_block(part: Json, where: str) -> Json:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    parsed = parse_data_url(data) if isinstance(data, str) else None
    if parsed is None:
        raise _bad(
            f"{where}: only inline files (file.file_data as a base64 data URL) are supported"
        )
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]},
    }


def _assistant_blocks(m: Json, where: str) -> list[Json]:
    blocks = _text_blocks(m.get("content"), where)
    calls = m.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad(f"{where}.tool_calls must be a list")
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"{where}.tool_calls[{k}].function.name is missing")
        assert isinstance(call, dict)
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{k}"),
                "name": fn["name"],
                "input": parse_arguments(fn.get("arguments"), f"{where}.tool_calls[{k}]"),
            }
        )
    return blocks


def _tool_result_block(m: Json, where: str) -> Json:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where}.tool_call_id is missing")
    block: Json = {"type": "tool_result", "tool_use_id": call_id}
    content = m.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content is not None:
        parts = _text_blocks(content, where)
        if parts:
            block["content"] = parts
    return block


def _tool(t: Any, i: int) -> Json:
    fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _bad(f"tools[{i}]: only function tools with a name are supported")
    tool: Json = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        tool["description"] = fn["description"]
    return tool


def _tool_choice(choice: Any, parallel: Any) -> Json | None:
    out: Json | None
    if choice is None:
        out = {"type": "auto"} if parallel is False else None
    elif isinstance(choice, str) and choice in TOOL_CHOICE_TO_ANTHROPIC:
        out = {"type": TOOL_CHOICE_TO_ANTHROPIC[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise _bad(f"tool_choice {choice!r} is not supported")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


# --------------------------------------------------------------------------- response


def response_from_anthropic(data: Json, structured: bool = False) -> Json:
    """Translate an Anthropic Message into an OpenAI ``chat.completion``; ``structured``:
    the request asked for JSON output, which arrives as the forced tool's input."""
    texts: list[str] = []
    calls: list[Json] = []
    for block in data.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if not structured:  # around a forced tool call, text is preamble, not the answer
                texts.append(str(block.get("text", "")))
        elif kind == "tool_use" and structured and block.get("name") == STRUCTURED_TOOL:
            texts.append(json.dumps(block.get("input") or {}, ensure_ascii=False))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
        # thinking / redacted_thinking / server tool blocks have no OpenAI counterpart.
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    stop = data.get("stop_reason")
    if structured and stop == "tool_use":
        stop = "end_turn"
    return {
        "id": data.get("id") or "msg_unknown",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_REASON_TO_FINISH.get(str(stop), "stop"),
                "logprobs": None,
            }
        ],
        "usage": usage_from_anthropic(data.get("usage")),
    }


# --------------------------------------------------------------------------- stream


class StreamDecoder:
    """Anthropic SSE events in, OpenAI ``chat.completion.chunk`` dicts out.

    Feed each ``(event, data)`` pair; ``done`` turns true at ``message_stop``. An ``error``
    event raises the mapped ProviderError.
    """

    terminator = "message_stop"

    def __init__(self, structured: bool = False) -> None:
        self.done = False
        self._structured = structured  # JSON output: the forced tool's input is the content
        self._answer_block: int | None = None
        self._id = "msg_unknown"
        self._model: Any = None
        self._created = int(time.time())
        self._usage: Json = {}
        self._stop: str | None = None
        self._tool_index: dict[int, int] = {}  # content block index -> OpenAI tool_calls index

    def feed(self, event: str, data: bytes) -> list[Json]:
        """Translate one SSE event into zero or more chunks."""
        payload = http.decode(data, "anthropic stream event")
        if not isinstance(payload, dict):
            raise ProviderError("anthropic stream event: expected a JSON object")
        kind = payload.get("type") or event
        if kind == "error" or event == "error":
            err = payload.get("error")
            etype = str(err.get("type")) if isinstance(err, dict) else "api_error"
            raise ERRORS.from_body(ERROR_TYPE_STATUS.get(etype, 500), payload)
        if kind == "message_start":
            msg = payload.get("message") or {}
            self._id = str(msg.get("id") or self._id)
            self._model = msg.get("model")
            self._usage.update(msg.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "content_block_delta":
            return self._block_delta(payload)
        if kind == "message_delta":
            delta = payload.get("delta") or {}
            self._stop = delta.get("stop_reason") or self._stop
            # message_delta usage counts are cumulative: they replace, not add.
            self._usage.update(
                {k: v for k, v in (payload.get("usage") or {}).items() if v is not None}
            )
            return []
        if kind == "message_stop":
            self.done = True
            stop = "end_turn" if self._structured and self._stop == "tool_use" else self._stop
            finish = STOP_REASON_TO_FINISH.get(str(stop), "stop")
            if not self._usage:
                # No usage reported: no usage chunk, so the gateway charges from what was
                # sent rather than a made-up zero.
                return [self._chunk({}, finish)]
            usage_chunk = self._chunk(None)
            usage_chunk["usage"] = usage_from_anthropic(self._usage)
            return [self._chunk({}, finish), usage_chunk]
        return []  # ping, content_block_stop, and event types added later

    @property
    def complete(self) -> bool:
        """Whether ``message_stop`` arrived."""
        return self.done

    def finish(self) -> list[Json]:
        """Nothing: the usage chunk went out with ``message_stop``."""
        return []

    def _block_start(self, payload: Json) -> list[Json]:
        block = payload.get("content_block") or {}
        index = payload.get("index")
        if self._structured:
            if block.get("type") == "tool_use" and block.get("name") == STRUCTURED_TOOL:
                self._answer_block = index if isinstance(index, int) else None
            return []  # only the forced tool's input is the answer
        if block.get("type") == "tool_use" and isinstance(index, int):
            n = self._tool_index[index] = len(self._tool_index)
            call = {
                "index": n,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, payload: Json) -> list[Json]:
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if self._structured:
            index = payload.get("index")
            answer = self._answer_block is not None and index == self._answer_block
            if kind == "input_json_delta" and delta.get("partial_json") and answer:
                return [self._chunk({"content": delta["partial_json"]})]
            return []
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            n = self._tool_index.get(payload.get("index", -1))
            if n is not None:
                call = {"index": n, "function": {"arguments": delta["partial_json"]}}
                return [self._chunk({"tool_calls": [call]})]
        return []  # thinking_delta, signature_delta, citations_delta

    def _chunk(self, delta: Json | None, finish: str | None = None) -> Json:
        chunk: Json = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
        }
        if delta is not None:
            chunk["choices"] = [
                {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            ]
        return chunk


# --------------------------------------------------------------------------- provider


def _headers(dep: Deployment) -> dict[str, str]:
    h = {"anthropic-version": API_VERSION, **dep.headers}
    sent = client_headers.ANTHROPIC.get()  # the client's own anthropic-version and betas
    if sent is not None:
        if sent.version is not None:
            h["anthropic-version"] = sent.version
        merged = client_headers.betas(h.pop("anthropic-beta", None))
        if merged:
            h["anthropic-beta"] = ",".join(merged)
    if dep.api_key is not None:
        h["x-api-key"] = dep.api_key.get()
    return h


class AnthropicProvider:
    """Provider for the Anthropic Messages wire format."""

    name = "anthropic"
    capabilities = CAPABILITIES - {"embeddings"}
    params = PARAMS

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming chat completion."""
        refuse_unsupported(self, "chat", request)
        request = check_params(self, request, deployment.drop_params)
        body = request_to_anthropic(request, deployment.model)
        url = f"{deployment.api_base}/v1/messages"
        data = await wire.post(
            url,
            _headers(deployment),
            body,
            timeout,
            errors=ERRORS,
            what="anthropic message",
            require=("content", list),
        )
        return response_from_anthropic(data, structured_schema(request) is not None)

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming chat completion; the last chunk carries usage."""

        def build() -> wire.Exchange:
            refuse_unsupported(self, "stream", request)
            req = check_params(self, request, deployment.drop_params)
            body = {**request_to_anthropic(req, deployment.model), "stream": True}
            url = f"{deployment.api_base}/v1/messages"
            return wire.Exchange(url, _headers(deployment), body)

        decoder = StreamDecoder(structured_schema(request) is not None)
        return wire.stream(self.name, build, decoder, timeout, errors=ERRORS)

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Anthropic has no embeddings endpoint: always raises UpstreamBadRequest."""
        raise unsupported(self, "embeddings")
