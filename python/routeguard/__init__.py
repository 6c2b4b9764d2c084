"""routeguard: a layered runtime for multi-model LLM production.

``Gateway`` is the one object users hold; the proxy (``routeguard.server``) is a thin ASGI
adapter over it.
"""

from __future__ import annotations

from routeguard._version import __version__
from routeguard.errors import (
    AllAttemptsFailed,
    AuthenticationError,
    ConfigError,
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    RouteguardError,
)
from routeguard.gateway import Gateway

__all__ = [
    "AllAttemptsFailed",
    "AuthenticationError",
    "ConfigError",
    "Gateway",
    "InvalidRequest",
    "ModelNotFound",
    "ProviderError",
    "RouteguardError",
    "__version__",
]
