"""OpenAI chat <-> Bedrock Converse, pure translation (no I/O): used by :mod:`.bedrock`.

Request: system hoisted into ``system``, content parts to blocks (images and documents as
inline bytes), tool calls to ``toolUse`` and tool results to user ``toolResult`` blocks,
same-role turns merged (Converse wants alternation starting with the user), sampling to
``inferenceConfig``, ``reasoning_effort`` to Anthropic's ``thinking`` in
``additionalModelRequestFields``, ``response_format`` to a forced tool whose input is the
answer. Response: blocks back to content and ``tool_calls``, ``stopReason`` to
``finish_reason``, usage with cache reads and writes counted in the prompt.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from routeguard.errors import UpstreamBadRequest
from routeguard.providers import client_headers
from routeguard.providers.anthropic import STRUCTURED_TOOL, structured_schema
from routeguard.providers.base import Json, thinking_budget
from routeguard.providers.parts import parse_arguments, parse_data_url
from routeguard.providers.wire import token_count

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
# Cross-region inference profiles prefix the model id with a geography.
_GEOGRAPHIES = frozenset({"us", "eu", "apac", "us-gov", "ca", "jp", "au", "global"})


def family(model: str) -> str:
    """The model's publisher from its id, inference-profile id or ARN (``anthropic``,
    ``meta``, ``mistral``, ``amazon``, ``cohere``...)."""
    name = model.rsplit("/", 1)[-1]
    parts = name.split(".")
    if len(parts) > 2 and parts[0] in _GEOGRAPHIES:
        parts = parts[1:]
    return parts[0] if len(parts) > 1 else ""


def bad(message: str, param: str | None = None) -> UpstreamBadRequest:
    """A 400 naming what bedrock cannot take (and the field, as ``param``)."""
    err = UpstreamBadRequest(f"bedrock: {message}")
    err.param = param
    return err


# --------------------------------------------------------------------------- request


def request_to_converse(request: Json, model: str) -> Json:
    """Translate an OpenAI chat request into a Converse request body."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise bad("'messages' must be a list")
    system: list[Json] = []
    turns: list[Json] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"{where} must be an object")
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(m.get("content"), where))
        elif role == "user":
            _append(turns, "user", _user_blocks(m.get("content"), where))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(m, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(m, where)])
        else:
            raise bad(f"{where}.role {role!r} is not supported (use system/user/assistant/tool)")
    body: Json = {"messages": turns}
    if system:
        body["system"] = system
    config: Json = {}
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(max_tokens, int):
        config["maxTokens"] = max_tokens
    if request.get("temperature") is not None:
        config["temperature"] = request["temperature"]
    if request.get("top_p") is not None:
        config["topP"] = request["top_p"]
    stop = request.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    n = request.get("n")
    if isinstance(n, int) and n > 1:
        raise bad("n > 1 is not supported; send n separate requests", "n")
    user = request.get("user")
    if isinstance(user, str) and user:
        # requestMetadata values allow letters, digits, spaces and ``:_@$#=/+,-.`` only.
        body["requestMetadata"] = {"user": _METADATA_UNSAFE.sub("_", user)[:256]}
    effort = request.get("reasoning_effort")
    if effort is not None:
        budget = thinking_budget(effort, "bedrock")
        if budget and family(model) != "anthropic":
            raise bad(
                f"reasoning_effort is translated for Anthropic models only, not {model!r}",
                "reasoning_effort",
            )
        if budget:
            limit = config.setdefault("maxTokens", budget + 4096)
            if limit <= budget:
                raise bad(
                    f"reasoning_effort {effort!r} is {budget} thinking tokens, which must stay "
                    f"under max_tokens ({limit}): raise max_tokens",
                    "max_tokens",
                )
            if config.get("temperature") not in (None, 1, 1.0) or "topP" in config:
                raise bad(
                    "extended thinking (reasoning_effort) cannot be combined with temperature "
                    "or top_p; leave them unset",
                    "reasoning_effort",
                )
            body["additionalModelRequestFields"] = {
                "thinking": {"type": "enabled", "budget_tokens": budget}
            }
    if config:
        body["inferenceConfig"] = config
    schema = structured_schema(request)
    tools = request.get("tools")
    if schema is not None:
        if tools or "additionalModelRequestFields" in body:
            raise bad(
                "JSON output (response_format) is served by a forced tool on bedrock, so it "
                "cannot be combined with tools or reasoning_effort",
                "response_format",
            )
        spec = {
            "name": STRUCTURED_TOOL,
            "description": "Give your answer as this tool's input: the JSON asked for.",
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


def _append(turns: list[Json], role: str, blocks: list[Json]) -> None:
    # Converse wants alternating turns that start with the user: same-role neighbours merge.
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _texts(content: Any, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or a list of parts")
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise bad(f"{where}.content[{j}] must be a text part here")
        text = part.get("text") if part["type"] == "text" else part.get("refusal")
        if isinstance(text, str) and text:
            out.append(text)
    return out


# Anthropic's prompt caching on Bedrock: a part marked ``cache_control`` (as the proxy's
# /v1/messages passes it on) ends a cacheable prefix, which Converse spells as a cachePoint
# block after it.
_CACHE_POINT: Json = {"cachePoint": {"type": "default"}}


def _text_blocks(content: Any, where: str) -> list[Json]:
    """Text blocks of a message's content, each cache mark as a cachePoint after its part."""
    if not isinstance(content, list):
        return [{"text": t} for t in _texts(content, where)]
    blocks: list[Json] = []
    for part in content:
        blocks.extend({"text": t} for t in _texts([part], where))
        if isinstance(part, dict) and part.get("cache_control"):
            blocks.append(_CACHE_POINT)
    return blocks


def _user_blocks(content: Any, where: str) -> list[Json]:
    if not isinstance(content, list):
        return [{"text": t} for t in _texts(content, where)]
    blocks: list[Json] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        at = f"{where}.content[{j}]"
        if kind == "text":
            blocks.extend(_text_blocks([part], where))
            continue
        elif kind == "image_url":
            assert isinstance(part, dict)
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
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
            blocks.append({"image": {"format": fmt, "source": {"bytes": parsed[1]}}})
        elif kind == "file":
            assert isinstance(part, dict)
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            parsed = parse_data_url(data) if isinstance(data, str) else None
            fmt = _DOC_FORMATS.get(parsed[0].lower()) if parsed else None
            if parsed is None or fmt is None:
                raise bad(f"{at}: only inline documents (a base64 data URL) of a known type")
            assert isinstance(file, dict)
            name = str(file.get("filename") or f"document-{j}").rsplit(".", 1)[0]
            doc = {"format": fmt, "name": name[:200], "source": {"bytes": parsed[1]}}
            blocks.append({"document": doc})
        else:
            raise bad(f"{at}: content part type {kind!r} is not supported")
        if isinstance(part, dict) and part.get("cache_control"):
            blocks.append(_CACHE_POINT)
    return blocks


def _assistant_blocks(m: Json, where: str) -> list[Json]:
    blocks = _text_blocks(m.get("content"), where)
    calls = m.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad(f"{where}.tool_calls must be a list")
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad(f"{where}.tool_calls[{k}].function.name is missing")
        assert isinstance(call, dict)
        use = {
            "toolUseId": str(call.get("id") or f"tooluse_{k}"),
            "name": fn["name"],
            "input": parse_arguments(fn.get("arguments"), f"{where}.tool_calls[{k}]"),
        }
        blocks.append({"toolUse": use})
    return blocks


def _tool_result(m: Json, where: str) -> Json:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad(f"{where}.tool_call_id is missing")
    texts = _texts(m.get("content"), where)
    return {"toolResult": {"toolUseId": call_id, "content": [{"text": t} for t in texts or [""]]}}


def _tool(t: Any, i: int) -> Json:
    fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise bad(f"tools[{i}]: only function tools with a name are supported", "tools")
    spec: Json = {
        "name": fn["name"],
        "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}},
    }
    if fn.get("description"):
        spec["description"] = fn["description"]
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


def usage_from_converse(usage: Any) -> Json:
    """OpenAI ``usage`` from Converse's (whose inputTokens exclude cache reads and writes)."""
    u = usage if isinstance(usage, dict) else {}
    read = token_count(u.get("cacheReadInputTokens"))
    written = token_count(u.get("cacheWriteInputTokens"))
    prompt = token_count(u.get("inputTokens")) + read + written
    completion = token_count(u.get("outputTokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written},
    }


def response_from_converse(data: Json, model: str, structured: bool = False) -> Json:
    """Translate a Converse response into an OpenAI ``chat.completion``."""
    output = data.get("output") if isinstance(data.get("output"), dict) else {}
    message_in = output.get("message") if isinstance(output, dict) else None
    blocks = message_in.get("content") if isinstance(message_in, dict) else None
    texts: list[str] = []
    calls: list[Json] = []
    for block in blocks if isinstance(blocks, list) else []:
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
                calls.append(
                    {
                        "id": use.get("toolUseId"),
                        "type": "function",
                        "function": {"name": use.get("name"), "arguments": arguments},
                    }
                )
        # reasoningContent, citations, guardContent: no OpenAI counterpart
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    stop = str(data.get("stopReason"))
    if structured and stop == "tool_use":
        stop = "end_turn"
    out: Json = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_REASON_TO_FINISH.get(stop, "stop"),
                "logprobs": None,
            }
        ],
    }
    if isinstance(data.get("usage"), dict):
        out["usage"] = usage_from_converse(data["usage"])
    return out
