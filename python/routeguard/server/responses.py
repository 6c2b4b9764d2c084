"""The proxy's OpenAI Responses API (``POST /v1/responses``): pure translations, no I/O.

Flow: the client's Responses request -> :func:`for_gateway` -> the gateway, with the request
both as is (a ``NativeRequest``: an OpenAI or Azure deployment gets it passed through, so
built-in tools, reasoning items, ``previous_response_id`` and ``store`` work as OpenAI defines
them) and as its chat translation, which every stage reads (auth, limits, budgets, cache,
routing) and a chat-only deployment (Anthropic, Gemini, OpenAI-compatible servers) is sent.
A translated answer comes back through :func:`chat_to_response`, or
``responses_stream.ResponsesStreamEncoder`` for the event stream.

The proxy itself stores nothing: for a chat-only deployment, ``previous_response_id``,
``conversation`` and ``item_reference`` inputs cannot be translated (the conversation lives in
OpenAI's store), nor can hosted tools (web search, file search, computer use... run on OpenAI's
servers): such a request is served by an OpenAI deployment, and refused with a 400 naming
what could not be translated when it would land on a chat-only one.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from routeguard.errors import InvalidRequest
from routeguard.providers.base import Json, NativeRequest
from routeguard.providers.wire import token_count
from routeguard.schema import MAX_TOKENS

# Fields translated to the chat request (or echoed back on the response object).
_TRANSLATED = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
     "max_output_tokens", "temperature", "top_p", "metadata", "stream", "user",
     "safety_identifier", "prompt_cache_key", "reasoning"}
)  # fmt: skip
# Fields accepted without effect: nothing is stored (``store``), no extra output data is
# produced (``include``), no truncation happens (the route's context-window fallbacks do the
# job), and the rest only tune OpenAI's own service.
_ACCEPTED = frozenset(
    {"store", "include", "truncation", "service_tier", "stream_options",
     "prompt_cache_retention", "background"}
)  # fmt: skip
_STATEFUL = ("previous_response_id", "conversation")
_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _invalid(path: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {problem}", param=path)


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _get(body: Json, key: str, path: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``body[key]`` checked against ``kind`` (None when absent or null)."""
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise _invalid(path, f"expected {what}, got {_type_name(v)}")
    return v


def _need(body: Json, key: str, path: str, kind: type | tuple[type, ...], what: str) -> Any:
    v = _get(body, key, path, kind, what)
    if v is None:
        raise _invalid(path, "field required")
    return v


def new_id(prefix: str) -> str:
    """A fresh Responses-style id (``resp_``, ``msg_``, ``fc_`` ...)."""
    return f"{prefix}{uuid.uuid4().hex}"


@dataclass(slots=True)
class Translated:
    """A Responses request as the gateway serves it: the chat request, and the fields the
    response object echoes (model, instructions, tools, text format, sampling...)."""

    chat: Json
    echo: Json


# --------------------------------------------------------------------------- request


def responses_request_to_chat(body: Json) -> Translated:
    """Validate a Responses request and translate it into an OpenAI chat request."""
    for key in _STATEFUL:
        if body.get(key) is not None:
            raise _invalid(
                key,
                "this gateway is stateless and stores no responses; send the whole "
                "conversation in 'input' (earlier output items included) instead",
            )
    if body.get("background") is True:
        raise _invalid("background", "background responses need a response store; not supported")
    for key, value in body.items():
        if value is not None and key not in _TRANSLATED and key not in _ACCEPTED:
            raise _invalid(key, "not supported by this gateway's /v1/responses")
    model = _need(body, "model", "model", str, "a string")
    chat: Json = {"model": model}
    messages: list[Json] = []
    instructions = _get(body, "instructions", "instructions", str, "a string")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            _input_item(item, f"input[{i}]", messages)
    elif raw is None:
        raise _invalid("input", "field required")
    else:
        raise _invalid("input", f"expected a string or a list of items, got {_type_name(raw)}")
    if not any(m["role"] != "system" for m in messages):
        raise _invalid("input", "must hold at least one message or item")
    chat["messages"] = messages

    echo: Json = {"model": model, "instructions": instructions, "metadata": {}, "tools": []}
    tools = _get(body, "tools", "tools", list, "a list of tools")
    if tools:
        echo["tools"] = [_tool(t, f"tools[{j}]") for j, t in enumerate(tools)]
        chat["tools"] = [_chat_tool(t) for t in echo["tools"]]
    choice = body.get("tool_choice")
    echo["tool_choice"] = "auto" if choice is None else choice
    if choice is not None:
        chat["tool_choice"] = _tool_choice(choice)
    parallel = _get(body, "parallel_tool_calls", "parallel_tool_calls", bool, "a boolean")
    echo["parallel_tool_calls"] = True if parallel is None else parallel
    if parallel is not None and tools:
        chat["parallel_tool_calls"] = parallel
    echo["text"] = _text(body, chat)
    limit = _get(body, "max_output_tokens", "max_output_tokens", int, "an integer")
    if limit is not None:
        if not 1 <= limit <= MAX_TOKENS:
            raise _invalid("max_output_tokens", f"must be between 1 and {MAX_TOKENS}, got {limit}")
        chat["max_completion_tokens"] = echo["max_output_tokens"] = limit
    for key in ("temperature", "top_p"):
        v = _get(body, key, key, (int, float), "a number")
        if v is not None:
            chat[key] = echo[key] = v
    for key in ("user", "safety_identifier", "prompt_cache_key"):
        v = _get(body, key, key, str, "a string")
        if v is not None:
            chat[key] = echo[key] = v
    metadata = _get(body, "metadata", "metadata", dict, "an object")
    if metadata:
        for k, v in metadata.items():
            if not isinstance(v, str):
                raise _invalid(f"metadata.{k}", f"expected a string, got {_type_name(v)}")
        echo["metadata"] = metadata  # echoed back, not sent upstream
    reasoning = _get(body, "reasoning", "reasoning", dict, "an object")
    if reasoning:
        effort = _get(reasoning, "effort", "reasoning.effort", str, "a string")
        if effort is not None:
            chat["reasoning_effort"] = effort
        echo["reasoning"] = {"effort": effort, "summary": None}
    if _get(body, "stream", "stream", bool, "a boolean"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return Translated(chat, echo)


def for_gateway(body: Json) -> tuple[Translated, NativeRequest]:
    """A Responses request as the gateway takes it: its chat translation (what can be
    translated; the answer's echo) and the request as made, naming what the translation
    had to leave out. A request malformed in what it shares with chat is refused here."""
    model = _need(body, "model", "model", str, "a string")
    lost: list[tuple[str, str]] = []  # (field, why) the chat translation leaves out
    kept = dict(body)
    for key in _STATEFUL:
        if kept.pop(key, None) is not None:
            lost.append((key, f"'{key}' continues a conversation stored upstream"))
    if kept.get("background") is True:
        kept.pop("background")
        lost.append(("background", "'background' responses need the upstream's response store"))
    for key in [k for k, v in kept.items() if v is not None]:
        if key not in _TRANSLATED and key not in _ACCEPTED:
            kept.pop(key)
            lost.append((key, f"'{key}' has no chat equivalent"))
    tools = kept.get("tools")
    if isinstance(tools, list):
        hosted = [t for t in tools if not (isinstance(t, dict) and t.get("type") == "function")]
        if hosted:
            kept["tools"] = [t for t in tools if t not in hosted]
            names = ", ".join(repr(t.get("type") if isinstance(t, dict) else t) for t in hosted)
            lost.append(("tools", f"built-in tools ({names}) run on OpenAI's servers"))
            choice = kept.get("tool_choice")
            if isinstance(choice, dict) and choice.get("type") not in (None, "function"):
                kept.pop("tool_choice")
    items = kept.get("input")
    if isinstance(items, list):
        odd = [i for i in items if isinstance(i, dict) and i.get("type") not in _CHAT_ITEMS]
        if odd:
            kept["input"] = [i for i in items if i not in odd]
            kinds = ", ".join(sorted({repr(i.get("type")) for i in odd}))
            lost.append(("input", f"input items of type {kinds} have no chat equivalent"))
    try:
        call = responses_request_to_chat(kept)
    except InvalidRequest as exc:
        # Not translatable as it stands (only tool results for a stored turn, a file_id
        # image...): the stages read a stand-in of the same size, an OpenAI deployment gets
        # the request (and judges it), a chat-only one refuses it with this 400.
        call = _stand_in(body, model)
        lost.append((exc.param or "input", exc.message))
    why = "; ".join(w for _, w in lost) or None
    native = NativeRequest("responses", body, why, lost[0][0] if lost else None)
    return call, native


# Input item types the chat translation reads (or, for reasoning, may skip).
_CHAT_ITEMS = frozenset({None, "message", "function_call", "function_call_output", "reasoning"})


def _stand_in(body: Json, model: str) -> Translated:
    """A chat request the size of ``body``'s input, for admission, routing and limits."""
    text = json.dumps(body.get("input"), ensure_ascii=False)
    instructions = body.get("instructions")
    messages: list[Json] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    messages.append({"role": "user", "content": text})
    chat: Json = {"model": model, "messages": messages}
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= MAX_TOKENS:
        chat["max_completion_tokens"] = limit
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    echo: Json = {"model": model, "instructions": instructions, "metadata": {}, "tools": [],
                  "tool_choice": "auto", "parallel_tool_calls": True,
                  "text": {"format": {"type": "text"}}}  # fmt: skip
    return Translated(chat, echo)


def _input_item(item: Any, path: str, out: list[Json]) -> None:
    """Append the chat message(s) of one input item to ``out``."""
    if not isinstance(item, dict):
        raise _invalid(path, f"expected an object, got {_type_name(item)}")
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"
    if kind == "message":
        out.append(_message(item, path))
    elif kind == "function_call":
        call = {
            "id": _need(item, "call_id", f"{path}.call_id", str, "a string"),
            "type": "function",
            "function": {
                "name": _need(item, "name", f"{path}.name", str, "a string"),
                "arguments": _need(item, "arguments", f"{path}.arguments", str, "a string"),
            },
        }
        last = out[-1] if out else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)  # one assistant turn, many calls
        else:
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        call_id = _need(item, "call_id", f"{path}.call_id", str, "a string")
        output = item.get("output")
        if isinstance(output, list):
            output = _text_of(output, f"{path}.output", ("input_text", "output_text", "text"))
        elif not isinstance(output, str):
            got = _type_name(output)
            raise _invalid(f"{path}.output", f"expected a string or a list, got {got}")
        out.append({"role": "tool", "tool_call_id": call_id, "content": output})
    elif kind == "reasoning":
        pass  # an upstream's own reasoning trace: only it can read it, and we never emit one
    elif kind == "item_reference":
        raise _invalid(
            f"{path}.type", "item references need a response store; send the item itself"
        )
    else:
        raise _invalid(
            f"{path}.type",
            f"input item {kind!r} is not supported (expected message, function_call or "
            "function_call_output)",
        )


def _message(item: Json, path: str) -> Json:
    role = _need(item, "role", f"{path}.role", str, "a string")
    if role not in _MESSAGE_ROLES:
        raise _invalid(f"{path}.role", f"expected one of {', '.join(_MESSAGE_ROLES)}, got {role!r}")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _invalid(f"{path}.content", f"expected a string or a list, got {_type_name(content)}")
    cpath = f"{path}.content"
    if role == "assistant":
        text = _text_of(content, cpath, ("output_text", "input_text", "text", "refusal"))
        return {"role": "assistant", "content": text}
    if role in ("system", "developer"):
        return {"role": role, "content": _text_of(content, cpath, ("input_text", "text"))}
    parts = [_part(p, f"{cpath}[{j}]") for j, p in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}
    return {"role": role, "content": parts}


def _text_of(parts: list[Any], path: str, kinds: tuple[str, ...]) -> str:
    """The text of a list of content parts of the ``kinds`` given (others refused)."""
    texts = []
    for j, p in enumerate(parts):
        if not isinstance(p, dict) or p.get("type") not in kinds:
            got = p.get("type") if isinstance(p, dict) else _type_name(p)
            want = ", ".join(kinds)
            raise _invalid(f"{path}[{j}]", f"expected a part of type {want}, got {got!r}")
        key = "refusal" if p["type"] == "refusal" else "text"
        texts.append(_need(p, key, f"{path}[{j}].{key}", str, "a string"))
    return "".join(texts)


def _part(p: Any, path: str) -> Json:
    """One user content part in chat form."""
    if not isinstance(p, dict):
        raise _invalid(path, f"expected a content part object, got {_type_name(p)}")
    kind = p.get("type")
    if kind in ("input_text", "text"):
        return {"type": "text", "text": _need(p, "text", f"{path}.text", str, "a string")}
    if kind == "input_image":
        url = _get(p, "image_url", f"{path}.image_url", str, "a string")
        if url is None:
            raise _invalid(
                f"{path}.image_url",
                "field required (file_id images need the upstream's file store: send a URL "
                "or a data URL)",
            )
        image: Json = {"url": url}
        detail = _get(p, "detail", f"{path}.detail", str, "a string")
        if detail is not None:
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: Json = {}
        for key in ("file_data", "file_id", "filename"):
            v = _get(p, key, f"{path}.{key}", str, "a string")
            if v is not None:
                file[key] = v
        if "file_data" not in file and "file_id" not in file:
            raise _invalid(
                path, "an input_file needs file_data or file_id (file_url is not supported)"
            )
        return {"type": "file", "file": file}
    if kind == "input_audio":
        audio = _need(p, "input_audio", f"{path}.input_audio", dict, "an object")
        return {"type": "input_audio", "input_audio": audio}
    raise _invalid(
        f"{path}.type",
        f"content part {kind!r} is not supported (expected input_text, input_image, "
        "input_file or input_audio)",
    )


def _tool(tool: Any, path: str) -> Json:
    """A function tool, checked, in the shape the response object echoes."""
    if not isinstance(tool, dict):
        raise _invalid(path, f"expected a tool object, got {_type_name(tool)}")
    kind = tool.get("type")
    if kind != "function":
        raise _invalid(
            f"{path}.type",
            f"{kind!r} tools run on OpenAI's own servers and are not available through this "
            "gateway; only 'function' tools are supported",
        )
    out: Json = {
        "type": "function",
        "name": _need(tool, "name", f"{path}.name", str, "a string"),
        "parameters": _get(tool, "parameters", f"{path}.parameters", dict, "a JSON schema object"),
        "strict": _get(tool, "strict", f"{path}.strict", bool, "a boolean"),
    }
    description = _get(tool, "description", f"{path}.description", str, "a string")
    if description is not None:
        out["description"] = description
    return out


def _chat_tool(tool: Json) -> Json:
    fn: Json = {"name": tool["name"]}
    fn["parameters"] = tool["parameters"] or {"type": "object", "properties": {}}
    if tool.get("description") is not None:
        fn["description"] = tool["description"]
    if tool["strict"] is not None:
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = _need(choice, "name", "tool_choice.name", str, "a string")
        return {"type": "function", "function": {"name": name}}
    raise _invalid(
        "tool_choice", "expected 'auto', 'none', 'required' or {'type': 'function', 'name': ...}"
    )


def _text(body: Json, chat: Json) -> Json:
    """``text.format`` as the chat ``response_format`` (set on ``chat``); the echoed ``text``."""
    text = _get(body, "text", "text", dict, "an object")
    if not text:
        return {"format": {"type": "text"}}
    verbosity = _get(text, "verbosity", "text.verbosity", str, "a string")
    if verbosity is not None:
        chat["verbosity"] = verbosity
    fmt = _get(text, "format", "text.format", dict, "an object")
    echo: Json = {"format": fmt or {"type": "text"}, "verbosity": verbosity}
    if not fmt:
        return echo
    kind = fmt.get("type")
    if kind == "text":
        return echo
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return echo
    if kind != "json_schema":
        raise _invalid(
            "text.format.type", f"expected text, json_object or json_schema, got {kind!r}"
        )
    spec: Json = {
        "name": _need(fmt, "name", "text.format.name", str, "a string"),
        "schema": _need(fmt, "schema", "text.format.schema", dict, "a JSON schema object"),
    }
    for key, kind_, what in (("strict", bool, "a boolean"), ("description", str, "a string")):
        v = _get(fmt, key, f"text.format.{key}", kind_, what)
        if v is not None:
            spec[key] = v
    chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    return echo


# --------------------------------------------------------------------------- response


def usage_to_responses(usage: Any) -> Json | None:
    """Responses ``usage`` from chat's (None when the upstream reported none)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    inp, out = token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
    return {
        "input_tokens": inp,
        "input_tokens_details": {
            "cached_tokens": token_count(prompt.get("cached_tokens")),
            "cache_write_tokens": token_count(prompt.get("cache_creation_tokens")),
        },
        "output_tokens": out,
        "output_tokens_details": {
            "reasoning_tokens": token_count(completion.get("reasoning_tokens"))
        },
        "total_tokens": token_count(usage.get("total_tokens")) or inp + out,
    }


def response_head(echo: Json, response_id: str, created_at: int, status: str) -> Json:
    """The response object without its output: ids, status and the echoed request fields."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "output": [],
        "usage": None,
        "store": False,
        "previous_response_id": None,
        "truncation": "disabled",
        **echo,
    }


def finish_status(finish_reason: Any) -> tuple[str, Json | None]:
    """The response status for a chat finish_reason, and its incomplete_details."""
    reason = _FINISH_INCOMPLETE.get(str(finish_reason))
    if reason is None:
        return "completed", None
    return "incomplete", {"reason": reason}


def message_item(item_id: str, parts: list[Json], status: str) -> Json:
    """An assistant output message item."""
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": parts}  # fmt: skip


def text_part(kind: str, text: str) -> Json:
    """An ``output_text`` (or ``refusal``) content part."""
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Json:
    """A function_call output item."""
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}  # fmt: skip


def chat_to_response(resp: Json, echo: Json) -> Json:
    """Translate an OpenAI ``chat.completion`` into a Responses ``response`` object."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    status, incomplete = finish_status(choice.get("finish_reason"))
    item_status = "incomplete" if status == "incomplete" else "completed"
    output: list[Json] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        output.append(message_item(new_id("msg_"), [text_part("output_text", text)], item_status))
    elif isinstance(message.get("refusal"), str) and message["refusal"]:
        part = text_part("refusal", message["refusal"])
        output.append(message_item(new_id("msg_"), [part], item_status))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if not isinstance(args, str):
            args = json.dumps(args or {})
        call_id = call.get("id") or new_id("call_")
        output.append(call_item(new_id("fc_"), call_id, fn.get("name") or "", args, "completed"))
    out = response_head(echo, new_id("resp_"), int(time.time()), status)
    out["incomplete_details"] = incomplete
    out["output"] = output
    out["usage"] = usage_to_responses(resp.get("usage"))
    return out
