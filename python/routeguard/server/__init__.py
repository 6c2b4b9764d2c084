"""The OpenAI-compatible proxy: ``create_app(gateway)`` returns an ASGI app."""

from routeguard.server.app import ProxyApp, create_app

__all__ = ["ProxyApp", "create_app"]
