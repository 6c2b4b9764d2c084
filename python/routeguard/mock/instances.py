"""Minimal valid instances of JSON schemas: the simulated upstream's tool arguments and
structured output (``response_format`` json_schema, Gemini ``responseJsonSchema``).

:func:`schema_instance` walks a schema once, depth-first, resolving local ``$ref``s
(``#/$defs/...``, as pydantic writes nested models) against the root: an object gets its
required properties (all of them when none are listed), an array ``minItems`` elements, a
string a word stretched or cut to ``minLength``/``maxLength`` (or a sample of its
``format``), a number the smallest value its bounds allow near 1. ``const``, ``enum`` and
``default`` win; of ``anyOf``/``oneOf`` the first non-null branch is taken. Deterministic.
"""

from __future__ import annotations

import math
from typing import Any

_MAX_DEPTH = 12
# Samples for the string formats JSON Schema names (pydantic emits these for its types).
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def schema_instance(schema: Any) -> Any:
    """A small value that validates against ``schema`` (see the module docstring)."""
    return _instance(schema, schema, 0)


def _resolve(schema: dict[str, Any], root: Any) -> Any:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#"):
        return schema
    target: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            return {}
        target = target[part]
    if not isinstance(target, dict):
        return {}
    # Sibling keywords of a $ref (a description, a default) apply too.
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _instance(schema: Any, root: Any, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return "example"
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "default" in schema:
        return schema["default"]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in all_of:
            if isinstance(part, dict):
                merged.update(_resolve(part, root))
        return _instance(merged, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return _instance((non_null or options)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = kind.lower() if isinstance(kind, str) else None
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        count = schema.get("minItems")
        count = count if isinstance(count, int) and 1 <= count <= 8 else 1
        return [_instance(schema.get("items"), root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def _object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    required = schema.get("required")
    names = [n for n in required if n in props] if isinstance(required, list) else []
    return {n: _instance(props[n], root, depth + 1) for n in (names or list(props))}


def _bound(schema: dict[str, Any], key: str) -> float | None:
    v = schema.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low, high = _bound(schema, "minimum"), _bound(schema, "maximum")
    xlow, xhigh = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")
    step = 1.0 if integer else 0.5
    value = 1.0
    if low is not None:
        value = max(value, low)
    if xlow is not None and value <= xlow:
        value = math.floor(xlow) + 1 if integer else xlow + step
    if high is not None:
        value = min(value, high)
    if xhigh is not None and value >= xhigh:
        value = math.ceil(xhigh) - 1 if integer else xhigh - step
    if integer:
        up = math.ceil(value)
        return int(up if high is None or up <= high else math.floor(value))
    return value


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "example") if isinstance(fmt, str) else "example"
    low = schema.get("minLength")
    if isinstance(low, int) and len(text) < low:
        text = text + "x" * (low - len(text))
    high = schema.get("maxLength")
    if isinstance(high, int) and 0 <= high < len(text):
        text = text[:high]
    return text
