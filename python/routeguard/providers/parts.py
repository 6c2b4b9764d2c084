"""Pieces of OpenAI-shaped content that every translating provider reads the same way:
data URLs (images, documents, audio) and tool-call arguments (a JSON string in OpenAI's
shape, an object in Anthropic's and Gemini's)."""

from __future__ import annotations

import json
import re
from typing import Any

from routeguard.errors import UpstreamBadRequest
from routeguard.providers.base import Json

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(.*)$", re.DOTALL)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a ``data:<type>;base64,<data>`` URL, else None."""
    m = _DATA_URL.match(url)
    return (m.group(1), m.group(2)) if m else None


def parse_arguments(arguments: Any, where: str) -> Json:
    """A tool call's JSON-string arguments as the object Anthropic and Gemini want."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        raise UpstreamBadRequest(f"{where}.function.arguments is not valid JSON") from None
    if not isinstance(value, dict):
        raise UpstreamBadRequest(f"{where}.function.arguments must encode a JSON object")
    return value
