"""The Responses API event stream, from the gateway's chat chunks.

:class:`ResponsesStreamEncoder` turns ``chat.completion.chunk`` dicts into the SSE events
the openai SDK parses, in the order OpenAI sends them: ``response.created`` and
``response.in_progress``; per output item ``response.output_item.added``, for a message
``response.content_part.added``, ``response.output_text.delta``... ``.done``,
``response.content_part.done`` (``response.refusal.*`` for a refusal), for a function call
``response.function_call_arguments.delta``... ``.done``; then ``response.output_item.done``;
and last ``response.completed`` (``response.incomplete`` when the answer was cut short)
carrying the whole response. Every event has its ``sequence_number``. A failure after the
stream started ends it with ``response.failed``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from routeguard.errors import RouteguardError
from routeguard.providers.base import Json
from routeguard.server.responses import (
    call_item,
    finish_status,
    message_item,
    new_id,
    response_head,
    text_part,
    usage_to_responses,
)

_encode = msgspec.json.Encoder().encode


class ResponsesStreamEncoder:
    """Chat chunks in, Responses SSE frames out: ``start`` once, ``feed`` each chunk, then
    ``finish`` (or ``fail`` if the stream broke)."""

    def __init__(self, echo: Json) -> None:
        self._head = response_head(echo, new_id("resp_"), int(time.time()), "in_progress")
        self._seq = 0
        self._output: list[Json] = []  # items in output order, completed as they close
        self._message = -1  # output index of the open message item, -1 when none
        self._part_kind = ""  # "output_text" or "refusal" while a content part is open
        self._part_text: list[str] = []
        self._parts: list[Json] = []  # the open message's closed parts
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index
        self._open_call = -1
        self._args: dict[int, list[str]] = {}  # output index -> argument pieces
        self._finish_reason: Any = None
        self._usage: Any = None
        self._ended = False

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        out = [self._event("response.created", response=self._snapshot())]
        out.append(self._event("response.in_progress", response=self._snapshot()))
        return b"".join(out)

    def feed(self, chunk: Json) -> bytes:
        """The events for one ``chat.completion.chunk``."""
        out: list[bytes] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # a response has one answer
            delta = choice.get("delta") or {}
            for kind, key in (("output_text", "content"), ("refusal", "refusal")):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self._text(out, kind, text)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._call_delta(out, call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        return b"".join(out)

    def finish(self) -> bytes:
        """Close every open item and send ``response.completed`` (or ``.incomplete``)."""
        if self._ended:
            return b""
        self._ended = True
        out: list[bytes] = []
        self._close_message(out)
        self._close_call(out)
        status, incomplete = finish_status(self._finish_reason)
        response = self._snapshot(status)
        response["incomplete_details"] = incomplete
        response["usage"] = usage_to_responses(self._usage)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=response))
        return b"".join(out)

    def fail(self, err: RouteguardError) -> bytes:
        """``response.failed`` for a stream that broke after it started."""
        if self._ended:
            return b""
        self._ended = True
        response = self._snapshot("failed")
        code = "rate_limit_exceeded" if err.status_code == 429 else "server_error"
        response["error"] = {"code": code, "message": err.message}
        return self._event("response.failed", response=response)

    # ------------------------------------------------------------------ items

    def _text(self, out: list[bytes], kind: str, text: str) -> None:
        self._close_call(out)
        if self._message < 0:
            self._message = len(self._output)
            self._output.append(message_item(new_id("msg_"), [], "in_progress"))
            out.append(self._added(self._message))
        if self._part_kind != kind:
            self._close_part(out)
            self._part_kind = kind
            out.append(self._part_event("response.content_part.added", text_part(kind, "")))
        self._part_text.append(text)
        name = "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        extra: Json = {"logprobs": []} if kind == "output_text" else {}
        out.append(self._event(name, **self._at_part(), delta=text, **extra))

    def _call_delta(self, out: list[bytes], call: Json) -> None:
        n = call.get("index", 0)
        fn = call.get("function") or {}
        index = self._calls.get(n)
        if index is None:
            self._close_message(out)
            self._close_call(out)
            index = self._open_call = self._calls[n] = len(self._output)
            call_id = call.get("id") or new_id("call_")
            item = call_item(new_id("fc_"), call_id, fn.get("name") or "", "", "in_progress")
            self._output.append(item)
            self._args[index] = []
            out.append(self._added(index))
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            self._args[index].append(args)
            item_id = self._output[index]["id"]
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=index,
                    delta=args,
                )
            )

    def _close_call(self, out: list[bytes]) -> None:
        index = self._open_call
        if index < 0:
            return
        self._open_call = -1
        item = self._output[index]
        item["arguments"] = "".join(self._args[index])
        item["status"] = "completed"
        out.append(
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        )
        out.append(self._event("response.output_item.done", output_index=index, item=item))

    def _close_part(self, out: list[bytes]) -> None:
        if not self._part_kind:
            return
        kind, text = self._part_kind, "".join(self._part_text)
        if kind == "output_text":
            out.append(
                self._event("response.output_text.done", **self._at_part(), text=text, logprobs=[])
            )
        else:
            out.append(self._event("response.refusal.done", **self._at_part(), refusal=text))
        part = text_part(kind, text)
        out.append(self._part_event("response.content_part.done", part))
        self._parts.append(part)
        self._part_kind = ""
        self._part_text = []

    def _close_message(self, out: list[bytes]) -> None:
        if self._message < 0:
            return
        self._close_part(out)
        item = self._output[self._message]
        item["content"] = self._parts
        cut = finish_status(self._finish_reason)[0] == "incomplete"
        item["status"] = "incomplete" if cut else "completed"
        out.append(self._event("response.output_item.done", output_index=self._message, item=item))
        self._message = -1
        self._parts = []

    # ------------------------------------------------------------------ framing

    def _at_part(self) -> Json:
        item = self._output[self._message]
        return {"item_id": item["id"], "output_index": self._message,
                "content_index": len(self._parts)}  # fmt: skip

    def _part_event(self, name: str, part: Json) -> bytes:
        return self._event(name, **self._at_part(), part=part)

    def _added(self, index: int) -> bytes:
        return self._event("response.output_item.added", output_index=index,
                           item=dict(self._output[index]))  # fmt: skip

    def _snapshot(self, status: str = "in_progress") -> Json:
        return {**self._head, "status": status, "output": [dict(i) for i in self._output]}

    def _event(self, name: str, **fields: Any) -> bytes:
        event = {"type": name, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + name.encode() + b"\ndata: " + _encode(event) + b"\n\n"


def relay_failed(head: Json | None, err: RouteguardError, model: str, seq: int) -> bytes:
    """The ``response.failed`` event (number ``seq``) ending a passed-through stream that
    broke after it started (``head``: the response of its ``response.created``, if any)."""
    response = dict(head) if isinstance(head, dict) else response_head(
        {"model": model, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True},
        new_id("resp_"), int(time.time()), "failed",
    )  # fmt: skip
    response["status"] = "failed"
    code = "rate_limit_exceeded" if err.status_code == 429 else "server_error"
    response["error"] = {"code": code, "message": err.message}
    event = {"type": "response.failed", "sequence_number": seq, "response": response}
    return b"event: response.failed\ndata: " + _encode(event) + b"\n\n"
