"""A virtual key scoped to some models cannot learn which other model names exist: a model
that exists outside its scope and one that does not exist get the same answer (404
``model_not_found``, the same message but for the name) on every endpoint that takes a model,
and no error lists or names a model outside the scope."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MSG: Any = [{"role": "user", "content": "hello"}]
HIDDEN = "secret-model-x"  # exists, outside the key's scope
ABSENT = "no-such-model-y"  # does not exist


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    with MockServer() as mock:
        dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k"}
        gw = Gateway.from_config({
            "model_list": [{**dep, "model_name": "open", "model": "sim-open"},
                           {**dep, "model_name": HIDDEN, "model": "sim-hidden"},
                           {**dep, "model_name": "emb-open", "model": "text-embedding-3-small"},
                           {**dep, "model_name": "emb-" + HIDDEN,
                            "model": "text-embedding-3-small"}],
            "router_settings": {"num_retries": 0},
            "server": {"master_key": "sk-master-enum"},
        })  # fmt: skip
        key, _ = gw.keys.create(KeySpec(models=["open", "emb-open"]))
        with ServerThread(create_app(gw)) as srv:
            yield srv.url, key
        gw.keys.close()


def _same(hidden: httpx.Response, absent: httpx.Response) -> None:
    """Both answers are the same 404 but for the model's name, which neither reveals."""
    assert hidden.status_code == absent.status_code == 404, (hidden.text, absent.text)
    a, b = hidden.json(), absent.json()
    anthropic_shape = a.get("type") == "error"
    field = "type" if anthropic_shape else "code"
    want = "not_found_error" if anthropic_shape else "model_not_found"
    assert a["error"][field] == b["error"][field] == want
    assert a["error"]["message"].replace(HIDDEN, "M") == b["error"]["message"].replace(ABSENT, "M")
    for body in (hidden.text, absent.text):
        assert "emb-" + HIDDEN not in body  # nothing else outside the scope is listed


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": MSG}),
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/responses", {"input": "hi"}),
        ("/v1/embeddings", {"input": "hi"}),
        ("/v1/messages", {"messages": MSG, "max_tokens": 5}),
        ("/v1/messages/count_tokens", {"messages": MSG}),
    ],
)
def test_a_hidden_model_answers_like_a_missing_one(
    served: tuple[str, str], path: str, body: dict[str, Any]
) -> None:
    url, key = served
    prefix = "emb-" if "embeddings" in path else ""
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as c:
        hidden = c.post(path, json={**body, "model": prefix + HIDDEN})
        absent = c.post(path, json={**body, "model": prefix + ABSENT})
    if prefix:  # the embedding aliases carry the prefix in the message too
        hidden = httpx.Response(
            hidden.status_code, text=hidden.text.replace("emb-" + HIDDEN, HIDDEN)
        )
        absent = httpx.Response(
            absent.status_code, text=absent.text.replace("emb-" + ABSENT, ABSENT)
        )
    _same(hidden, absent)


def test_get_model_by_name(served: tuple[str, str]) -> None:
    url, key = served
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as c:
        _same(c.get(f"/v1/models/{HIDDEN}"), c.get(f"/v1/models/{ABSENT}"))
        assert c.get("/v1/models/open").status_code == 200


def test_the_sdks_see_not_found_for_both(served: tuple[str, str]) -> None:
    url, key = served
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as c:
        for name in (HIDDEN, ABSENT):
            with pytest.raises(openai.NotFoundError) as caught:
                c.chat.completions.create(model=name, messages=MSG)
            assert caught.value.code == "model_not_found"
            assert "available: open" in caught.value.message  # only what the key may use
        assert [m.id for m in c.models.list()] == ["open", "emb-open"]
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as a:
        for name in (HIDDEN, ABSENT):
            with pytest.raises(anthropic.NotFoundError):
                a.messages.create(model=name, max_tokens=5, messages=MSG)
