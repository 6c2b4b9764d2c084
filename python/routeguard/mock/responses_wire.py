"""The OpenAI Responses API of the simulated upstream (``POST /v1/responses``).

A request is validated as OpenAI does (``model``, ``input``, ``previous_response_id``),
turned into the chat body it means (instructions, input items, function tools, ``text.format``,
``max_output_tokens``) and parsed by :func:`.openai_wire.parse_chat` into the neutral
:class:`~routeguard.mock.answers.Prompt`, so the answer and its token counts are those of the
chat endpoint. The answer renders as a ``response`` object, or as the event stream the openai
SDK parses (``response.created`` ... ``response.output_text.delta`` ... ``response.completed``,
every event numbered). Built-in tools (web search...) are accepted and not run. With
``reasoning`` set, a reasoning item comes first. Unless ``store`` is false the conversation is
kept (bounded, in memory) so a later ``previous_response_id`` continues it, as OpenAI's store does.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from routeguard.mock.answers import Answer, Prompt, answer, new_id
from routeguard.mock.faults import Fault, midstream_message
from routeguard.mock.openai_wire import parse_chat
from routeguard.mock.transport import StreamPlan, encode

_STORE_SIZE = 4096


class ResponseStore:
    """Stored conversations by response id (the messages before and the answer), bounded."""

    def __init__(self, size: int = _STORE_SIZE) -> None:
        self._items: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._size = size

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        """The chat messages of a stored response (None when unknown)."""
        return self._items.get(response_id)

    def put(self, response_id: str, messages: list[dict[str, Any]]) -> None:
        """Keep ``messages`` under ``response_id`` (the oldest forgotten past the bound)."""
        self._items[response_id] = messages
        while len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass(slots=True)
class ResponsesRequest:
    """A parsed Responses request: the prompt, the chat messages it stands for, and what
    the response object echoes."""

    prompt: Prompt
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    response_id: str
    reasoning: bool
    encrypted: bool


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict)
        )
    return ""


def _messages(items: Any) -> list[dict[str, Any]]:
    """Input items as chat messages (built-in tool calls and reasoning items are context the
    simulated model does not read)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise Fault(
            400,
            "Invalid type for 'input': expected one of a string or array of input items.",
            param="input",
            code="invalid_type",
        )
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise Fault(400, f"Invalid type for 'input[{i}]': expected an object.",
                        param=f"input[{i}]", code="invalid_type")  # fmt: skip
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise Fault(400, f"Invalid value: '{role}'.", param=f"input[{i}].role",
                            code="invalid_value")  # fmt: skip
            out.append({"role": role, "content": _text(item.get("content"))})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id")), "type": "function",
                    "function": {"name": str(item.get("name")),
                                 "arguments": str(item.get("arguments"))}}  # fmt: skip
            if out and out[-1]["role"] == "assistant" and out[-1].get("content") is None:
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id")),
                        "content": _text(item.get("output"))})  # fmt: skip
        elif kind is None:
            raise Fault(400, f"Missing required parameter: 'input[{i}].type'.",
                        param=f"input[{i}].type", code="missing_required_parameter")  # fmt: skip
    return out


def _chat_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for t in tools if isinstance(tools, list) else []:
        if isinstance(t, dict) and t.get("type") == "function":
            fn = {k: t[k] for k in ("name", "description", "parameters") if t.get(k) is not None}
            out.append({"type": "function", "function": fn})
    return out


def parse_responses(body: Any, store: ResponseStore) -> ResponsesRequest:
    """Validate a ``/v1/responses`` body and parse it (earlier turns from ``store``)."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise Fault(400, "Missing required parameter: 'model'.", param="model",
                    code="missing_required_parameter")  # fmt: skip
    if body.get("input") is None:
        raise Fault(400, "Missing required parameter: 'input'.", param="input",
                    code="missing_required_parameter")  # fmt: skip
    messages: list[dict[str, Any]] = []
    previous = body.get("previous_response_id")
    if previous is not None:
        earlier = store.get(str(previous))
        if earlier is None:
            raise Fault(
                400,
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        messages += earlier
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    messages += _messages(body["input"])
    chat: dict[str, Any] = {"model": body["model"], "messages": messages,
                            "stream": body.get("stream") is True}  # fmt: skip
    tools = _chat_tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = {"name": fmt.get("name"), "schema": fmt.get("schema", {})}
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    try:
        prompt = parse_chat(chat).prompt
    except Fault as fault:  # name the Responses field, not the chat one
        if fault.param is not None:
            fault.param = fault.param.replace("messages", "input").replace(
                "max_completion_tokens", "max_output_tokens"
            )
        raise
    include = body.get("include")
    return ResponsesRequest(
        prompt=prompt,
        messages=[m for m in messages if m["role"] != "system"],
        body=body,
        response_id=new_id("resp_"),
        reasoning=isinstance(body.get("reasoning"), dict) and bool(body["reasoning"]),
        encrypted=isinstance(include, list) and "reasoning.encrypted_content" in include,
    )


def _usage(req: ResponsesRequest, ans: Answer) -> dict[str, Any]:
    reasoning = 4 if req.reasoning else 0
    out = ans.completion_tokens + reasoning
    return {
        "input_tokens": req.prompt.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": req.prompt.prompt_tokens + out,
    }


def _head(req: ResponsesRequest, status: str) -> dict[str, Any]:
    b = req.body
    return {
        "id": req.response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": b.get("instructions"),
        "max_output_tokens": b.get("max_output_tokens"),
        "model": req.prompt.model,
        "output": [],
        "parallel_tool_calls": b.get("parallel_tool_calls", True),
        "previous_response_id": b.get("previous_response_id"),
        "reasoning": {"effort": (b.get("reasoning") or {}).get("effort"), "summary": None},
        "store": b.get("store", True) is not False,
        "temperature": b.get("temperature", 1.0),
        "text": b.get("text") or {"format": {"type": "text"}},
        "tool_choice": b.get("tool_choice", "auto"),
        "tools": b.get("tools") or [],
        "top_p": b.get("top_p", 1.0),
        "truncation": b.get("truncation", "disabled"),
        "usage": None,
        "user": b.get("user"),
        "metadata": b.get("metadata") or {},
    }


def _items(req: ResponsesRequest, ans: Answer) -> list[dict[str, Any]]:
    """The output items, complete (ids fixed here so the stream and its end agree)."""
    items: list[dict[str, Any]] = []
    if req.reasoning:
        item: dict[str, Any] = {"id": new_id("rs_"), "type": "reasoning", "summary": []}
        if req.encrypted:
            item["encrypted_content"] = "enc_" + new_id("")
        items.append(item)
    call = ans.tool_call
    if call is not None:
        items.append({"id": new_id("fc_"), "type": "function_call", "status": "completed",
                      "call_id": call.call_id, "name": call.name,
                      "arguments": call.arguments_json})  # fmt: skip
    else:
        part = {"type": "output_text", "text": ans.text, "annotations": [], "logprobs": []}
        status = "incomplete" if ans.finish == "length" else "completed"
        items.append({"id": new_id("msg_"), "type": "message", "role": "assistant",
                      "status": status, "content": [part]})  # fmt: skip
    return items


def _remember(req: ResponsesRequest, ans: Answer, store: ResponseStore) -> None:
    if req.body.get("store") is False:
        return
    call = ans.tool_call
    reply: dict[str, Any] = {"role": "assistant", "content": ans.text if call is None else None}
    if call is not None:
        reply["tool_calls"] = [{"id": call.call_id, "type": "function",
                                "function": {"name": call.name,
                                             "arguments": call.arguments_json}}]  # fmt: skip
    store.put(req.response_id, [*req.messages, reply])


def _final(req: ResponsesRequest, ans: Answer, items: list[dict[str, Any]]) -> dict[str, Any]:
    cut = ans.finish == "length"
    out = _head(req, "incomplete" if cut else "completed")
    out["output"] = items
    out["usage"] = _usage(req, ans)
    if cut:
        out["incomplete_details"] = {"reason": "max_output_tokens"}
    return out


def response_body(req: ResponsesRequest, store: ResponseStore) -> tuple[bytes, int]:
    """The ``response`` object, and its completion tokens (for pacing)."""
    ans = answer(req.prompt)
    _remember(req, ans, store)
    return encode(_final(req, ans, _items(req, ans))), ans.completion_tokens


def response_stream(req: ResponsesRequest, store: ResponseStore, usage: bool = True) -> StreamPlan:
    """The event stream of the answer (``usage`` False: the final response has none)."""
    ans = answer(req.prompt)
    _remember(req, ans, store)
    items = _items(req, ans)
    seq = iter(range(1_000_000))

    def ev(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": next(seq), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + encode(data) + b"\n\n"

    head = [ev("response.created", response=_head(req, "in_progress")),
            ev("response.in_progress", response=_head(req, "in_progress"))]  # fmt: skip
    content: list[bytes] = []
    tail: list[bytes] = []
    last = len(items) - 1
    for index, item in enumerate(items):
        frames = head if index < last else None
        if item["type"] == "message":
            opened = {**item, "status": "in_progress", "content": []}
            head.append(ev("response.output_item.added", output_index=index, item=opened))
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            head.append(ev("response.content_part.added", **at, part=empty))
            content += [ev("response.output_text.delta", **at, delta=p, logprobs=[])
                        for p in ans.pieces]  # fmt: skip
            part = item["content"][0]
            tail.append(ev("response.output_text.done", **at, text=part["text"], logprobs=[]))
            tail.append(ev("response.content_part.done", **at, part=part))
        elif item["type"] == "function_call":
            opened = {**item, "status": "in_progress", "arguments": ""}
            head.append(ev("response.output_item.added", output_index=index, item=opened))
            assert ans.tool_call is not None
            content += [ev("response.function_call_arguments.delta", item_id=item["id"],
                           output_index=index, delta=p)
                        for p in ans.tool_call.pieces]  # fmt: skip
            tail.append(ev("response.function_call_arguments.done", item_id=item["id"],
                           output_index=index, arguments=item["arguments"]))  # fmt: skip
        else:  # reasoning: whole, before the answer
            assert frames is not None
            frames.append(ev("response.output_item.added", output_index=index, item=item))
            frames.append(ev("response.output_item.done", output_index=index, item=item))
            continue
        tail.append(ev("response.output_item.done", output_index=index, item=item))
    final = _final(req, ans, items)
    if not usage:
        final["usage"] = None
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    tail.append(ev(kind, response=final))
    error = ev("error", code="server_error", param=None,
               message=midstream_message("The server had an error while processing your "
                                         "request. Sorry about that!"))  # fmt: skip
    return StreamPlan(head, content, tail, error)
