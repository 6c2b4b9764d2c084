"""Reading request logs: one JSON object a line -> :class:`LogRecord` (an OpenAI-shaped request
plus what the log says about its route, usage and latency).

Accepted lines (liberally; anything else is skipped and counted, with the first reasons kept):

- a bare chat-completions request body, ``{"model", "messages", ...}``;
- an Anthropic Messages body: top-level ``system`` (a string or text blocks) and messages
  whose content is a list of blocks (``text``, ``tool_use``, ``tool_result``);
- a legacy completions body ``{"model", "prompt": "..."}`` (one user message);
- any of those wrapped, as gateways and log exporters write them::

      {"request": {...}, "response": {...}, "usage": {...}, "latency_ms": 812,
       "route": "support", "metadata": {"route": "support", "tenant": "acme",
       "sensitive": true}, "timestamp": "..."}

  ``body`` is accepted for ``request``. This wrapped form is routeguard's request-log format:
  the proxy keeps no request log of its own yet, and one written later should use it.

Each request is normalised to the OpenAI shape (an Anthropic ``system`` becomes the first
message, content blocks become text parts, tool use is noted), so the cache keys computed
from it (:mod:`routeguard.cache.keys`) match what the gateway would compute. A record's
*route* is ``route`` (wrapper), else ``metadata.route`` (wrapper, then request), else the
requested model, else ``"default"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from routeguard.errors import RouteguardError
from routeguard.messages import content_text

Json = dict[str, Any]

_decode = msgspec.json.Decoder().decode
MAX_PROBLEMS = 10  # bad lines whose reasons are kept (the rest are only counted)


@dataclass(slots=True)
class LogRecord:
    """One logged request, normalised."""

    line: int
    route: str
    model: str
    request: Json  # OpenAI-shaped chat request (model, messages, other parameters)
    prompt: str | None  # the last user message's text; None when not a text user turn
    system: str  # the system prompt's text ("" when none)
    uses_tools: bool
    tenant: str = "default"
    sensitive: bool = False  # the log marks it sensitive (metadata.sensitive)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    response_text: str | None = None
    metadata: Json = field(default_factory=dict)


@dataclass(slots=True)
class LogReadResult:
    """The records of a log and what was skipped."""

    records: list[LogRecord]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, "line N: why"


def read_log(path: str | Path, *, on_line: Callable[[int], None] | None = None) -> LogReadResult:
    """Parse a JSON-lines request log; ``on_line(bytes_read)`` reports progress."""
    p = Path(path)
    try:
        fh = p.open("rb")
    except OSError as exc:
        raise RouteguardError(f"cannot read request log {p}: {exc.strerror or exc}") from exc
    with fh:
        return parse_lines(_lines(fh, on_line))


def _lines(fh: Any, on_line: Callable[[int], None] | None) -> Iterator[bytes]:
    done = 0
    for raw in fh:
        done += len(raw)
        if on_line is not None:
            on_line(done)
        yield raw


def parse_lines(lines: Iterable[bytes | str]) -> LogReadResult:
    """Parse log lines (bytes or str); blank lines are ignored, bad ones counted."""
    out = LogReadResult([])
    for n, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            obj = _decode(text)
            out.records.append(parse_record(obj, n))
        except (msgspec.DecodeError, ValueError) as exc:
            out.skipped += 1
            if len(out.problems) < MAX_PROBLEMS:
                out.problems.append(f"line {n}: {exc}")
    return out


def parse_record(obj: Any, line: int = 0) -> LogRecord:
    """One decoded log line -> a record; ValueError says why it is not a usable request."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    wrapper: Json = {}
    body: Any = obj
    for key in ("request", "body"):
        if isinstance(obj.get(key), dict):
            wrapper, body = obj, obj[key]
            break
    request, system, tools = _normalise(body)
    meta: Json = {}
    for source in (body.get("metadata"), wrapper.get("metadata")):
        if isinstance(source, dict):
            meta.update(source)
    model = request.get("model")
    model = model if isinstance(model, str) and model else "unknown"
    route = wrapper.get("route") or meta.get("route") or model
    if not isinstance(route, str) or not route:
        route = model
    response = wrapper.get("response")
    usage = _usage(wrapper.get("usage"), response)
    latency = wrapper.get("latency_ms", meta.get("latency_ms"))
    tenant = meta.get("tenant") or meta.get("team") or meta.get("org") or "default"
    return LogRecord(
        line=line,
        route=route,
        model=model,
        request=request,
        prompt=_last_user_text(request["messages"]),
        system=system,
        uses_tools=tools,
        tenant=str(tenant),
        sensitive=bool(meta.get("sensitive")),
        prompt_tokens=usage[0],
        completion_tokens=usage[1],
        latency_ms=float(latency) if isinstance(latency, int | float) else None,
        response_text=_response_text(response),
        metadata=meta,
    )


def _normalise(body: Json) -> tuple[Json, str, bool]:
    """``(OpenAI-shaped request, system text, uses tools)`` of a request body."""
    messages = body.get("messages")
    if messages is None and isinstance(body.get("prompt"), str):
        messages = [{"role": "user", "content": body["prompt"]}]
    if not isinstance(messages, list) or not messages:
        raise ValueError("no 'messages' list (nor a 'prompt' string)")
    tools = bool(body.get("tools") or body.get("functions") or body.get("tool_choice"))
    out: list[Json] = []
    system_parts: list[str] = []
    sys_field = body.get("system")
    if sys_field is not None:
        text = _blocks_text(sys_field)
        if text:
            system_parts.append(text)
            out.append({"role": "system", "content": text})
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"messages[{i}] is not a message with a 'role'")
        role = m["role"]
        if role == "tool" or m.get("tool_calls") or m.get("function_call"):
            tools = True
        content = m.get("content")
        if isinstance(content, list):
            if any(isinstance(b, dict) and b.get("type") in _TOOL_BLOCKS for b in content):
                tools = True
            content = _parts(content)
        msg = {**m, "content": content}
        if role in ("system", "developer"):
            system_parts.append(_blocks_text(content))
        out.append(msg)
    request = {k: v for k, v in body.items() if k not in ("messages", "system", "prompt")}
    request["messages"] = out
    return request, "\n".join(p for p in system_parts if p), tools


_TOOL_BLOCKS = frozenset({"tool_use", "tool_result", "function_call", "function_call_output"})


def _parts(blocks: list[Any]) -> list[Any]:
    """Content blocks in the OpenAI shape: text blocks stay ``{"type": "text", "text"}``;
    others are kept as they are (so the cache treats the turn as non-text, as it would)."""
    return [
        {"type": "text", "text": b.get("text", "")}
        if isinstance(b, dict) and b.get("type") in ("text", "input_text")
        else b
        for b in blocks
    ]


def _blocks_text(content: Any) -> str:
    return content_text(content) or ""


def _last_user_text(messages: list[Json]) -> str | None:
    """The last message's text if it is a text-only user turn (what the cache keys on)."""
    last = messages[-1]
    if last.get("role") != "user":
        return None
    return content_text(last.get("content"), text_only=True)


def _usage(usage: Any, response: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict) and isinstance(response, dict):
        usage = response.get("usage")
    if not isinstance(usage, dict):
        return None, None
    p = usage.get("prompt_tokens", usage.get("input_tokens"))
    c = usage.get("completion_tokens", usage.get("output_tokens"))
    return (p if isinstance(p, int) else None, c if isinstance(c, int) else None)


def _response_text(response: Any) -> str | None:
    if not isinstance(response, Mapping):
        return None
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        msg = choices[0].get("message")
        if isinstance(msg, Mapping) and isinstance(msg.get("content"), str):
            return str(msg["content"])
    content = response.get("content")  # Anthropic Messages
    if isinstance(content, list):
        return _blocks_text(content) or None
    return None
