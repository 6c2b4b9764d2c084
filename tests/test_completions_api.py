"""Legacy ``POST /v1/completions`` through the proxy with the official openai SDK: the
prompt is answered by the chat path (any wire format), streamed and not, with usage; what
a chat model cannot do is a 400 naming the parameter."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types import Completion

from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

KINDS = {"oa": "openai", "an": "anthropic", "ge": "gemini"}


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    with MockServer() as mock:
        models = [{"model_name": a, "type": k, "model": f"sim-{a}", "api_key": "k",
                   "api_base": mock.url + ("/v1" if k == "openai" else "")}
                  for a, k in KINDS.items()]  # fmt: skip
        gw = Gateway.from_config({"model_list": models})
        with ServerThread(create_app(gw)) as server:
            yield server.url


@pytest.fixture
def oai(proxy: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy + "/v1", api_key="any", max_retries=0) as c:
        yield c


@pytest.mark.parametrize("fmt", list(KINDS))
def test_completion_matches_chat(oai: openai.OpenAI, fmt: str) -> None:
    out = oai.completions.create(model=fmt, prompt="Say something", max_tokens=200)
    chat = oai.chat.completions.create(
        model=fmt, messages=[{"role": "user", "content": "Say something"}]
    )
    assert out.object == "text_completion" and out.model == fmt
    assert out.choices[0].text == chat.choices[0].message.content
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and chat.usage is not None
    assert out.usage.prompt_tokens == chat.usage.prompt_tokens
    Completion.model_validate(out.model_dump(), strict=False)


def test_default_max_tokens_is_16(oai: openai.OpenAI) -> None:
    out = oai.completions.create(model="oa", prompt="Say something")
    assert out.usage is not None and out.usage.completion_tokens <= 16


@pytest.mark.parametrize("fmt", list(KINDS))
def test_stream_matches_non_stream(oai: openai.OpenAI, fmt: str) -> None:
    whole = oai.completions.create(model=fmt, prompt="Tell me", max_tokens=200)
    chunks = list(
        oai.completions.create(
            model=fmt,
            prompt="Tell me",
            max_tokens=200,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n_choices_and_length_finish(oai: openai.OpenAI) -> None:
    out = oai.completions.create(model="oa", prompt=["one prompt"], n=2, max_tokens=2)
    assert [c.index for c in out.choices] == [0, 1]
    assert {c.finish_reason for c in out.choices} == {"length"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
        ({"best_of": 3}, "best_of"),
        ({"suffix": "end"}, "suffix"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"functions": []}, "functions"),
    ],
)
def test_refused_parameters_are_400_naming_them(
    proxy: str, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "oa", "prompt": "hi", **extra}
    req = urllib.request.Request(
        proxy + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    with info.value as e:
        assert e.code == 400
        err = json.loads(e.read())["error"]
    assert err["param"] == param and err["message"].startswith(f"{param}:")
