"""A customer's ``allowed_model_region`` (LiteLLM's region-based routing): its requests go only
to deployments whose ``region_name`` is that region, through the openai SDK, plain and
streamed, via fallbacks too; a model with no deployment there is a 400 in OpenAI's shape
naming the model; customers without a region use every deployment. Cloud regions
(``eu-west-1``, ``europe-west4``) count as their data region."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import openai
import pytest

from litellm_proxy import call, client
from routeguard import config
from routeguard.config.regions import data_region
from routeguard.deployment import AwsSettings, VertexTarget
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-regions"
MSG: Any = [{"role": "user", "content": "where am I served?"}]
admin = partial(call, key=MASTER)
N = 20  # requests per check: a filter that did nothing would pass with p = 2^-N


def _entry(name: str, model: str, url: str, region: str | None) -> dict[str, Any]:
    params = {"model": f"openai/{model}", "api_base": url + "/v1", "api_key": "k"}
    if region is not None:
        params["region_name"] = region
    return {"model_name": name, "litellm_params": params}


@pytest.fixture(scope="module")
def srv(mock: MockServer) -> Iterator[ServerThread]:
    gw = Gateway.from_config({
        "model_list": [
            _entry("gpt", "gpt-eu", mock.url, "eu"),
            _entry("gpt", "gpt-us", mock.url, "us"),
            _entry("us-only", "gpt-us-only", mock.url, "us"),
            _entry("nowhere", "gpt-nowhere", mock.url, None),
        ],
        "router_settings": {"fallbacks": [{"us-only": ["gpt"]}]},
        "general_settings": {"master_key": MASTER},
    })  # fmt: skip
    with ServerThread(create_app(gw)) as s:
        for user, region in (("anna", "eu"), ("sam", "us"), ("free", None)):
            status, out = admin(s.url, "POST", "/customer/new",
                                {"user_id": user, "allowed_model_region": region})  # fmt: skip
            assert status == 200 and out["allowed_model_region"] == region, out
        yield s
    gw.keys.close()


@pytest.fixture(scope="module")
def key(srv: ServerThread) -> str:
    status, made = admin(srv.url, "POST", "/key/generate", {})
    assert status == 200, made
    return str(made["key"])


def _served(mock: MockServer, c: openai.OpenAI, model: str, user: str, n: int = N) -> set[str]:
    """The upstream models that served ``n`` requests for ``model`` naming ``user``."""
    seen = set()
    for _ in range(n):
        assert c.chat.completions.create(model=model, messages=MSG, user=user).choices
        seen.add(str(mock.requests[-1].model))
    return seen


def test_a_customer_is_served_only_in_its_region(
    srv: ServerThread, key: str, mock: MockServer
) -> None:
    with client(srv.url, key) as c:
        assert _served(mock, c, "gpt", "anna") == {"gpt-eu"}
        assert _served(mock, c, "gpt", "sam") == {"gpt-us"}
        assert _served(mock, c, "gpt", "free", 3 * N) == {"gpt-eu", "gpt-us"}
        for _ in range(N // 2):  # streamed too
            stream = c.chat.completions.create(model="gpt", messages=MSG, user="anna",
                                               stream=True)  # fmt: skip
            assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
            assert mock.requests[-1].model == "gpt-eu"


def test_an_alias_without_the_region_falls_back_to_one_with_it(
    srv: ServerThread, key: str, mock: MockServer
) -> None:
    with client(srv.url, key) as c:
        assert _served(mock, c, "us-only", "anna") == {"gpt-eu"}  # via its fallback
        assert _served(mock, c, "us-only", "sam") == {"gpt-us-only"}


def test_a_model_with_no_deployment_in_the_region_is_a_400(
    srv: ServerThread, key: str, mock: MockServer
) -> None:
    before = len(mock.requests)
    with client(srv.url, key) as c, pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(model="nowhere", messages=MSG, user="anna")
    err = caught.value
    assert err.param == "model" and err.type == "invalid_request_error"
    assert "allowed_model_region" in err.message and "'eu'" in err.message
    assert len(mock.requests) == before  # nothing reached an upstream
    with client(srv.url, key) as c:  # a customer without a region is served there
        assert c.chat.completions.create(model="nowhere", messages=MSG, user="free").choices


def test_cloud_regions_fold_into_their_data_region() -> None:
    assert data_region("EU", None, None) == "eu"
    assert data_region("eu-west-1", None, None) == "eu"
    assert data_region(None, None, AwsSettings(region="eu-central-1")) == "eu"
    assert data_region(None, VertexTarget(project=None, location="europe-west4"), None) == "eu"
    assert data_region(None, VertexTarget(project=None, location="us-central1"), None) == "us"
    assert data_region("us", VertexTarget(project=None, location="europe-west4"), None) == "us"
    assert data_region(None, None, None) is None
    cfg = config.load({"model_list": [_entry("m", "m", "http://127.0.0.1:9", "eu-west-1")]}, env={})
    assert [d.region for d in cfg.deployments["m"]] == ["eu"]
    assert not any("region_name" in w for w in cfg.warnings)  # read, not ignored


def test_embeddings_are_held_to_the_region_too(
    srv: ServerThread, key: str, mock: MockServer
) -> None:
    with client(srv.url, key) as c:
        for _ in range(N):
            assert c.embeddings.create(model="gpt", input="hello", user="anna").data
            assert mock.requests[-1].model == "gpt-eu"
        with pytest.raises(openai.BadRequestError) as caught:
            c.embeddings.create(model="nowhere", input="hello", user="anna")
        assert caught.value.param == "model" and "'eu'" in caught.value.message
