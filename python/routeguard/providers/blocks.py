"""OpenAI chat <-> the turns-of-blocks shape that Claude's Messages API and Bedrock Converse
share (Converse's is modelled on Claude's), written once; no I/O.

Request: :func:`to_turns` walks the messages (system hoisted, same-role turns merged, tool
calls and results validated) and asks a :class:`Spelling` for each block, so the Anthropic
and Converse adapters differ only in how a block is spelled. :func:`sampling` and
:func:`thinking` read the fields both map the same way. Response: :func:`completion` and
:func:`usage` build the OpenAI answer, and :class:`ChunkMaker` the chunks of a stream, with
JSON output (``response_format``) served by one forced tool (:data:`STRUCTURED_TOOL`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from routeguard.errors import UpstreamBadRequest
from routeguard.providers.base import Json, thinking_budget
from routeguard.providers.parts import parse_arguments
from routeguard.providers.wire import is_count, token_count

# JSON output on these formats: one tool whose input schema is the answer's, forced with
# the tool choice; its input comes back as the message content.
STRUCTURED_TOOL = "structured_output"
STRUCTURED_TOOL_DESCRIPTION = "Give your answer as this tool's input: the JSON asked for."
# A 400 naming what the format cannot take (and the field, as ``param``).
Bad = Callable[..., UpstreamBadRequest]


def structured_schema(request: Json) -> Json | None:
    """The JSON schema a request's ``response_format`` asks for (``{"type": "object"}`` for
    json_object), or None when it asks for text."""
    fmt = request.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt["type"] == "json_schema" else None
    return schema if isinstance(schema, dict) else {"type": "object"}


# --------------------------------------------------------------------------- request


class Spelling(Protocol):
    """How one format spells each block of a turn."""

    bad: Bad

    def text(self, text: str, part: Json | None) -> list[Json]:
        """The blocks of one non-empty text (``part``: the content part it came from)."""
        ...

    def mark(self, part: Json) -> list[Json]:
        """Blocks that follow a content part's own (Converse's cachePoint)."""
        ...

    def image(self, url: Any, part: Json, at: str) -> Json:
        """The block of an ``image_url`` part."""
        ...

    def document(self, part: Json, at: str, index: int) -> Json:
        """The block of a ``file`` part."""
        ...

    def tool_use(self, call_id: Any, name: str, arguments: Json, index: int) -> Json:
        """The block of an assistant's tool call (``call_id`` None when the client sent none)."""
        ...

    def tool_result(self, call_id: str, content: Any, where: str) -> Json:
        """The block of a ``tool`` message's result."""
        ...


def to_turns(request: Json, spell: Spelling) -> tuple[list[Json], list[Json]]:
    """(system blocks, alternating turns) of an OpenAI chat request's ``messages``."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise spell.bad("'messages' must be a list")
    system: list[Json] = []
    turns: list[Json] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise spell.bad(f"{where} must be an object")
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(text_blocks(m.get("content"), where, spell))
        elif role == "user":
            _append(turns, "user", _user_blocks(m.get("content"), where, spell))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(m, where, spell))
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise spell.bad(f"{where}.tool_call_id is missing")
            _append(turns, "user", [spell.tool_result(call_id, m.get("content"), where)])
        else:
            raise spell.bad(
                f"{where}.role {role!r} is not supported (use system/user/assistant/tool)"
            )
    return system, turns


def _append(turns: list[Json], role: str, blocks: list[Json]) -> None:
    # Both formats want alternating turns: same-role neighbours are merged.
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _part_text(part: Any, at: str, bad: Bad) -> str | None:
    """The text of a text (or refusal) part, None when empty; another part is refused."""
    if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
        raise bad(f"{at} must be a text part here")
    text = part.get("text") if part["type"] == "text" else part.get("refusal")
    return text if isinstance(text, str) and text else None


def texts(content: Any, where: str, bad: Bad) -> list[str]:
    """The non-empty texts of a message's content (a string or text/refusal parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or a list of parts")
    found = (_part_text(part, f"{where}.content[{j}]", bad) for j, part in enumerate(content))
    return [t for t in found if t is not None]


def text_blocks(content: Any, where: str, spell: Spelling) -> list[Json]:
    """The text blocks of a message's content, each part's marks after it."""
    if not isinstance(content, list):
        return [b for t in texts(content, where, spell.bad) for b in spell.text(t, None)]
    blocks: list[Json] = []
    for j, part in enumerate(content):
        text = _part_text(part, f"{where}.content[{j}]", spell.bad)
        if text is not None:
            blocks.extend(spell.text(text, part))
        blocks.extend(spell.mark(part))
    return blocks


def _user_blocks(content: Any, where: str, spell: Spelling) -> list[Json]:
    if not isinstance(content, list):
        return text_blocks(content, where, spell)
    blocks: list[Json] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        at = f"{where}.content[{j}]"
        if kind == "text":
            blocks.extend(text_blocks([part], where, spell))
            continue
        if kind == "image_url":
            image = part.get("image_url")
            blocks.append(spell.image(image.get("url") if isinstance(image, dict) else image,
                                      part, at))  # fmt: skip
        elif kind == "file":
            blocks.append(spell.document(part, at, j))
        else:
            raise spell.bad(f"{at}: content part type {kind!r} is not supported")
        blocks.extend(spell.mark(part))
    return blocks


def _assistant_blocks(m: Json, where: str, spell: Spelling) -> list[Json]:
    blocks = text_blocks(m.get("content"), where, spell)
    calls = m.get("tool_calls") or []
    if not isinstance(calls, list):
        raise spell.bad(f"{where}.tool_calls must be a list")
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise spell.bad(f"{where}.tool_calls[{k}].function.name is missing")
        assert isinstance(call, dict)
        arguments = parse_arguments(fn.get("arguments"), f"{where}.tool_calls[{k}]")
        blocks.append(spell.tool_use(call.get("id") or None, fn["name"], arguments, k))
    return blocks


def function_tool(t: Any, i: int, bad: Bad, param: str | None = None) -> tuple[str, Json, str]:
    """(name, input schema, description) of an OpenAI function tool ("" when none)."""
    fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise bad(f"tools[{i}]: only function tools with a name are supported", param)
    schema = fn.get("parameters") or {"type": "object", "properties": {}}
    return fn["name"], schema, str(fn.get("description") or "")


def sampling(request: Json, bad: Bad, n_param: str | None = None) -> Json:
    """The sampling fields both formats take, read once: ``max_tokens`` (None when unset),
    ``temperature``, ``top_p``, ``stop`` (a list) and ``user``, those set only; n > 1 is
    refused."""
    out: Json = {}
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(max_tokens, int):
        out["max_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        if request.get(key) is not None:
            out[key] = request[key]
    stop = request.get("stop")
    if stop:
        out["stop"] = [stop] if isinstance(stop, str) else list(stop)
    n = request.get("n")
    if isinstance(n, int) and n > 1:
        raise bad("n > 1 is not supported; send n separate requests", n_param)
    user = request.get("user")
    if isinstance(user, str) and user:
        out["user"] = user
    return out


def thinking(request: Json, provider: str) -> int:
    """The extended-thinking budget ``reasoning_effort`` asks for on ``provider`` (0: none)."""
    effort = request.get("reasoning_effort")
    return 0 if effort is None else thinking_budget(effort, provider)


def check_thinking(
    request: Json, budget: int, max_tokens: int, sampled: Json, bad: Bad, where: str = ""
) -> None:
    """Refuse a thinking budget that does not fit under ``max_tokens`` or comes with the
    sampling fields extended thinking cannot be combined with."""
    if max_tokens <= budget:
        raise bad(
            f"reasoning_effort {request.get('reasoning_effort')!r} is {budget} thinking "
            f"tokens{where}, which must stay under max_tokens ({max_tokens}): raise max_tokens",
            "max_tokens",
        )
    if sampled.get("temperature") not in (None, 1, 1.0) or "top_p" in sampled:
        raise bad(
            "extended thinking (reasoning_effort) cannot be combined with temperature "
            "or top_p; leave them unset",
            "reasoning_effort",
        )


def refuse_structured_with(bad: Bad, provider: str) -> UpstreamBadRequest:
    """The 400 for JSON output asked together with tools or reasoning_effort."""
    return bad(
        f"JSON output (response_format) is served by a forced tool on {provider}, so it "
        "cannot be combined with tools or reasoning_effort",
        "response_format",
    )


# --------------------------------------------------------------------------- response


def usage(fresh: Any, read: Any, written: Any, completion: Any) -> Json | None:
    """OpenAI ``usage`` from counts whose fresh input excludes cache reads and writes; None
    unless the input and output counts are given and every count is one (an int of at least
    0; a cache count may be absent): made-up zeros or a negative cache count would lower the
    charge, which the gateway then estimates instead."""
    if not (is_count(fresh) and is_count(completion)):
        return None
    if not all(part is None or is_count(part) for part in (read, written)):
        return None
    r, w = token_count(read), token_count(written)
    prompt = fresh + r + w
    out = completion
    return {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": r, "cache_creation_tokens": w},
    }


def tool_call(call_id: Any, name: Any, arguments: str) -> Json:
    """One OpenAI ``tool_calls`` entry."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(
    completion_id: str, model: Any, texts: list[str], calls: list[Json], finish: str
) -> Json:
    """An OpenAI ``chat.completion`` with one choice (content None for tool calls alone)."""
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
    }


def finish_reason(stop: Any, table: dict[str, str], structured: bool) -> str:
    """OpenAI's finish_reason for a stop reason (the forced JSON tool's ``tool_use`` is an
    ordinary end)."""
    if structured and stop == "tool_use":
        stop = "end_turn"
    return table.get(str(stop), "stop")


class ChunkMaker:
    """The OpenAI chunks of one streamed answer whose blocks come indexed (Claude's content
    blocks, Converse's contentBlockIndex): text, tool calls by block, and for JSON output
    only the forced tool's input, as content."""

    def __init__(self, chunk_id: str, model: Any, structured: bool) -> None:
        self.id = chunk_id
        self.model = model
        self.structured = structured
        self.created = int(time.time())
        self._answer_block: int | None = None
        self._tool_index: dict[int, int] = {}  # block index -> OpenAI tool_calls index

    def chunk(self, delta: Json | None, finish: str | None = None) -> Json:
        """A ``chat.completion.chunk``; no choices when ``delta`` is None (the usage chunk)."""
        chunk: Json = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
        }
        if delta is not None:
            chunk["choices"] = [
                {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            ]
        return chunk

    def text(self, text: Any) -> list[Json]:
        """The chunk of a text delta (none for JSON output, whose answer is a tool input)."""
        if self.structured or not isinstance(text, str) or not text:
            return []
        return [self.chunk({"content": text})]

    def tool_start(self, index: Any, call_id: Any, name: Any) -> list[Json]:
        """The chunk opening a tool call at block ``index``."""
        if not isinstance(index, int):
            return []
        if self.structured:
            if name == STRUCTURED_TOOL:
                self._answer_block = index
            return []  # only the forced tool's input is the answer
        n = self._tool_index[index] = len(self._tool_index)
        call = {"index": n, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}  # fmt: skip
        return [self.chunk({"tool_calls": [call]})]

    def tool_input(self, index: Any, partial: Any) -> list[Json]:
        """The chunk of a piece of a tool call's input JSON at block ``index``."""
        if not partial:
            return []
        if self.structured:
            if self._answer_block is not None and index == self._answer_block:
                return [self.chunk({"content": partial})]
            return []
        n = self._tool_index.get(index) if isinstance(index, int) else None
        if n is None:
            return []
        return [self.chunk({"tool_calls": [{"index": n, "function": {"arguments": partial}}]})]

    def usage_chunk(self, counted: Json) -> Json:
        """The last chunk: no choices, the answer's usage."""
        chunk = self.chunk(None)
        chunk["usage"] = counted
        return chunk
