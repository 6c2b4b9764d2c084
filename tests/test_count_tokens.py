"""``POST /v1/messages/count_tokens`` with the official anthropic SDK: the gateway's local
estimate (no upstream call), growing with what the model would read, scoped by the key and
answered with Anthropic-shaped errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

TOOL: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, MockServer, Gateway]]:
    with MockServer() as mock:
        dep = {"type": "anthropic", "api_base": mock.url, "api_key": "k"}
        cfg = {"model_list": [{**dep, "model_name": "claude", "model": "sim-claude"},
                              {**dep, "model_name": "other", "model": "sim-other"}],
               "server": {"master_key": "sk-master"}}  # fmt: skip
        gw = Gateway.from_config(cfg)
        with ServerThread(create_app(gw)) as server:
            yield server.url, mock, gw


@pytest.fixture
def ant(served: tuple[str, MockServer, Gateway]) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=served[0], api_key="sk-master", max_retries=0) as c:
        yield c


def _count(ant: anthropic.Anthropic, text: str, **kw: Any) -> int:
    out = ant.messages.count_tokens(
        model="claude", messages=[{"role": "user", "content": text}], **kw
    )
    return out.input_tokens


def test_counts_locally_and_grows_with_the_input(
    ant: anthropic.Anthropic, served: tuple[str, MockServer, Gateway]
) -> None:
    mock = served[1]
    mock.reset()
    short = _count(ant, "Hello there")
    long = _count(ant, "Hello there " * 100)
    assert 0 < short < long
    assert long == pytest.approx(len("Hello there " * 100) / 4, rel=0.1)
    assert _count(ant, "Hello there", system="Be brief and kind.") > short
    assert _count(ant, "Hello there", tools=[TOOL]) > short
    assert mock.requests == []  # no upstream call


def test_scope_and_errors_are_anthropic_shaped(
    ant: anthropic.Anthropic, served: tuple[str, MockServer, Gateway]
) -> None:
    url, _, gw = served
    with pytest.raises(anthropic.NotFoundError) as missing:
        ant.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.0\.role"):
        ant.messages.count_tokens(model="claude", messages=[{"role": "tool", "content": "x"}])  # type: ignore[misc,list-item]
    key, _ = gw.keys.create(KeySpec(models=["other"]))
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as scoped:
        with pytest.raises(anthropic.NotFoundError):  # out of scope: as if missing
            scoped.messages.count_tokens(
                model="claude", messages=[{"role": "user", "content": "x"}]
            )
        ok = scoped.messages.count_tokens(
            model="other", messages=[{"role": "user", "content": "x"}]
        )
    assert ok.input_tokens > 0
