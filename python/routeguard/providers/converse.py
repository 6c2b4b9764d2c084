"""OpenAI chat <-> Bedrock Converse, pure translation (no I/O): used by :mod:`.bedrock`.

Request: the turns walked by :mod:`.blocks` (which Anthropic's adapter shares: Converse's
shape is Claude's), each block spelled Converse's way (images and documents as inline bytes,
``toolUse`` / ``toolResult`` blocks, cache marks as ``cachePoint`` blocks), sampling to
``inferenceConfig``, ``reasoning_effort`` to Anthropic's ``thinking`` in
``additionalModelRequestFields``, ``response_format`` to a forced tool whose input is the
answer. Response: blocks back to content and ``tool_calls``, ``stopReason`` to
``finish_reason``, usage with cache reads and writes counted in the prompt.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from routeguard.errors import UpstreamBadRequest
from routeguard.model_ids import bedrock_model
from routeguard.providers import blocks, client_headers
from routeguard.providers.base import Json
from routeguard.providers.blocks import STRUCTURED_TOOL, structured_schema
from routeguard.providers.parts import parse_data_url

STOP_REASON_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# OpenAI request fields this adapter translates (others: refused, or dropped with drop_params).
PARAMS: frozenset[str] = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "stop", "n", "user", "tools", "tool_choice", "reasoning_effort",
        "response_format",
    }
)  # fmt: skip
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                  "image/gif": "gif", "image/webp": "webp"}  # fmt: skip
_OOXML = "application/vnd.openxmlformats-officedocument"
_DOC_FORMATS = {"application/pdf": "pdf", "text/csv": "csv", "text/plain": "txt",
                "text/html": "html", "text/markdown": "md", "application/msword": "doc",
                f"{_OOXML}.wordprocessingml.document": "docx", "application/vnd.ms-excel": "xls",
                f"{_OOXML}.spreadsheetml.sheet": "xlsx"}  # fmt: skip
_METADATA_UNSAFE = re.compile(r"[^a-zA-Z0-9\s:_@$#=/+,\-.]")


def family(model: str) -> str:
    """The model's publisher from its id, inference-profile id or ARN (``anthropic``,
    ``meta``, ``mistral``, ``amazon``, ``cohere``...)."""
    return bedrock_model(model)[0]


def bad(message: str, param: str | None = None) -> UpstreamBadRequest:
    """A 400 naming what bedrock cannot take (and the field, as ``param``)."""
    err = UpstreamBadRequest(f"bedrock: {message}")
    err.param = param
    return err


# --------------------------------------------------------------------------- request


class _Spelling:
    """Converse's spelling of each block (see :class:`.blocks.Spelling`)."""

    bad = staticmethod(bad)

    def text(self, text: str, part: Json | None) -> list[Json]:
        """A text block (a cache mark follows as its own block)."""
        return [{"text": text}]

    def mark(self, part: Json) -> list[Json]:
        """Anthropic's prompt caching on Bedrock: a part marked ``cache_control`` (as the
        proxy's /v1/messages passes it on) ends a cacheable prefix, which Converse spells as
        a cachePoint block after it."""
        return [_CACHE_POINT] if part.get("cache_control") else []

    def image(self, url: Any, part: Json, at: str) -> Json:
        """An image block: inline bytes from a data URL (Converse takes no image URLs)."""
        parsed = parse_data_url(url) if isinstance(url, str) else None
        if parsed is None:
            raise bad(
                f"{at}: bedrock takes images inline only: send a data: URL "
                "(data:image/png;base64,...)",
                "messages",
            )
        fmt = _IMAGE_FORMATS.get(parsed[0].lower())
        if fmt is None:
            raise bad(f"{at}: image type {parsed[0]} is not supported", "messages")
        return {"image": {"format": fmt, "source": {"bytes": parsed[1]}}}

    def document(self, part: Json, at: str, index: int) -> Json:
        """A document block from an inline file of a known type."""
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        parsed = parse_data_url(data) if isinstance(data, str) else None
        fmt = _DOC_FORMATS.get(parsed[0].lower()) if parsed else None
        if parsed is None or fmt is None:
            raise bad(f"{at}: only inline documents (a base64 data URL) of a known type")
        assert isinstance(file, dict)
        name = str(file.get("filename") or f"document-{index}").rsplit(".", 1)[0]
        return {"document": {"format": fmt, "name": name[:200], "source": {"bytes": parsed[1]}}}

    def tool_use(self, call_id: Any, name: str, arguments: Json, index: int) -> Json:
        """A ``toolUse`` block."""
        return {"toolUse": {"toolUseId": str(call_id or f"tooluse_{index}"), "name": name,
                            "input": arguments}}  # fmt: skip

    def tool_result(self, call_id: str, content: Any, where: str) -> Json:
        """A ``toolResult`` block, its texts as text content (one empty text when none)."""
        texts = blocks.texts(content, where, bad)
        return {
            "toolResult": {"toolUseId": call_id, "content": [{"text": t} for t in texts or [""]]}
        }


_SPELLING = _Spelling()
_CACHE_POINT: Json = {"cachePoint": {"type": "default"}}


def request_to_converse(request: Json, model: str) -> Json:
    """Translate an OpenAI chat request into a Converse request body."""
    system, turns = blocks.to_turns(request, _SPELLING)
    body: Json = {"messages": turns}
    if system:
        body["system"] = system
    sampled = blocks.sampling(request, bad, "n")
    config: Json = {}
    for ours, theirs in (("max_tokens", "maxTokens"), ("temperature", "temperature"),
                         ("top_p", "topP"), ("stop", "stopSequences")):  # fmt: skip
        if ours in sampled:
            config[theirs] = sampled[ours]
    if "user" in sampled:
        # requestMetadata values allow letters, digits, spaces and ``:_@$#=/+,-.`` only.
        body["requestMetadata"] = {"user": _METADATA_UNSAFE.sub("_", sampled["user"])[:256]}
    budget = blocks.thinking(request, "bedrock")
    if budget and family(model) != "anthropic":
        raise bad(
            f"reasoning_effort is translated for Anthropic models only, not {model!r}",
            "reasoning_effort",
        )
    if budget:
        limit = config.setdefault("maxTokens", budget + 4096)
        blocks.check_thinking(request, budget, limit, sampled, bad)
        body["additionalModelRequestFields"] = {
            "thinking": {"type": "enabled", "budget_tokens": budget}
        }
    if config:
        body["inferenceConfig"] = config
    schema = structured_schema(request)
    tools = request.get("tools")
    if schema is not None:
        if tools or "additionalModelRequestFields" in body:
            raise blocks.refuse_structured_with(bad, "bedrock")
        spec = {
            "name": STRUCTURED_TOOL,
            "description": blocks.STRUCTURED_TOOL_DESCRIPTION,
            "inputSchema": {"json": schema},
        }
        body["toolConfig"] = {
            "tools": [{"toolSpec": spec}],
            "toolChoice": {"tool": {"name": STRUCTURED_TOOL}},
        }
    elif tools:
        config_tools: Json = {"tools": [_tool(t, i) for i, t in enumerate(tools)]}
        choice = request.get("tool_choice")
        if choice == "none" and not _has_tool_blocks(turns):
            pass  # no tools offered at all: nothing for the model to call
        else:
            mapped = _tool_choice(choice)
            if mapped is not None:
                config_tools["toolChoice"] = mapped
            body["toolConfig"] = config_tools
    betas = client_headers.betas()
    if betas and family(model) == "anthropic":  # the client's anthropic-beta, as Bedrock takes it
        body.setdefault("additionalModelRequestFields", {})["anthropic_beta"] = betas
    return body


def _has_tool_blocks(turns: list[Json]) -> bool:
    return any("toolUse" in b or "toolResult" in b for t in turns for b in t["content"])


def _tool(t: Any, i: int) -> Json:
    name, schema, description = blocks.function_tool(t, i, bad, "tools")
    spec: Json = {"name": name, "inputSchema": {"json": schema}}
    if description:
        spec["description"] = description
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> Json | None:
    if choice is None or choice == "auto" or choice == "none":
        # Converse has no "none": with tool blocks in the history the tools must stay.
        return {"auto": {}} if choice is not None else None
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"tool": {"name": choice["function"].get("name")}}
    raise bad(f"tool_choice {choice!r} is not supported", "tool_choice")


# --------------------------------------------------------------------------- response


def usage_from_converse(usage: Any) -> Json | None:
    """OpenAI ``usage`` from Converse's (whose inputTokens exclude cache reads and writes);
    None without usable counts (see :func:`blocks.usage`)."""
    u = usage if isinstance(usage, dict) else {}
    return blocks.usage(u.get("inputTokens"), u.get("cacheReadInputTokens"),
                        u.get("cacheWriteInputTokens"), u.get("outputTokens"))  # fmt: skip


def response_from_converse(data: Json, model: str, structured: bool = False) -> Json:
    """Translate a Converse response into an OpenAI ``chat.completion``."""
    output = data.get("output") if isinstance(data.get("output"), dict) else {}
    message_in = output.get("message") if isinstance(output, dict) else None
    content = message_in.get("content") if isinstance(message_in, dict) else None
    texts: list[str] = []
    calls: list[Json] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if "text" in block and not structured:
            texts.append(str(block["text"]))
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            arguments = json.dumps(use.get("input") or {}, ensure_ascii=False)
            if structured and use.get("name") == STRUCTURED_TOOL:
                texts.append(arguments)
            elif not structured:
                calls.append(blocks.tool_call(use.get("toolUseId"), use.get("name"), arguments))
        # reasoningContent, citations, guardContent: no OpenAI counterpart
    finish = blocks.finish_reason(data.get("stopReason"), STOP_REASON_TO_FINISH, structured)
    out = blocks.completion(f"chatcmpl-{uuid.uuid4().hex}", model, texts, calls, finish)
    counted = usage_from_converse(data.get("usage"))
    if counted is not None:  # no made-up zeros: the gateway estimates then
        out["usage"] = counted
    return out
