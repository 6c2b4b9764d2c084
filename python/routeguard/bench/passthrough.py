"""The floor for a Python proxy: uvicorn + uvloop + httptools serving an ASGI app that
forwards each POST body to one upstream through a shared aiohttp session, with no logic
(an event stream is relayed as its bytes arrive).

    python -m routeguard.bench.passthrough --port 4100 --upstream http://127.0.0.1:4001

The ``proxy`` suite (:mod:`routeguard.bench.proxy`) starts it beside routeguard and LiteLLM:
what a proxy adds above this process is the cost of its own logic.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

Scope = dict[str, Any]


class Passthrough:
    """Forward ``POST <path>`` to ``upstream + path`` and relay status, type and body."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if scope["method"] == "GET":  # /health
            await _reply(send, 200, b"application/json", b'{"status":"ok"}')
            return
        assert self.session is not None
        headers = {"content-type": "application/json", "authorization": "Bearer sk-upstream"}
        async with self.session.post(self.upstream + scope["path"], data=body,
                                     headers=headers) as r:  # fmt: skip
            kind = r.headers.get("content-type", "application/json").encode()
            if kind.startswith(b"text/event-stream"):  # relayed as it comes
                await send({"type": "http.response.start", "status": r.status,
                            "headers": [(b"content-type", kind)]})  # fmt: skip
                async for data in r.content.iter_any():
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            payload = await r.read()
            await _reply(send, r.status, kind, payload)


async def _reply(send: Any, status: int, kind: bytes, body: bytes) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve the passthrough on the given port."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:4001")
    args = ap.parse_args()
    uvicorn.run(Passthrough(args.upstream), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False, lifespan="on")  # fmt: skip


if __name__ == "__main__":
    main()
