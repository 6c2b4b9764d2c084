"""Azure deployments and customers' ``allowed_model_region``: the region is read from a written
``region_name`` (``eu`` or an Azure region such as ``swedencentral``) or from an endpoint that
names it (regional Cognitive Services endpoints, serverless and managed Foundry endpoints);
a resource endpoint says nothing, so such a deployment never serves a customer held to a
region, and the config warns about it when it routes by region."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import openai
import pytest

from litellm_proxy import call, client
from routeguard import config
from routeguard.cli import main
from routeguard.config.regions import azure_endpoint_region, azure_region, data_region
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-azure-regions"
MSG: Any = [{"role": "user", "content": "where am I served?"}]
admin = partial(call, key=MASTER)
N = 20  # requests per check: a filter that did nothing would pass with p = 2^-N
SWEDEN = "https://swedencentral.api.cognitive.microsoft.com"
RESOURCE = "https://contoso-eu.openai.azure.com"  # its name is the owner's, not a region


def test_azure_endpoints_that_name_their_region() -> None:
    assert azure_endpoint_region(SWEDEN + "/") == "swedencentral"
    assert azure_endpoint_region("https://EASTUS2.api.cognitive.microsoft.com") == "eastus2"
    assert azure_endpoint_region("https://mistral-xyz.westeurope.models.ai.azure.com") == (
        "westeurope"
    )
    assert azure_endpoint_region("https://ep-1.francecentral.inference.ml.azure.com") == (
        "francecentral"
    )
    for unknown in (
        RESOURCE,
        "https://swedencentral.openai.azure.com",  # a resource named like a region
        "https://team.services.ai.azure.com",
        "https://team.cognitiveservices.azure.com",
        "https://swedencentral.api.cognitive.microsoft.com.example.com",  # not Microsoft's
        "https://example.com/swedencentral.api.cognitive.microsoft.com",
        "https://notaregion.api.cognitive.microsoft.com",
        "https://a.b.westeurope.models.ai.azure.com",  # not the serverless shape
        None,
        "",
    ):
        assert azure_endpoint_region(unknown) is None, unknown


def test_azure_region_names_fold_into_data_regions() -> None:
    assert [
        azure_region(n)
        for n in ("swedencentral", "Sweden Central", "germanywestcentral", "eastus", "West US 3")
    ] == ["eu", "eu", "eu", "us", "us"]
    assert azure_region("uksouth") == "uksouth"  # not the EU Data Boundary: not "eu"
    assert azure_region("mars") is None
    assert data_region("swedencentral", None, None) == "eu"
    assert data_region(None, None, None, azure_base=SWEDEN) == "eu"
    assert data_region("us", None, None, azure_base=SWEDEN) == "us"  # written wins
    assert data_region(None, None, None, azure_base=RESOURCE) is None


def _azure(name: str, deployment: str, base: str, **params: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": f"azure/{deployment}",
            "api_base": base, "api_key": "azure-test-key", **params}}  # fmt: skip


MODEL_LIST = [
    _azure("az", "gpt-sweden", SWEDEN),
    _azure("az", "gpt-contoso", RESOURCE),
    _azure("az", "gpt-us", RESOURCE.replace("-eu", "-us"), region_name="eastus"),
    _azure("az-resource", "gpt-resource", RESOURCE),
]


def test_the_loaded_regions_and_the_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config.load({"model_list": MODEL_LIST}, env={})
    regions = {d.model: d.region for group in cfg.deployments.values() for d in group}
    assert regions == {"gpt-sweden": "eu", "gpt-contoso": None, "gpt-us": "us",
                       "gpt-resource": None}  # fmt: skip
    warned = [w for w in cfg.warnings if "no known region" in w]
    assert len(warned) == 2 and all(RESOURCE[8:] in w and "region_name" in w for w in warned)
    written = tmp_path / "litellm.yaml"
    written.write_text(json.dumps({"model_list": MODEL_LIST}))  # JSON is YAML
    assert main(["check-config", str(written)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: azure deployment") == 2 and "'az#1'" in err, err
    assert "azure-test-key" not in err  # the key is never shown
    # A config that writes no region_name anywhere does not route by region: no warning.
    quiet = config.load({"model_list": [_azure("az", "d", RESOURCE)]}, env={})
    assert not any("no known region" in w for w in quiet.warnings)


@pytest.fixture(scope="module")
def srv(mock: MockServer) -> Iterator[ServerThread]:
    cfg = config.load(
        {"model_list": MODEL_LIST, "general_settings": {"master_key": MASTER}}, env={}
    )
    # The regions as loaded; the network sent to the simulated Azure.
    sent = {a: [dataclasses.replace(d, api_base=mock.url) for d in group]
            for a, group in cfg.deployments.items()}  # fmt: skip
    gw = Gateway(dataclasses.replace(cfg, deployments=sent))
    with ServerThread(create_app(gw)) as s:
        for user, region in (("ella", "eu"), ("ulla", "us"), ("free", None)):
            status, out = admin(s.url, "POST", "/customer/new",
                                {"user_id": user, "allowed_model_region": region})  # fmt: skip
            assert status == 200, out
        yield s
    gw.keys.close()


def _served(mock: MockServer, c: openai.OpenAI, model: str, user: str) -> set[str]:
    seen = set()
    for _ in range(N):
        assert c.chat.completions.create(model=model, messages=MSG, user=user).choices
        seen.add(mock.requests[-1].path.split("/")[3])  # /openai/deployments/<name>/...
    return seen


def test_customers_are_served_by_the_azure_deployment_of_their_region(
    srv: ServerThread, mock: MockServer
) -> None:
    status, made = admin(srv.url, "POST", "/key/generate", {})
    assert status == 200, made
    with client(srv.url, made["key"]) as c:
        assert _served(mock, c, "az", "ella") == {"gpt-sweden"}  # read from its endpoint
        assert _served(mock, c, "az", "ulla") == {"gpt-us"}  # its region_name
        before = len(mock.requests)
        with pytest.raises(openai.BadRequestError) as caught:  # a resource endpoint only
            c.chat.completions.create(model="az-resource", messages=MSG, user="ella")
        assert caught.value.param == "model" and "'eu'" in caught.value.message
        assert len(mock.requests) == before  # refused before any upstream call
        assert c.chat.completions.create(model="az-resource", messages=MSG, user="free").choices
