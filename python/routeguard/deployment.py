"""The runtime description of one upstream model (a :class:`Deployment`) and the
:class:`Secret` that holds its credential: the types every layer shares, built by
:mod:`routeguard.config` and read by providers, routing, fallback and budgets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from routeguard import scrub


class Secret:
    """A credential that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        scrub.remember(value)  # masked wherever upstream text or a log line repeats it

    def get(self) -> str:
        """The secret value, for building an auth header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class VertexTarget:
    """Where a Google Vertex AI deployment runs and whose credentials it uses (a service
    account file, its JSON text, or neither: Application Default Credentials)."""

    project: str | None  # None: the credentials' own project
    location: str
    credentials_file: str | None = None
    credentials_json: Secret | None = None


@dataclass(frozen=True, slots=True)
class AzureSettings:
    """How an Azure OpenAI deployment is addressed and authenticated (``type: azure``)."""

    api_version: str  # a dated version, or "v1" / "preview" for the /openai/v1/ API
    ad_token: Secret | None = None  # a Microsoft Entra ID bearer token
    token_provider: bool = False  # fetch Entra ID tokens through azure-identity


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """Where and as whom an AWS Bedrock deployment is called (``type: bedrock``); credentials
    left unset come from the standard AWS chain (env, profile, web identity, IMDS)."""

    region: str
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """One concrete upstream model behind an alias."""

    id: str
    alias: str
    provider: str
    model: str
    api_base: str
    api_key: Secret | None
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0
    context_window: int | None = None
    timeout: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Drop request fields the provider cannot honour (else a 400 names them).
    drop_params: bool = False
    # The wildcard model_name this deployment was built from (``*``, ``claude-*``), None for
    # a configured one: metrics label it by this, since callers choose the concrete names.
    pattern: str | None = None
    vertex: VertexTarget | None = None  # vertex_ai deployments only
    azure: AzureSettings | None = None  # type: azure only
    aws: AwsSettings | None = None  # type: bedrock only
    # "eu", "us" (or another region name as written); None: unknown. A customer with an
    # allowed_model_region is served only by deployments of that region.
    region: str | None = None
    # /v1/responses passes through to the upstream's own Responses API (OpenAI, Azure) when
    # the provider has one; False for OpenAI-compatible servers that serve chat only.
    responses_api: bool = True

    def serves_region(self, region: str) -> bool:
        """Whether this deployment is known to process data in ``region`` ("eu", "us")."""
        return self.region == region

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollar cost of one call from its token usage."""
        return (
            prompt_tokens * self.input_cost_per_mtok + completion_tokens * self.output_cost_per_mtok
        ) / 1_000_000
