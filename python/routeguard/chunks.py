"""Converting between a whole OpenAI ``chat.completion`` and its ``chat.completion.chunk``
stream: a cached response must be replayable as a stream, and a streamed response must be
assembled whole before it can be cached.

``to_chunks`` emits what OpenAI emits: a role chunk, content (split in pieces), tool-call
deltas (id/name first, then arguments), a finish chunk, and optionally a usage chunk.
``Assembler`` folds chunks back, keyed by choice index and tool-call index.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]
_PIECE = 64  # characters per replayed content chunk


def to_chunks(resp: Json, *, include_usage: bool = False) -> list[Json]:
    """The chunk sequence that streams ``resp``."""
    base = {
        "id": resp.get("id", ""),
        "object": "chat.completion.chunk",
        "created": resp.get("created", 0),
        "model": resp.get("model", ""),
    }
    if resp.get("system_fingerprint") is not None:
        base["system_fingerprint"] = resp["system_fingerprint"]
    out: list[Json] = []

    def chunk(index: int, delta: Json, finish: str | None = None) -> Json:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    for choice in resp.get("choices", []):
        i = choice.get("index", 0)
        msg = choice.get("message") or {}
        out.append(chunk(i, {"role": msg.get("role", "assistant"), "content": ""}))
        text = msg.get("content") or ""
        for start in range(0, len(text), _PIECE):
            out.append(chunk(i, {"content": text[start : start + _PIECE]}))
        for n, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function") or {}
            head = {"index": n, "id": call.get("id"), "type": "function",
                    "function": {"name": fn.get("name"), "arguments": ""}}  # fmt: skip
            out.append(chunk(i, {"tool_calls": [head]}))
            if fn.get("arguments"):
                args = {"index": n, "function": {"arguments": fn["arguments"]}}
                out.append(chunk(i, {"tool_calls": [args]}))
        out.append(chunk(i, {}, choice.get("finish_reason")))
    if include_usage and resp.get("usage") is not None:
        out.append({**base, "choices": [], "usage": resp["usage"]})
    return out


class Assembler:
    """Folds a chunk stream back into one ``chat.completion``."""

    def __init__(self) -> None:
        self._meta: Json = {}
        self._choices: dict[int, Json] = {}
        self._usage: Json | None = None

    def feed(self, chunk: Json) -> None:
        """Take one chunk."""
        if not self._meta:
            self._meta = {k: chunk.get(k) for k in ("id", "created", "model")}
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for c in chunk.get("choices") or []:
            i = c.get("index", 0)
            st = self._choices.setdefault(
                i, {"role": "assistant", "content": [], "tools": {}, "finish": None}
            )
            delta = c.get("delta") or {}
            if delta.get("role"):
                st["role"] = delta["role"]
            if delta.get("content"):
                st["content"].append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                slot = st["tools"].setdefault(
                    tc.get("index", 0), {"id": None, "name": "", "arguments": []}
                )
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                if fn.get("arguments"):
                    slot["arguments"].append(fn["arguments"])
            if c.get("finish_reason"):
                st["finish"] = c["finish_reason"]

    @property
    def complete(self) -> bool:
        """Whether every choice seen so far ended with a finish reason from upstream."""
        return bool(self._choices) and all(st["finish"] for st in self._choices.values())

    def result(self) -> Json:
        """The assembled ``chat.completion`` (``finish_reason`` None where none came)."""
        choices = []
        for i in sorted(self._choices):
            st = self._choices[i]
            msg: Json = {"role": st["role"], "content": "".join(st["content"]) or None}
            if st["tools"]:
                msg["tool_calls"] = [
                    {"id": t["id"], "type": "function",
                     "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                    for _, t in sorted(st["tools"].items())
                ]  # fmt: skip
            # Never a made-up "stop": a stream cut short must not look complete.
            choices.append({"index": i, "message": msg, "logprobs": None,
                            "finish_reason": st["finish"]})  # fmt: skip
        out: Json = {**self._meta, "object": "chat.completion", "choices": choices}
        if self._usage is not None:
            out["usage"] = self._usage
        return out


def response_as_chat(response: Json) -> Json | None:
    """A Responses API ``response`` as the ``chat.completion`` it amounts to, when its output
    is only assistant text and function calls (None otherwise: reasoning items, built-in
    tool calls and refusals have no faithful chat form)."""
    if response.get("status") != "completed":
        return None
    text: list[str] = []
    calls: list[Json] = []
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if not isinstance(part, dict) or part.get("type") != "output_text":
                    return None
                text.append(str(part.get("text") or ""))
        elif kind == "function_call":
            calls.append({"id": item.get("call_id"), "type": "function",
                          "function": {"name": item.get("name"),
                                       "arguments": item.get("arguments") or ""}})  # fmt: skip
        else:
            return None
    message: Json = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    raw = response.get("usage")
    usage: Json = raw if isinstance(raw, dict) else {}
    prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    return {
        "id": str(response.get("id", "")),
        "object": "chat.completion",
        "created": response.get("created_at", 0),
        "model": response.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": usage.get("total_tokens", prompt + completion),
        },
    }
