"""Judges of a cached answer against a fresh one: the evidence of the wrong-hit bound.

A comparison takes the question, the cached response and the fresh upstream response for the
same request (OpenAI chat-completion shape) and says whether serving the cached one would
have been wrong. Answers are first reduced to text (:func:`answer_text`); a *structured*
answer (tool calls, or JSON asked for with ``response_format``) is compared as canonical
JSON, exactly. Otherwise the configured judge decides (``cache.judge``):

- ``embedding`` (default): identical text after whitespace/case folding is right; else the
  cosine of the two answers' embeddings (the cache's embedder) must reach
  ``cache.judge_threshold``;
- ``exact``: the normalised texts must be equal (deterministic upstreams, templated answers);
- any other value is a configured model alias asked "SAME or DIFFERENT"
  (:class:`ModelJudge`); its calls go through the gateway and are counted like shadow calls.

A judge returns True (wrong), False (right) or None (no verdict: no evidence is recorded).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import numpy as np

from routeguard.embed.base import Embedder, embed_off_loop

Json = dict[str, Any]

JUDGE_PROMPT = (
    "Two answers were given to the same question. Would a user asking this question be "
    "equally well served by either answer (same facts, same conclusion; wording may "
    "differ)?\n\n[Question]\n{question}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\n"
    "Reply with one word: SAME or DIFFERENT."
)


class Judge(Protocol):
    """``await judge.wrong(question, cached, fresh)``: True when the cached answer is wrong."""

    async def wrong(self, question: str, cached: str, fresh: str) -> bool | None:
        """Whether ``cached`` fails where ``fresh`` answers (None: no verdict)."""
        ...


def answer_text(response: Mapping[str, Any]) -> tuple[str, bool]:
    """(text, structured) of a chat completion's first choice: the content, or its tool calls
    as canonical JSON (structured), or a JSON content parsed and re-encoded canonically."""
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") or {}
    calls = message.get("tool_calls")
    if calls:
        simple = [
            {"name": (c.get("function") or {}).get("name"),
             "arguments": _canonical((c.get("function") or {}).get("arguments"))}
            for c in calls
        ]  # fmt: skip
        return json.dumps(simple, sort_keys=True), True
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return (content if isinstance(content, str) else ""), False


def same_answer(a: Any, b: Any) -> bool:
    """Whether two cached responses carry the same answer: chat completions by their first
    choice's text (case and spacing aside), anything else by equality."""
    if isinstance(a, Mapping) and isinstance(b, Mapping) and "choices" in a and "choices" in b:
        return _fold(answer_text(a)[0]) == _fold(answer_text(b)[0])
    return bool(a == b)


def structured_request(request: Mapping[str, Any]) -> bool:
    """Whether the request asked for JSON output (its answers are compared exactly)."""
    fmt = request.get("response_format")
    return isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema")


def _canonical(value: Any) -> Any:
    """A JSON string parsed (so key order and spacing do not count), else the value."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def same_structured(a: str, b: str) -> bool:
    """Equality of two JSON texts as values (falls back to folded text)."""
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return _fold(a) == _fold(b)


class ExactJudge:
    """Right only when the two answers are the same text (case and spacing aside)."""

    async def wrong(self, question: str, cached: str, fresh: str) -> bool | None:
        """Whether the folded texts differ."""
        return _fold(cached) != _fold(fresh)


class EmbeddingJudge:
    """Right when the answers' embeddings are at least ``threshold`` apart in cosine."""

    def __init__(self, embedder: Embedder, threshold: float = 0.90) -> None:
        self.embedder = embedder
        self.threshold = threshold

    async def wrong(self, question: str, cached: str, fresh: str) -> bool | None:
        """Whether the answers' cosine similarity falls below the threshold."""
        if _fold(cached) == _fold(fresh):
            return False
        if not cached.strip() or not fresh.strip():
            return None
        vecs = await embed_off_loop(self.embedder, [cached, fresh])
        return float(np.dot(vecs[0], vecs[1])) < self.threshold


class ModelJudge:
    """Asks a model alias whether the two answers say the same (``call(alias, request)``
    returns its chat completion)."""

    def __init__(self, alias: str, call: Callable[[str, Json], Awaitable[Json]]) -> None:
        self.alias = alias
        self.call = call

    async def wrong(self, question: str, cached: str, fresh: str) -> bool | None:
        """The model's verdict; None when it answers neither SAME nor DIFFERENT."""
        if _fold(cached) == _fold(fresh):
            return False
        prompt = JUDGE_PROMPT.format(question=question, a=cached, b=fresh)
        request = {
            "model": self.alias,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": 4,
        }
        text, _ = answer_text(await self.call(self.alias, request))
        word = text.strip().upper()
        if word.startswith("DIFFERENT"):
            return True
        if word.startswith("SAME"):
            return False
        return None


async def judge_wrong(
    judge: Judge, question: str, request: Mapping[str, Any], cached: Json, fresh: Json
) -> bool | None:
    """The verdict on serving ``cached`` instead of ``fresh``: structured answers compared
    exactly, the rest by ``judge``."""
    a, a_struct = answer_text(cached)
    b, b_struct = answer_text(fresh)
    if a_struct or b_struct or structured_request(request):
        return not same_structured(a, b)
    return await judge.wrong(question, a, b)
