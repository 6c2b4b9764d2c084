"""Provider adapters, one module per wire format, all behind ``base.Provider``."""

from __future__ import annotations

from routeguard.providers.base import Provider
from routeguard.providers.openai import OpenAIProvider


def get_provider(kind: str) -> Provider:
    """The provider instance for a deployment type (``openai``, ``anthropic``, ``gemini``,
    ``azure``, ``bedrock``, ``vertex_ai``, ``vertex_ai_anthropic``)."""
    if kind == "openai":
        return OpenAIProvider()
    if kind == "anthropic":
        from routeguard.providers.anthropic import AnthropicProvider

        return AnthropicProvider()
    if kind == "gemini":
        from routeguard.providers.gemini import GeminiProvider

        return GeminiProvider()
    if kind == "vertex_ai":
        from routeguard.providers.vertex import VertexGeminiProvider

        return VertexGeminiProvider()
    if kind == "vertex_ai_anthropic":
        from routeguard.providers.vertex import VertexAnthropicProvider

        return VertexAnthropicProvider()
    if kind == "azure":
        from routeguard.providers.azure import AzureProvider

        return AzureProvider()
    if kind == "bedrock":
        from routeguard.providers.bedrock import BedrockProvider

        return BedrockProvider()
    raise ValueError(f"unknown provider type {kind!r}")


__all__ = ["Provider", "get_provider"]
