"""Anthropic Messages API (``POST {api_base}/v1/messages``) behind the OpenAI-shaped Provider.

Flow: an OpenAI chat request -> :func:`request_to_anthropic` (the turns walked by
:mod:`.blocks`, which Bedrock Converse shares, each block spelled Anthropic's way) -> upstream
-> :func:`response_from_anthropic` back to a ``chat.completion``. A stream's SSE events go
through :class:`StreamDecoder`, which turns them into ``chat.completion.chunk`` dicts. Error
bodies become ProviderErrors through :data:`ERRORS`; posting and the stream loop are
:mod:`.wire`'s.

The tables below (stop reasons, tool choice, error types, usage) are the one place where the
two formats meet: ``routeguard.server.messages`` imports them for the inverse direction (the
proxy's own ``/v1/messages`` endpoint), so this module must never import from ``server``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from routeguard.deployment import Deployment
from routeguard.errors import ProviderError, UpstreamBadRequest
from routeguard.providers import blocks, client_headers, http, wire
from routeguard.providers.base import (
    CAPABILITIES,
    Json,
    check_params,
    refuse_unsupported,
    unsupported,
)
from routeguard.providers.blocks import STRUCTURED_TOOL, structured_schema
from routeguard.providers.parts import parse_data_url

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


def usage_from_anthropic(usage: Any) -> Json | None:
    """OpenAI ``usage`` from Anthropic's (whose input_tokens exclude cache reads and writes);
    None without usable counts (see :func:`blocks.usage`)."""
    u = usage if isinstance(usage, dict) else {}
    return blocks.usage(u.get("input_tokens"), u.get("cache_read_input_tokens"),
                        u.get("cache_creation_input_tokens"), u.get("output_tokens"))  # fmt: skip


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


class _Spelling:
    """Anthropic's spelling of each block (see :class:`.blocks.Spelling`)."""

    bad = staticmethod(_bad)

    def text(self, text: str, part: Json | None) -> list[Json]:
        """A text block, keeping the part's ``cache_control``."""
        block: Json = {"type": "text", "text": text}
        if part is not None and "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        return [block]

    def mark(self, part: Json) -> list[Json]:
        """Nothing: a cache mark stays on its block."""
        return []

    def image(self, url: Any, part: Json, at: str) -> Json:
        """An image block: base64 from a data URL, else by URL."""
        if not isinstance(url, str):
            raise _bad(f"{at}.image_url.url must be a string")
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

    def document(self, part: Json, at: str, index: int) -> Json:
        """A document block from an inline file (a base64 data URL)."""
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        parsed = parse_data_url(data) if isinstance(data, str) else None
        if parsed is None:
            raise _bad(
                f"{at}: only inline files (file.file_data as a base64 data URL) are supported"
            )
        return {
            "type": "document",
            "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]},
        }

    def tool_use(self, call_id: Any, name: str, arguments: Json, index: int) -> Json:
        """A ``tool_use`` block."""
        return {"type": "tool_use", "id": str(call_id or f"toolu_{index}"), "name": name,
                "input": arguments}  # fmt: skip

    def tool_result(self, call_id: str, content: Any, where: str) -> Json:
        """A ``tool_result`` block: a string as it is, parts as text blocks."""
        block: Json = {"type": "tool_result", "tool_use_id": call_id}
        if isinstance(content, str):
            if content:
                block["content"] = content
        elif content is not None:
            parts = blocks.text_blocks(content, where, self)
            if parts:
                block["content"] = parts
        return block


_SPELLING = _Spelling()


def request_to_anthropic(request: Json, model: str) -> Json:
    """Translate an OpenAI chat request into an Anthropic Messages request body."""
    system, turns = blocks.to_turns(request, _SPELLING)
    sampled = blocks.sampling(request, _bad)
    body: Json = {
        "model": model,
        "max_tokens": sampled.get("max_tokens", DEFAULT_MAX_TOKENS),
        "messages": [_collapse(t) for t in turns],
    }
    if system:
        if any("cache_control" in b for b in system):
            body["system"] = system
        else:
            body["system"] = "\n\n".join(b["text"] for b in system)
    for key in ("temperature", "top_p"):
        if key in sampled:
            body[key] = sampled[key]
    if "stop" in sampled:
        body["stop_sequences"] = sampled["stop"]
    if "user" in sampled:
        body["metadata"] = {"user_id": sampled["user"]}
    budget = blocks.thinking(request, "anthropic")
    if budget:
        blocks.check_thinking(request, budget, body["max_tokens"], sampled, _bad, " on anthropic")
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    schema = structured_schema(request)
    if schema is not None:
        if request.get("tools") or "thinking" in body:
            raise blocks.refuse_structured_with(_bad, "anthropic")
        body["tools"] = [
            {
                "name": STRUCTURED_TOOL,
                "input_schema": schema,
                "description": blocks.STRUCTURED_TOOL_DESCRIPTION,
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


def _collapse(turn: Json) -> Json:
    content = turn["content"]
    if len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
        return {"role": turn["role"], "content": content[0]["text"]}
    return turn


def _tool(t: Any, i: int) -> Json:
    name, schema, description = blocks.function_tool(t, i, _bad)
    tool: Json = {"name": name, "input_schema": schema}
    if description:
        tool["description"] = description
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
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            if structured and block.get("name") == STRUCTURED_TOOL:
                texts.append(arguments)
            else:
                calls.append(blocks.tool_call(block.get("id"), block.get("name"), arguments))
        # thinking / redacted_thinking / server tool blocks have no OpenAI counterpart.
    finish = blocks.finish_reason(data.get("stop_reason"), STOP_REASON_TO_FINISH, structured)
    out = blocks.completion(data.get("id") or "msg_unknown", data.get("model"), texts, calls,
                            finish)  # fmt: skip
    counted = usage_from_anthropic(data.get("usage"))
    if counted is not None:  # no made-up zeros: the gateway estimates then
        out["usage"] = counted
    return out


# --------------------------------------------------------------------------- stream


class StreamDecoder:
    """Anthropic SSE events in, OpenAI ``chat.completion.chunk`` dicts out.

    Feed each ``(event, data)`` pair; ``done`` turns true at ``message_stop``. An ``error``
    event raises the mapped ProviderError.
    """

    terminator = "message_stop"

    def __init__(self, structured: bool = False) -> None:
        self.done = False
        # JSON output: the forced tool's input is the content.
        self._out = blocks.ChunkMaker("msg_unknown", None, structured)
        self._usage: Json = {}
        self._stop: str | None = None

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
        out = self._out
        if kind == "message_start":
            msg = payload.get("message") or {}
            out.id = str(msg.get("id") or out.id)
            out.model = msg.get("model")
            self._usage.update(msg.get("usage") or {})
            return [out.chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                return out.tool_start(payload.get("index"), block.get("id"), block.get("name"))
            return out.text(block.get("text")) if block.get("type") == "text" else []
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                return out.text(delta.get("text"))
            if delta.get("type") == "input_json_delta":
                return out.tool_input(payload.get("index"), delta.get("partial_json"))
            return []  # thinking_delta, signature_delta, citations_delta
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
            finish = blocks.finish_reason(self._stop, STOP_REASON_TO_FINISH, out.structured)
            counted = usage_from_anthropic(self._usage)
            if counted is None:
                # No usable usage reported: no usage chunk, so the gateway charges from what
                # was sent rather than a made-up zero.
                return [out.chunk({}, finish)]
            return [out.chunk({}, finish), out.usage_chunk(counted)]
        return []  # ping, content_block_stop, and event types added later

    @property
    def complete(self) -> bool:
        """Whether ``message_stop`` arrived."""
        return self.done

    def finish(self) -> list[Json]:
        """Nothing: the usage chunk went out with ``message_stop``."""
        return []


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

    async def count_tokens(self, body: Json, deployment: Deployment, timeout: float) -> int:
        """``POST /v1/messages/count_tokens`` with a client's Messages-shaped ``body`` (its
        model replaced by the deployment's), the deployment's key and the client's
        ``anthropic-version``/``anthropic-beta``: the upstream's ``input_tokens``."""
        url = f"{deployment.api_base}/v1/messages/count_tokens"
        data = await wire.post(
            url,
            _headers(deployment),
            {**body, "model": deployment.model},
            timeout,
            errors=ERRORS,
            what="anthropic token count",
            require=("input_tokens", int),
        )
        return int(data["input_tokens"])

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Anthropic has no embeddings endpoint: always raises UpstreamBadRequest."""
        raise unsupported(self, "embeddings")
