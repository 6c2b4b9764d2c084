"""`routeguard serve` as a subprocess for tests: started on a free port with no provider keys
in its environment (plus any given), waited for until /health answers, stopped with its
process group, its output kept."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ports import free_port


@dataclass
class Served:
    """A running `routeguard serve`: its URL and, once stopped, what it printed."""

    url: str
    output: str = field(default="")
    proc: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)  # the output so far, while it runs

    def printed(self, text: str) -> bool:
        """Whether the proxy has printed ``text`` so far."""
        return any(text in line for line in list(self.lines))


@contextlib.contextmanager
def serve(
    *flags: str, env: dict[str, str] | None = None, ready: str = "/health", timeout: float = 30.0
) -> Iterator[Served]:
    """Run `routeguard serve --port P *flags` until the block ends, once ``ready`` answers
    200 (``/health/readiness``: the models loaded too) within ``timeout`` seconds."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | (env or {})
    exe = Path(sys.executable).with_name("routeguard")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--log-level", "warning", *flags],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    served = Served(f"http://127.0.0.1:{port}", proc=proc)

    def collect() -> None:  # read as it comes: a full pipe would block the proxy
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.append(line.decode(errors="replace"))

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                collector.join(5)
                raise AssertionError("".join(served.lines))
            try:
                with urllib.request.urlopen(served.url + ready, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.1)
        yield served
    finally:
        with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        collector.join(15)
        if proc.stdout:
            proc.stdout.close()
        served.output = "".join(served.lines)


def two_wire_config(mock_url: str) -> dict[str, Any]:
    """Aliases ``oa`` (OpenAI wire format) and ``an`` (Anthropic) on the simulated upstream."""
    return {"model_list": [
        {"model_name": "oa", "type": "openai", "model": "sim-oa", "api_key": "k",
         "api_base": mock_url + "/v1"},
        {"model_name": "an", "type": "anthropic", "model": "sim-an", "api_key": "k",
         "api_base": mock_url},
    ]}  # fmt: skip


@contextlib.contextmanager
def two_wire_proxy(mock_url: str) -> Iterator[str]:
    """The proxy in a thread on :func:`two_wire_config`; yields its URL."""
    from routeguard.gateway import Gateway
    from routeguard.server import create_app
    from routeguard.server.thread import ServerThread

    with ServerThread(create_app(Gateway.from_config(two_wire_config(mock_url)))) as server:
        yield server.url
