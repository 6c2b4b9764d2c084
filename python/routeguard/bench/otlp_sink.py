"""An OTLP/HTTP trace sink for the ``proxy`` suite's tracing target: accepts every
``POST /v1/traces`` with an empty success answer (what a collector sends back) and counts
the export requests and bytes, served at ``GET /stats``, so a run can check that spans did
leave the proxy.

    python -m routeguard.bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn

Scope = dict[str, Any]


class Sink:
    """Count export requests; answer each with an empty ExportTraceServiceResponse."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        size = 0
        while True:
            msg = await receive()
            size += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        if scope["method"] == "POST" and scope["path"] == "/v1/traces":
            self.requests += 1
            self.bytes += size
            await _reply(send, 200, b"application/x-protobuf", b"")
        elif scope["method"] == "GET":  # /health, /stats
            body = json.dumps({"requests": self.requests, "bytes": self.bytes}).encode()
            await _reply(send, 200, b"application/json", body)
        else:
            await _reply(send, 404, b"application/json", b"{}")


async def _reply(send: Any, status: int, kind: bytes, body: bytes) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve the sink on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(Sink(), host="127.0.0.1", port=args.port, log_level="error", access_log=False)


if __name__ == "__main__":
    main()
