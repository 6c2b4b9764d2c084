"""`routeguard serve` as `make run` starts it: no config, no provider keys -> the built-in
aliases served against the in-process simulated upstream; also with --workers 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from ports import free_port
from routeguard.defaults import MODELS


def _serve(*extra: str) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    exe = Path(sys.executable).with_name("routeguard")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--log-level", "warning", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(scope="module")
def default_proxy() -> Iterator[str]:
    yield from _serve()


@pytest.mark.parametrize("alias", list(MODELS))
def test_default_config_serves_every_alias_on_the_simulator(default_proxy: str, alias: str) -> None:
    with openai.OpenAI(base_url=default_proxy + "/v1", api_key="x", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model=alias, messages=[{"role": "user", "content": "hello"}]
        )
        assert raw.headers["x-routeguard-model"] == alias
        assert raw.parse().choices[0].message.content


def test_default_config_speaks_anthropic_inbound(default_proxy: str) -> None:
    with anthropic.Anthropic(base_url=default_proxy, api_key="x", max_retries=0) as c:
        msg = c.messages.create(
            model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].type == "text" and msg.content[0].text


def test_two_workers_serve_the_default_config() -> None:
    for url in _serve("--workers", "2"):
        with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as c:
            for _ in range(4):
                r = c.chat.completions.create(
                    model="claude-3-5-haiku", messages=[{"role": "user", "content": "hi"}]
                )
                assert r.choices[0].message.content
