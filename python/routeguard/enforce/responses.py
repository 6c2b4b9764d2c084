"""Tool-call enforcement on Responses API answers passed through from OpenAI or Azure.

The same :class:`~routeguard.enforce.proxy.ResponseEnforcer` (policy, guards, trust, audit,
approvals) decides; this module only reads ``function_call`` output items as the tool calls
it checks and writes its verdicts back in the Responses shape. An allowed call keeps its
place (its ``arguments`` redacted where the policy says); a denied one is replaced by an
assistant message item holding the enforcer's note (``on_deny: refuse`` raises instead).
On a stream the events of a function_call item are held until its ``output_item.done``,
then sent whole (or as the note's message events); other events pass as they come, the
final response's ``output`` is rewritten to match, and events are renumbered in order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from routeguard.enforce.proxy import ResponseEnforcer

Json = dict[str, Any]
_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _as_chat(items: list[Json]) -> Json:
    """``function_call`` items as one chat response with their tool calls."""
    calls = [{"id": it.get("call_id") or it.get("id"), "type": "function",
              "function": {"name": it.get("name"), "arguments": it.get("arguments") or ""}}
             for it in items]  # fmt: skip
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}


def _note_item(text: str) -> Json:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
            "status": "completed", "content": [part]}  # fmt: skip


async def _decide(
    enforcer: ResponseEnforcer, items: list[Json], metadata: Mapping[str, Any] | None
) -> tuple[dict[str, str], str | None]:
    """Allowed call ids -> their (possibly redacted) arguments, and the note for the rest."""
    out = await enforcer.aapply(_as_chat(items), metadata)
    message = out["choices"][0]["message"]
    kept = {c["id"]: c["function"]["arguments"] for c in message.get("tool_calls") or []}
    note = message.get("content")
    return kept, note if isinstance(note, str) and note else None


async def enforce_response(
    enforcer: ResponseEnforcer, response: Json, metadata: Mapping[str, Any] | None
) -> Json:
    """``response`` (a Responses ``response`` object) with its function calls enforced."""
    output = response.get("output")
    if not isinstance(output, list):
        return response
    calls = [i for i in output if isinstance(i, dict) and i.get("type") == "function_call"]
    if not calls:
        return response
    kept, note = await _decide(enforcer, calls, metadata)
    new: list[Any] = []
    for item in output:
        if not (isinstance(item, dict) and item.get("type") == "function_call"):
            new.append(item)
            continue
        call_id = item.get("call_id") or item.get("id")
        if call_id in kept:
            new.append({**item, "arguments": kept[call_id]})
    if note is not None:
        new.append(_note_item(note))
    return {**response, "output": new}


async def enforce_events(
    enforcer: ResponseEnforcer, events: AsyncIterator[Json], metadata: Mapping[str, Any] | None
) -> AsyncIterator[Json]:
    """A Responses event stream with each function call held until it is whole, then
    checked and sent (redacted) or replaced by a note message; renumbered."""
    seq = 0
    held: dict[Any, list[Json]] = {}  # output_index -> the held call's events
    replaced: dict[str, Json] = {}  # call item id -> the item sent in its place

    def numbered(event: Json) -> Json:
        nonlocal seq
        out = {**event, "sequence_number": seq}
        seq += 1
        return out

    async for event in events:
        kind = event.get("type")
        index = event.get("output_index")
        item = event.get("item")
        if (
            kind == "response.output_item.added"
            and isinstance(item, dict)
            and item.get("type") == "function_call"
        ):
            held[index] = [event]
            continue
        if index in held:
            if kind != "response.output_item.done" or not isinstance(item, dict):
                continue  # the deltas: the whole call is sent once decided
            held.pop(index)
            kept, note = await _decide(enforcer, [item], metadata)
            call_id = item.get("call_id") or item.get("id")
            if call_id in kept:
                done = {**item, "arguments": kept[call_id]}
                replaced[str(item.get("id"))] = done
                for e in _call_events(done, index):
                    yield numbered(e)
            else:
                message = _note_item(note or "routeguard removed a denied tool call")
                replaced[str(item.get("id"))] = message
                for e in _message_events(message, index):
                    yield numbered(e)
            continue
        if kind in _ENDS and isinstance(event.get("response"), dict):
            response = event["response"]
            output = response.get("output")
            if isinstance(output, list) and replaced:
                fixed = [replaced.get(str(o.get("id")), o) if isinstance(o, dict) else o
                         for o in output]  # fmt: skip
                event = {**event, "response": {**response, "output": fixed}}
        yield numbered(event)


def _call_events(item: Json, index: Any) -> list[Json]:
    opened = {**item, "status": "in_progress", "arguments": ""}
    at = {"item_id": item.get("id"), "output_index": index}
    return [
        {"type": "response.output_item.added", "output_index": index, "item": opened},
        {"type": "response.function_call_arguments.delta", **at, "delta": item["arguments"]},
        {"type": "response.function_call_arguments.done", **at, "arguments": item["arguments"]},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]


def _message_events(item: Json, index: Any) -> list[Json]:
    part = item["content"][0]
    empty = {**part, "text": ""}
    at = {"item_id": item["id"], "output_index": index, "content_index": 0}
    return [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **at, "part": empty},
        {"type": "response.output_text.delta", **at, "delta": part["text"], "logprobs": []},
        {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **at, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
