"""Where a deployment processes data, for customers held to an ``allowed_model_region``
(LiteLLM's region-based routing): :func:`data_region` folds what the config says (a written
``region_name``, a Bedrock or Vertex AI region, an Azure endpoint that names its region) into
a data region, ``eu`` or ``us`` (another geography's name, or None when unknown: such a
deployment never serves a customer held to a region).

Azure is read only where the endpoint is reliable: regional endpoints
(``https://<region>.api.cognitive.microsoft.com``) and the serverless and managed endpoints
of Azure AI Foundry / Azure ML (``https://<name>.<region>.models.ai.azure.com``,
``...<region>.inference.ml.azure.com``). A resource endpoint
(``https://<resource>.openai.azure.com``, ``.services.ai.azure.com``,
``.cognitiveservices.azure.com``) is named by its owner and says nothing of its region:
such a deployment needs ``region_name``, and :func:`regionless_azure` names it in the
config's warnings when the config routes by region."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from routeguard.deployment import AwsSettings, Deployment, VertexTarget

# Region name prefixes of the clouds (AWS eu-west-1, Google europe-west4, us-central1) and
# the data region each stands for, as LiteLLM's region checks read them.
_REGION_PREFIXES = (("eu-", "eu"), ("europe-", "eu"), ("us-", "us"))

# Azure regions by data region. "eu" is Microsoft's EU Data Boundary (EU and EFTA countries);
# the UK's regions are not in it (LiteLLM counts them as "eu": write region_name: eu to).
_AZURE_EU = frozenset({
    "westeurope", "northeurope", "swedencentral", "swedensouth", "francecentral",
    "francesouth", "germanywestcentral", "germanynorth", "switzerlandnorth",
    "switzerlandwest", "norwayeast", "norwaywest", "polandcentral", "italynorth",
    "spaincentral", "austriaeast", "belgiumcentral", "denmarkeast",
})  # fmt: skip
_AZURE_US = frozenset({
    "eastus", "eastus2", "eastus3", "centralus", "northcentralus", "southcentralus",
    "westcentralus", "westus", "westus2", "westus3", "usgovvirginia", "usgovarizona",
    "usgovtexas", "eastus2euap", "centraluseuap",
})  # fmt: skip
_AZURE_OTHER = frozenset({
    "uksouth", "ukwest", "canadacentral", "canadaeast", "brazilsouth", "brazilsoutheast",
    "japaneast", "japanwest", "koreacentral", "koreasouth", "australiaeast",
    "australiasoutheast", "australiacentral", "centralindia", "southindia", "westindia",
    "eastasia", "southeastasia", "southafricanorth", "uaenorth", "qatarcentral",
    "israelcentral", "mexicocentral", "newzealandnorth", "indonesiacentral", "malaysiawest",
    "chilecentral",
})  # fmt: skip
AZURE_REGIONS = _AZURE_EU | _AZURE_US | _AZURE_OTHER

# Azure hosts whose labels name the region: (suffix, which label from the left).
_AZURE_REGIONAL_HOSTS = ((".api.cognitive.microsoft.com", 0), (".models.ai.azure.com", 1),
                         (".inference.ml.azure.com", 1))  # fmt: skip


def azure_region(name: str) -> str | None:
    """The data region of an Azure region name (``swedencentral``, ``Sweden Central``):
    ``eu``, ``us``, the name itself elsewhere (``uksouth``), None when not an Azure region."""
    key = name.replace(" ", "").replace("-", "").lower()
    if key in _AZURE_EU:
        return "eu"
    if key in _AZURE_US:
        return "us"
    return key if key in _AZURE_OTHER else None


def azure_endpoint_region(api_base: str | None) -> str | None:
    """The Azure region an endpoint's host names (``swedencentral.api.cognitive.microsoft.com``
    -> ``swedencentral``); None for a resource endpoint, whose name is its owner's choice."""
    if not api_base:
        return None
    host = (urlsplit(api_base).hostname or "").lower()
    for suffix, label in _AZURE_REGIONAL_HOSTS:
        if host.endswith(suffix):
            labels = host[: -len(suffix)].split(".")
            if len(labels) == label + 1 and labels[label] in AZURE_REGIONS:
                return labels[label]
    return None


def data_region(
    written: str | None,
    vertex: VertexTarget | None,
    aws: Any,
    *,
    azure_base: str | None = None,
) -> str | None:
    """Where a deployment processes data: its ``region_name`` ("eu", "us", or a cloud region
    such as ``eu-west-1`` or Azure's ``swedencentral``, folded to its data region), else its
    Bedrock or Vertex AI region's, else the region its Azure endpoint (``azure_base``, for
    Azure deployments) names; None when unknown."""
    name = written
    if name is None and isinstance(aws, AwsSettings):
        name = aws.region
    if name is None and vertex is not None:
        name = vertex.location
    if name is None:
        name = azure_endpoint_region(azure_base)
    if name is None:
        return None
    name = name.strip().lower()
    for prefix, region in _REGION_PREFIXES:
        if name.startswith(prefix):
            return region
    return azure_region(name) or name


def regionless_azure(
    entries: list[Any],
    deployments: dict[str, list[Deployment]],
    patterns: dict[str, list[Deployment]],
) -> list[str]:
    """A warning per Azure deployment of unknown region, when the config writes a
    ``region_name`` anywhere (it routes by region): customers held to an allowed_model_region
    never use such a deployment. Customers are recorded at run time, so this is a hint."""
    if not any(isinstance(e, Mapping) and e.get("region_name") for e in entries):
        return []
    return [
        f"azure deployment '{d.id}' ({urlsplit(d.api_base).hostname}) has no known region: "
        "customers with an allowed_model_region never use it; set its region_name (its "
        "endpoint does not name a region)"
        for group in (*deployments.values(), *patterns.values())
        for d in group
        if d.azure is not None and d.region is None
    ]
