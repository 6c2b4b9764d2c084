"""The text of a chat message's ``content``, one rule for every layer that reads prompts,
and the one quick estimate of a prompt's tokens (budgets bound theirs from bytes instead:
:mod:`routeguard.budget.bound`).

``content`` is a string or a list of parts (OpenAI ``{"type": "text", "text": ...}``; the
Responses API and some logs say ``input_text``). The semantic cache and the traffic
analysis key on text alone, so a message with an image, audio or file part has no text for
them (``text_only``); the router reads whatever text there is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TEXT_PARTS = ("text", "input_text")


def content_text(content: Any, *, text_only: bool = False) -> str | None:
    """The text parts of ``content`` joined by newlines; None if it has no text form, or,
    with ``text_only``, if any part is not text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence) or isinstance(content, bytes | bytearray):
        return None
    parts = []
    for p in content:
        if isinstance(p, Mapping) and p.get("type") in TEXT_PARTS:
            parts.append(str(p.get("text", "")))
        elif text_only:
            return None  # images, audio, files: not something we match on
    return "\n".join(parts)


def estimate_tokens(messages: Any) -> int:
    """About four characters a token over every message's text, plus framing: the quick
    estimate context-window checks and routing rules use."""
    chars = 0
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        for m in messages:
            if not isinstance(m, Mapping):
                continue
            content = m.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for p in content:
                    if isinstance(p, Mapping) and isinstance(p.get("text"), str):
                        chars += len(p["text"])
            chars += 16  # role and framing
    return chars // 4
