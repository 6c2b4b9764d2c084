"""Azure OpenAI: the OpenAI wire format at Azure's addresses, with Azure's auth and errors.

A deployment's ``model`` is the Azure deployment name. With a dated ``api_version`` the
calls go to ``{api_base}/openai/deployments/{name}/chat/completions?api-version=...``
(and ``/embeddings``); with ``v1`` / ``latest`` (GA) or ``preview`` to the versionless
``{api_base}/openai/v1/chat/completions`` with the name as the body's ``model``. Auth is
the ``api-key`` header, or an Entra ID bearer token (``azure_ad_token``, or fetched and
refreshed through azure-identity, the optional ``azure`` extra). Bodies and streams are
OpenAI's (:mod:`.openai`); Azure's prompt-filter chunk (no choices, no usage) is skipped,
and a ``content_filter`` refusal raises :class:`~routeguard.errors.ContentPolicyViolation`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from routeguard import scrub
from routeguard.deployment import AzureSettings, Deployment
from routeguard.errors import ContentPolicyViolation, ProviderError, UpstreamAuthError
from routeguard.providers import openai, wire
from routeguard.providers.base import Json, StreamDecoder
from routeguard.providers.openai import ChunkDecoder, OpenAIProvider

V1_VERSIONS = frozenset({"v1", "latest", "preview"})
SCOPE = "https://cognitiveservices.azure.com/.default"


@dataclass(frozen=True, slots=True)
class AzureErrors(wire.ErrorFormat):
    """OpenAI's error format, plus Azure's content filter (400 with ``code:
    content_filter`` and an ``innererror`` naming the policy) as ContentPolicyViolation."""

    def from_body(self, status: int, body: Any, retry_after: float | None = None) -> ProviderError:
        """The ProviderError for an Azure status and its (decoded) error body."""
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and _is_content_filter(err):
            message = str(err.get("message") or "the prompt was filtered by Azure's content policy")
            return ContentPolicyViolation(
                scrub.for_caller(message),
                status=400,
                body=scrub.scrub_json(body),
                detail=scrub.scrub(message),
            )
        return super(AzureErrors, self).from_body(status, body, retry_after)


def _is_content_filter(err: Json) -> bool:
    inner = err.get("innererror")
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    return err.get("code") == "content_filter" or inner_code == "ResponsibleAIPolicyViolation"


ERRORS = AzureErrors(
    context_hints=openai.ERRORS.context_hints, context_codes=openai.ERRORS.context_codes
)


class AzureChunkDecoder(ChunkDecoder):
    """OpenAI chunks, without Azure's ``prompt_filter_results`` chunk (no choices, no usage,
    an empty model) that would otherwise look like a usage chunk to the gateway."""

    def feed(self, event: str, data: bytes) -> list[Json]:
        """The event's chunks, Azure's filter report dropped."""
        return [
            c for c in super().feed(event, data) if c.get("choices") or c.get("usage") is not None
        ]


def _settings(dep: Deployment) -> AzureSettings:
    if dep.azure is None:  # built by hand without settings: the GA default
        return AzureSettings(api_version="2024-10-21")
    return dep.azure


class _EntraTokens:
    """Entra ID tokens for Azure OpenAI from azure-identity's DefaultAzureCredential (env
    service principal, workload identity, managed identity, Azure CLI...), kept until five
    minutes before they expire."""

    def __init__(self) -> None:
        self._credential: Any = None
        self._token = ""
        self._expires = 0.0

    async def get(self) -> str:
        """A valid bearer token (fetched when the cached one is close to expiry)."""
        if self._token and time.time() < self._expires - 300:
            return self._token
        try:
            if self._credential is None:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            token = await self._credential.get_token(SCOPE)
        except ImportError:
            raise UpstreamAuthError(
                "azure: Entra ID tokens need azure-identity: pip install 'routeguard[azure]'"
            ) from None
        except Exception as exc:  # azure-identity raises its own ClientAuthenticationError
            raise UpstreamAuthError(
                f"azure: cannot get an Entra ID token ({type(exc).__name__})",
                detail=scrub.scrub(f"azure: cannot get an Entra ID token: {exc}"),
            ) from None
        self._token, self._expires = str(token.token), float(token.expires_on)
        scrub.remember(self._token)
        return self._token


_tokens = _EntraTokens()


class AzureProvider(OpenAIProvider):
    """Provider for Azure OpenAI: the OpenAI provider at Azure's paths, with Azure's auth
    (``api-key`` header or Entra ID bearer token) and errors (content filter)."""

    name = "azure"
    errors: wire.ErrorFormat = ERRORS

    def url(self, deployment: Deployment, endpoint: str) -> str:
        """The deployment's path for a dated ``api_version``; the versionless v1 path for
        ``v1`` / ``latest`` / ``preview`` (the deployment then goes in the body's model)."""
        settings = _settings(deployment)
        if settings.api_version in V1_VERSIONS:
            query = "?api-version=preview" if settings.api_version == "preview" else ""
            return f"{deployment.api_base}/openai/v1/{endpoint}{query}"
        name = quote(deployment.model, safe="")
        return (
            f"{deployment.api_base}/openai/deployments/{name}/{endpoint}"
            f"?api-version={quote(settings.api_version, safe='')}"
        )

    def responses_url(self, deployment: Deployment) -> str:
        """Azure's Responses API: ``/openai/v1/responses`` (the v1 API), or for a dated
        preview version ``/openai/responses?api-version=...``; the deployment goes in the
        body's model."""
        settings = _settings(deployment)
        if settings.api_version in V1_VERSIONS:
            return self.url(deployment, "responses")
        version = quote(settings.api_version, safe="")
        return f"{deployment.api_base}/openai/responses?api-version={version}"

    async def auth_headers(self, deployment: Deployment) -> dict[str, str]:
        """The deployment's headers with its ``api-key``, else an Entra ID bearer token
        (given, or fetched through azure-identity)."""
        h = dict(deployment.headers)
        settings = _settings(deployment)
        if deployment.api_key is not None:
            h["api-key"] = deployment.api_key.get()
        elif settings.ad_token is not None:
            h["authorization"] = f"Bearer {settings.ad_token.get()}"
        elif settings.token_provider:
            h["authorization"] = f"Bearer {await _tokens.get()}"
        return h

    def chunk_decoder(self) -> StreamDecoder:
        """OpenAI's decoder without Azure's prompt-filter chunk."""
        return AzureChunkDecoder()
