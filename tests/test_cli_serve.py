"""`routeguard serve` as `make run` starts it: no config, no provider keys -> the built-in
aliases served against the in-process simulated upstream; also with --workers 2."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from routeguard.defaults import MODELS
from serving import serve


@pytest.fixture(scope="module")
def default_proxy() -> Iterator[str]:
    with serve() as served:
        yield served.url


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
    with (
        serve("--workers", "2") as served,
        openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0) as c,
    ):
        for _ in range(4):
            r = c.chat.completions.create(
                model="claude-3-5-haiku", messages=[{"role": "user", "content": "hi"}]
            )
            assert r.choices[0].message.content
