"""Clients for tests of a running proxy's operations (drain, reload): a condition waited
for, a JSON call on a fresh connection, a chat stream read on its own thread."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import openai

WAIT_S = 60.0  # the longest any condition below is waited for


def wait_for(condition: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def call(
    url: str,
    *,
    body: Any = None,
    key: str | None = None,
    method: str | None = None,
) -> tuple[int, Any]:
    """(status, JSON body) of a GET, or a POST of ``body`` (or ``method``), on a fresh
    connection."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


class StreamReader(threading.Thread):
    """Reads one streamed chat completion from the proxy on its own thread."""

    def __init__(self, url: str, key: str = "x", model: str = "slow") -> None:
        super().__init__(daemon=True)
        self.url = url
        self.key = key
        self.model = model
        self.pieces: list[str] = []
        self.finish: str | None = None
        self.error: BaseException | None = None
        self.started_stream = threading.Event()

    def run(self) -> None:
        try:
            with openai.OpenAI(base_url=self.url + "/v1", api_key=self.key, max_retries=0) as c:
                stream = c.chat.completions.create(
                    model=self.model, stream=True, messages=[{"role": "user", "content": "tell me"}]
                )
                for chunk in stream:
                    if chunk.choices:
                        self.pieces.append(chunk.choices[0].delta.content or "")
                        self.finish = chunk.choices[0].finish_reason or self.finish
                        self.started_stream.set()
        except BaseException as exc:  # the test reads it
            self.error = exc
        finally:
            self.started_stream.set()
