"""A request handed to an ASGI app in process, for tests that drive the proxy's app directly
(no server): the scope of a keyed POST and a ``receive`` giving its JSON body at once."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any


def post_scope(path: str, key: str) -> dict[str, Any]:
    """The scope of ``POST path`` with ``Authorization: Bearer key`` and a JSON body."""
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ],
        "query_string": b"",
        "client": ("127.0.0.1", 1),
    }


def body_of(payload: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` that gives ``payload`` as one JSON body."""
    raw = json.dumps(payload).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    return receive
