"""Decoding config sections into their Structs, with each failure turned into a
:class:`~routeguard.errors.ConfigProblem` that names its key path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from routeguard.errors import ConfigProblem

PROVIDER_TYPES = ("openai", "anthropic", "gemini", "azure", "bedrock")


def decode(
    data: Any, typ: Any, path: str, problems: list[ConfigProblem], *, drop_none: bool = False
) -> Any:
    """``data`` converted strictly to ``typ``, or None with the problem (and its key path)
    appended to ``problems``; ``drop_none`` reads a ``None`` value as an absent key."""
    try:
        return msgspec.convert(_drop_none(data) if drop_none else data, typ, strict=True)
    except msgspec.ValidationError as exc:
        problems.append(problem_from_msgspec(str(exc), path))
        return None


def _drop_none(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data]
    return data


def problem_from_msgspec(message: str, prefix: str) -> ConfigProblem:
    """A msgspec validation message as a :class:`ConfigProblem` under ``prefix``."""
    at = message.rfind(" - at `$")
    sub = ""
    if at >= 0 and message.endswith("`"):
        sub = message[at + len(" - at `$") : -1]
        message = message[:at]
    path = (prefix + sub).lstrip(".")
    message = message.replace("Object contains unknown field", "unknown key").replace(
        "Object missing required field", "missing required key"
    )
    if message.startswith("Invalid value") and path.endswith(".type"):
        message = f"{message}: unknown provider type; expected one of {', '.join(PROVIDER_TYPES)}"
    return ConfigProblem(path, message)
